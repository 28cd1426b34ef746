"""Streaming inference: memory flat in the collection size, images/s against a plain transformers loop, workers.

Three measurements, each printed as one JSON line (CPU named):

1. rss: peak RSS of `run_caption` (a fresh process per size, --workers 0 so everything is in that process) over
   N photo-sized JPEGs (1600x1200) with a tiny model. The folder holds 20 distinct JPEGs hard-linked N/20 times
   each (same decode work per file, little disk); a flat engine gives the same peak for both sizes.
2. speed: images/s of the base preset (ViT-B/16 at 384 + BERT-base, random weights built and saved by
   transformers) through `run_caption` (batch 8, beam 3, max 20, min 5, files decoded by the engine) against a
   plain loop over transformers' BLIP on the same weights and files: PIL open, BlipProcessor, generate.
3. workers: images/s of the tiny model over the photo-sized JPEGs with 0, 1 and 2 decode workers.

    python benchmarks/bench_stream.py --rss 200 2000 --speed-images 16 --worker-images 200
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((x.split(":", 1)[1].strip() for x in out.splitlines() if x.startswith("Model name:")), "unknown")


def photo_folder(root: Path, n: int, distinct: int = 20) -> Path:
    """n 1600x1200 JPEGs (smooth gradients with shapes, ~photo-sized files), `distinct` of them, hard-linked."""
    src = root / "distinct"
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(distinct):
        path = src / f"{i:02d}.jpg"
        if path.exists():
            continue
        y, x = np.mgrid[0:1200, 0:1600]
        arr = np.stack([(x * (i + 1) / 16) % 256, (y / 5 + 40 * i) % 256, (x + y) / 11 % 256], -1).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        for _ in range(30):
            x0, y0 = rng.integers(0, 1500), rng.integers(0, 1100)
            draw.ellipse(
                [x0, y0, x0 + rng.integers(20, 300), y0 + rng.integers(20, 300)],
                fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
            )
        arr = np.asarray(im).astype(np.int16) + rng.integers(-12, 12, (1200, 1600, 3))  # sensor-like noise
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    folder = root / f"n{n}"
    if not folder.exists():
        folder.mkdir()
        for j in range(n):
            os.link(src / f"{j % distinct:02d}.jpg", folder / f"{j:06d}.jpg")
    return folder


def tiny_model(root: Path) -> Path:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_hf

    folder = root / "tiny"
    if not folder.exists():
        folder.mkdir(parents=True)
        make_hf("caption", folder)
    return folder


def caption_folder(
    model_dir: Path | object, folder: Path, out: Path | None, workers: int, batch: int = 8, beams: int = 3
) -> tuple[list[str], float]:
    """(captions in file order, seconds) of run_caption over a folder; model_dir may be an already loaded Blip."""
    import blip
    from blip.inference.caption import CaptionJob, run_caption

    model = blip.load(str(model_dir)) if isinstance(model_dir, Path) else model_dir
    records = []
    job = CaptionJob(
        sources=[str(folder)],
        out=str(out) if out else None,
        batch_size=batch,
        beams=beams,
        workers=workers,
        progress_every=1e9,
    )
    t0 = time.perf_counter()
    result = run_caption(job, model, emit=None if out else records.append)
    seconds = time.perf_counter() - t0
    if out:
        return [""] * result.written, seconds
    return [r["caption"] for r in sorted(records, key=lambda r: r["image"])], seconds


def rss_child(model_dir: Path, folder: Path, out: Path) -> None:
    import blip

    blip.load(str(model_dir))  # imports and a model: the peak before any image is read
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    captions, seconds = caption_folder(model_dir, folder, out, workers=0)
    records = len(captions)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "records": records,
                "seconds": round(seconds, 1),
                "peak_rss_mb_before_images": round(before_mb, 1),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


def base_models(root: Path) -> Path:
    """Base-preset captioner with random weights saved by transformers, with a bert-base-shaped vocabulary."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    folder = root / "base"
    if folder.exists():
        return folder
    words = ["a", "picture", "of"] + [f"w{i}" for i in range(30522 - 107)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += ["[DEC]", "[ENC]"]
    assert len(vocab) == 30524 and vocab.index("[CLS]") == 101
    text = {
        "vocab_size": 30524,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
        "encoder_hidden_size": 768,
        "bos_token_id": 30522,
        "sep_token_id": 102,
        "eos_token_id": 102,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "image_size": 384,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
    }
    torch.manual_seed(0)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval().save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def transformers_model(model_dir: Path):
    """transformers' captioner and the processor a user builds for it."""
    from transformers import BertTokenizerFast, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    model = BlipForConditionalGeneration.from_pretrained(model_dir).eval()
    # transformers 5 reads a vocab.txt given as `vocab=`; with `vocab_file=` it silently builds a 5-token vocabulary
    tokenizer = BertTokenizerFast(vocab=str(model_dir / "vocab.txt"))
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 384, "width": 384}), tokenizer=tokenizer
    )
    return model, processor


def transformers_loop(model, processor, folder: Path, batch: int = 8) -> tuple[list[str], float]:
    """The plain loop users write: open files, BlipProcessor, generate (beam 3, max 20, min 5)."""
    paths = sorted(folder.glob("*.jpg"))
    t0 = time.perf_counter()
    captions = []
    with torch.no_grad():
        for s in range(0, len(paths), batch):
            images = [Image.open(p).convert("RGB") for p in paths[s : s + batch]]
            inputs = processor(images=images, text=["a picture of"] * len(images), return_tensors="pt")
            out = model.generate(**inputs, num_beams=3, max_length=20, min_length=5)
            captions += processor.batch_decode(out, skip_special_tokens=True)
    return captions, time.perf_counter() - t0


def speed(root: Path, images: int, chunks: int) -> dict:
    """Both sides over the same files, alternating chunk by chunk so that a change in the machine's load hits both."""
    import blip

    base = base_models(root)
    folder = photo_folder(root, images)
    paths = sorted(folder.glob("*.jpg"))
    ours_model = blip.load(str(base))
    theirs_model, processor = transformers_model(base)
    warm = root / "speed_warmup"
    if not warm.exists():
        warm.mkdir()
        for p in paths[:8]:
            os.link(p, warm / p.name)
    caption_folder(ours_model, warm, None, workers=1)  # first calls pay one-off allocations: time neither
    transformers_loop(theirs_model, processor, warm)
    ours_s = theirs_s = 0.0
    same = 0
    per_chunk = []
    for c in range(chunks):
        sub = root / f"speed{images}_{c}"
        if not sub.exists():
            sub.mkdir()
            for p in paths[c::chunks]:
                os.link(p, sub / p.name)
        runs = {}
        for side in ("ours", "theirs") if c % 2 == 0 else ("theirs", "ours"):
            if side == "ours":
                runs[side] = caption_folder(ours_model, sub, None, workers=1)
            else:
                runs[side] = transformers_loop(theirs_model, processor, sub)
        ours_s += runs["ours"][1]
        theirs_s += runs["theirs"][1]
        # ours returns the caption after the prompt; transformers' decode keeps the prompt (and [DEC], which this
        # vocabulary lists as a plain word), so compare what follows it
        theirs = [b.replace("[DEC]", "").strip().removeprefix("a picture of").strip() for b in runs["theirs"][0]]
        same += sum(a == b for a, b in zip(runs["ours"][0], theirs))
        per_chunk.append(
            {
                "ours_s": round(runs["ours"][1], 1),
                "theirs_s": round(runs["theirs"][1], 1),
                "loadavg": os.getloadavg()[0],
            }
        )
        print(json.dumps({"speed_chunk": c, **per_chunk[-1]}), flush=True)
    return {
        "images": len(paths),
        "blip_images_per_s": round(len(paths) / ours_s, 3),
        "transformers_images_per_s": round(len(paths) / theirs_s, 3),
        "ratio": round(theirs_s / ours_s, 2),
        "identical_captions": same,
        "loadavg_end": os.getloadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rss", type=int, nargs="*", default=[200, 2000], help="collection sizes for the RSS test")
    p.add_argument("--speed-images", type=int, default=16, help="images per side for the base preset (0: skip)")
    p.add_argument("--speed-chunks", type=int, default=4, help="the speed run alternates the two sides over chunks")
    p.add_argument("--worker-images", type=int, default=200, help="images per worker count (0: skip)")
    p.add_argument("--root", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss-child", nargs=3, metavar=("MODEL", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(*map(Path, args.rss_child))
        return
    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory()
        args.root = Path(tmp.name)
    env = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "loadavg_start": os.getloadavg(),
    }
    print(json.dumps({"environment": env}), flush=True)
    tiny = tiny_model(args.root)
    for n in args.rss:
        folder = photo_folder(args.root, n)
        out = args.root / f"rss{n}.jsonl"
        r = subprocess.run(
            [sys.executable, __file__, "--threads", str(args.threads), "--rss-child", str(tiny), str(folder), str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(json.dumps({"rss": {"images": n, **json.loads(r.stdout.strip().splitlines()[-1])}}), flush=True)
    if args.worker_images:
        folder = photo_folder(args.root, args.worker_images)
        for workers in (0, 1, 2):
            captions, seconds = caption_folder(tiny, folder, None, workers)
            n = len(captions)
            print(
                json.dumps({"workers": {"workers": workers, "images": n, "images_per_s": round(n / seconds, 2)}}),
                flush=True,
            )
    if args.speed_images:
        print(json.dumps({"speed": speed(args.root, args.speed_images, args.speed_chunks)}), flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
