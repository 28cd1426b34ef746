"""CapFilt throughput: images/s through `run_capfilt` with the paper's shapes, and what it implies for 129M images.

Per web image: one nucleus caption (top-p 0.9) from a ViT-B/16 captioner at 384 px and two ITM scores (web text and
synthetic caption) from a ViT-B/16 filter, i.e. the whole CapFilt pass with its JSON unit writing. The models have
the base shapes (BERT-base text, vocabulary 30,524) with random weights: throughput does not depend on the values,
except that random weights almost never emit [SEP], so every caption runs to max_length (an upper bound on the
decoding time; real captions stop earlier).

    python benchmarks/bench_capfilt.py --images 16 --batch 8                              # CPU, float32
    python benchmarks/bench_capfilt.py --device cuda --dtype bfloat16 --images 2048 --batch 128
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blip.api import Blip
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.tasks.capfilt import CapFiltConfig, run_capfilt
from blip.tokenizer import Tokenizer

WEB_IMAGES_IN_PAPER = 129_000_000  # the largest pretraining set of the BLIP paper (129M images)


def bert_shaped_tokenizer() -> Tokenizer:
    """A 30,522-token WordPiece vocabulary with BERT's special ids, [DEC] and [ENC] appended (30,524 in all)."""
    words = ["a", "picture", "of", "photo", "dog", "cat", "on", "the", "grass"]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
    return Tokenizer.from_vocab(vocab)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=384)
    ap.add_argument("--max-length", type=int, default=30, help="CapFilt's default caption length cap")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = bert_shaped_tokenizer()
    captioner = Blip(
        BlipModel(preset("base", task="caption", **{"vision.image_size": args.image_size})),
        tok,
        args.device,
        args.dtype,
    )
    filt = Blip(
        BlipModel(preset("base", task="retrieval", **{"vision.image_size": args.image_size})),
        tok,
        args.device,
        args.dtype,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        pairs = []
        for i in range(args.images):  # photo-sized JPEGs, resized by the eval transform as real web images are
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(root / f"{i}.jpg", quality=90)
            pairs.append({"image": f"{i}.jpg", "caption": "a picture of a dog on the grass"})
        (root / "web.json").write_text(json.dumps(pairs))

        def run(out: str, n: int) -> dict:
            (root / "part.json").write_text(json.dumps(pairs[:n]))
            cc = CapFiltConfig(
                out=str(root / out),
                web=[str(root / "part.json")],
                image_root=str(root),
                batch_size=args.batch,
                unit_size=args.batch * 4,
                max_length=args.max_length,
                progress=False,
            )
            start = time.perf_counter()
            run_capfilt(cc, captioner, filt)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return {"seconds": time.perf_counter() - start, "images": n}

        run("warmup", min(args.batch, args.images))
        timed = run("timed", args.images)
    ips = timed["images"] / timed["seconds"]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        json.dumps(
            {
                "device": device,
                "dtype": args.dtype,
                "threads": args.threads,
                "batch": args.batch,
                "image_size": args.image_size,
                "max_length": args.max_length,
                "images": timed["images"],
                "seconds": round(timed["seconds"], 2),
                "images_per_s": round(ips, 3),
                "hours_for_129M_images_on_one_device": round(WEB_IMAGES_IN_PAPER / ips / 3600, 1),
                "text_vocab": captioner.cfg.text.vocab_size,
            }
        )
    )


if __name__ == "__main__":
    main()
