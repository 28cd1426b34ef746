"""Every GPU measurement the project owes, in one run (under 8 minutes on one GPU), written as JSON + Markdown.

1. captioning, batch 64, bf16: ours against transformers' BLIP on identical random weights, like for like (both
   models cast to bf16 and run under bf16 autocast), beam 3, 20 tokens with the end token blocked;
2. the pretraining step (ViT-B/16 at 224 + BERT-base, ITC + ITM + LM, AdamW, bf16 autocast): pairs/s, peak memory
   and MFU (FLOPs counted by torch.utils.flop_counter on one step) at each batch size up to the largest that fits;
3. two-stage retrieval at COCO size (5,000 images x 25,000 texts, k_test 256): the ITC stage in full, the ITM stage
   on a sample of queries (--queries), extrapolated to all 30,000, against the reference's one query at a time;
4. CapFilt at 384: one nucleus caption + two ITM scores per image: images/s and the hours it implies for 129M.

Static caches / CUDA graphs for decoding are not implemented (see BENCHMARKS.md, issue 15).

    python benchmarks/gpu_suite.py --out runs/gpu_suite                 # on a GPU
    python benchmarks/gpu_suite.py --smoke --device cpu --out /tmp/s    # tiny sizes on CPU (tests/test_gpu_suite.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

# Peak dense bf16 tensor FLOP/s (no sparsity) from the vendors' data sheets, for MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
WEB_IMAGES = 129_000_000
DEC, SEP, PAD, CLS = 30522, 102, 0, 101

FULL = {
    "caption_batch": 64,
    "pretrain_batches": [32, 64, 128, 256, 512],
    "images": 5000,
    "texts": 25000,
    "k_test": 256,
    "queries": 256,
    "capfilt_images": 256,
    "capfilt_batch": 64,
    "steps": 3,
}
SMOKE = {
    "caption_batch": 2,
    "pretrain_batches": [2, 4],
    "images": 6,
    "texts": 12,
    "k_test": 3,
    "queries": 6,
    "capfilt_images": 4,
    "capfilt_batch": 2,
    "steps": 1,
}
# Smoke shapes: one text/vision layer pair, 64 wide, 32-px images; the vocabulary stays BERT's so special ids hold.
SMOKE_TEXT = {"hidden": 64, "layers": 1, "heads": 2, "intermediate": 128, "max_positions": 40}
SMOKE_VISION = {"width": 64, "depth": 1, "heads": 2, "mlp_dim": 128, "patch_size": 16}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--smoke", action="store_true", help="tiny shapes and sizes (CPU test of the suite itself)")
    p.add_argument("--only", nargs="*", default=["caption", "pretrain", "retrieval", "capfilt"])
    p.add_argument("--queries", type=int, default=None, help="retrieval queries re-ranked per direction (sample)")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def config(kind: str, image_size: int, smoke: bool):
    """Our BlipConfig for a task: the base preset, or the smoke shapes."""
    from blip.model.config import preset

    over = {"vision.image_size": image_size}
    if smoke:
        over.update({f"text.{k}": v for k, v in SMOKE_TEXT.items()})
        over.update({f"vision.{k}": v for k, v in SMOKE_VISION.items()})
        over["embed_dim"] = 32
    return preset("base", task=kind, **over)


def hf_captioner(cfg):
    """transformers' BlipForConditionalGeneration with the shapes of our config (random weights)."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    t, v = cfg.text, cfg.vision
    text = {
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden,
        "num_hidden_layers": t.layers,
        "num_attention_heads": t.heads,
        "intermediate_size": t.intermediate,
        "max_position_embeddings": t.max_positions,
        "encoder_hidden_size": v.width,
        "bos_token_id": DEC,
        "sep_token_id": SEP,
        "eos_token_id": SEP,
        "pad_token_id": PAD,
    }
    vision = {
        "hidden_size": v.width,
        "num_hidden_layers": v.depth,
        "num_attention_heads": v.heads,
        "intermediate_size": v.mlp_dim,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "layer_norm_eps": 1e-6,
    }
    return BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()


class Clock:
    """Wall time with the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn):
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out


def precision(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------ 1. captioning
@torch.no_grad()
def caption_section(args, sizes, device, clock) -> dict:
    from blip.api import _cast_to_bf16
    from blip.checkpoint import load_checkpoint
    from blip.generation import GenerationConfig, generate

    cfg = config("caption", 384 if not args.smoke else 32, args.smoke)
    torch.manual_seed(0)
    hf = hf_captioner(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_checkpoint(tmp)[0].eval()
    hf, ours = hf.to(device), ours.to(device)
    if args.dtype == "bfloat16":  # like for like: both cast, both under autocast
        hf = hf.to(torch.bfloat16)
        _cast_to_bf16(ours)
    b = sizes["caption_batch"]
    pixels = torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size, generator=torch.Generator().manual_seed(1))
    pixels = pixels.to(device)
    words = [1037, 3861, 1997]  # "a picture of"
    gen = GenerationConfig(num_beams=3, max_length=20, min_length=20, suppress_eos=True, length_norm="transformers")

    def run_ours():
        with precision(device, args.dtype):
            e = ours.encode_image(pixels)
            prompt = torch.tensor([[DEC] + words] * b, device=device)
            return generate(
                ours.text_decoder, prompt, ours.text_decoder.bert.cross_kv(e), None, gen, SEP, PAD
            ).sequences

    def run_hf():
        with precision(device, args.dtype):
            return hf.generate(
                pixel_values=pixels.to(hf.dtype),
                input_ids=torch.tensor([[CLS] + words + [SEP]] * b, device=device),
                num_beams=3,
                max_length=20,
                min_length=20,
                do_sample=False,
            )

    run_ours(), run_hf()  # warm-up: kernel selection, allocator
    t_ours, ids_ours = clock(run_ours)
    t_hf, ids_hf = clock(run_hf)
    same = ids_ours.shape == ids_hf.shape and bool((ids_ours == ids_hf).all())
    rows = int((ids_ours == ids_hf).all(dim=1).sum()) if ids_ours.shape == ids_hf.shape else 0
    return {
        "batch": b,
        "dtype": args.dtype,
        "mode": "both cast + autocast" if args.dtype == "bfloat16" else "fp32",
        "ours_s": t_ours,
        "transformers_s": t_hf,
        "speedup": t_hf / t_ours,
        "ours_captions_per_s": b / t_ours,
        "identical_ids": same,
        "identical_rows": rows,
    }


# ------------------------------------------------------------------------------------------------ 2. pretraining
def pretrain_section(args, sizes, device, clock) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from blip.training.pretrain import BlipPretrain

    cfg = config("pretrain", 224 if not args.smoke else 32, args.smoke)
    torch.manual_seed(0)
    model = BlipPretrain(cfg, queue_size=57600 if not args.smoke else 8).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.05)
    s = cfg.vision.image_size

    def batch(n):
        ids = torch.randint(1000, 30000, (n, 30), device=device)
        ids[:, 0] = CLS
        return torch.randn(n, 3, s, s, device=device), ids, torch.ones_like(ids)

    def step(inputs):
        with precision(device, args.dtype):
            loss = model(*inputs).total
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    peak = next((v for k, v in PEAK_BF16.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
    rows = []
    for n in sizes["pretrain_batches"]:
        try:
            inputs = batch(n)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step(inputs)  # warm-up
            with FlopCounterMode(display=False) as counter:
                step(inputs)
            flops = counter.get_total_flops()
            seconds = min(clock(lambda x=inputs: step(x))[0] for _ in range(sizes["steps"]))
        except torch.OutOfMemoryError:
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            rows.append({"batch": n, "oom": True})
            break
        row = {
            "batch": n,
            "step_s": seconds,
            "pairs_per_s": n / seconds,
            "flops_per_step": flops,
            "achieved_tflops": flops / seconds / 1e12,
        }
        if device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if peak:
            row["mfu"] = flops / seconds / peak
        rows.append(row)
    fits = [r for r in rows if not r.get("oom")]
    return {"rows": rows, "largest_batch": fits[-1]["batch"] if fits else None, "peak_flops": peak}


# ------------------------------------------------------------------------------------------------ 3. retrieval
@torch.no_grad()
def retrieval_section(args, sizes, device, clock) -> dict:
    from blip.evaluation.retrieval import two_stage_scores
    from blip.model.blip import BlipModel

    cfg = config("retrieval", 384 if not args.smoke else 32, args.smoke)
    torch.manual_seed(0)
    model = BlipModel(cfg).to(device).eval()
    if args.dtype == "bfloat16":
        from blip.api import _cast_to_bf16

        _cast_to_bf16(model)
    n_img, n_txt, k = sizes["images"], sizes["texts"], sizes["k_test"]
    queries = args.queries or sizes["queries"]
    s = cfg.vision.image_size
    ids = torch.randint(1000, 30000, (n_txt, 35), device=device)
    ids[:, 0] = CLS
    mask = torch.ones_like(ids)

    def itc_stage():
        embeds, feats = [], []
        with precision(device, args.dtype):
            for start in range(0, n_img, 64):
                e = model.encode_image(torch.randn(min(64, n_img - start), 3, s, s, device=device))
                embeds.append(e)
                feats.append(model.image_embed(e).float())
            text = torch.cat(
                [model.text_embed(ids[i : i + 512], mask[i : i + 512]).float() for i in range(0, n_txt, 512)]
            )
        return torch.cat(embeds), torch.cat(feats) @ text.t()

    t_itc, (image_embeds, sims) = clock(itc_stage)

    def itm(images, texts):
        out = []
        with precision(device, args.dtype):
            for i in range(0, len(images), 256):
                out.append(
                    model.itm_logits(
                        image_embeds[images[i : i + 256]], ids[texts[i : i + 256]], mask[texts[i : i + 256]]
                    )[:, 1].float()
                )
        return torch.cat(out)

    # The ITM stage on the first `queries` image queries and the matching share of text queries.
    q_img, q_txt = min(queries, n_img), min(queries * n_txt // n_img, n_txt)
    sub = sims[:q_img]
    sub_t = sims[:, :q_txt]
    batched = max(1, 256 // k)  # queries per ITM call, 256 pairs a call
    t_ours, ours = clock(
        lambda: (
            two_stage_scores(sub, k, itm, rows_per_call=batched)[0],
            two_stage_scores(sub_t, k, itm, rows_per_call=batched)[1],
        )
    )
    # The reference's procedure: one query at a time, its k pairs in one call (on a quarter of the sample).
    q_ref = max(1, q_img // 4)
    t_ref, ref = clock(lambda: two_stage_scores(sims[:q_ref], k, itm, rows_per_call=1)[0])
    scale_ours = (n_img + n_txt) / (q_img + q_txt)
    ours_full = t_itc + t_ours * scale_ours
    ref_full = t_itc + t_ref * (n_img + n_txt) / q_ref
    agree = float((ours[0][:q_ref] - ref).abs().max())
    return {
        "images": n_img,
        "texts": n_txt,
        "k_test": k,
        "itc_stage_s": t_itc,
        "itm_queries_timed": q_img + q_txt,
        "itm_stage_sample_s": t_ours,
        "ours_full_s_extrapolated": ours_full,
        "reference_queries_timed": q_ref,
        "reference_full_s_extrapolated": ref_full,
        "speedup": ref_full / ours_full,
        "max_abs_diff_vs_reference": agree,
    }


# ------------------------------------------------------------------------------------------------ 4. CapFilt
@torch.no_grad()
def capfilt_section(args, sizes, device, clock) -> dict:
    import numpy as np
    from PIL import Image

    from blip.api import Blip
    from blip.model.blip import BlipModel
    from blip.tokenizer import Tokenizer

    size = 384 if not args.smoke else 32
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
    tok = Tokenizer.from_vocab(vocab)
    torch.manual_seed(0)
    captioner = Blip(BlipModel(config("caption", size, args.smoke)), tok, device, args.dtype)
    filt = Blip(BlipModel(config("retrieval", size, args.smoke)), tok, device, args.dtype)
    rng = np.random.default_rng(0)
    n, b = sizes["capfilt_images"], sizes["capfilt_batch"]
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    gen = torch.Generator().manual_seed(0)

    def run(imgs):
        caps = captioner.caption(imgs, strategy="nucleus", max_length=30, batch_size=b, generator=gen)
        web = ["tok5 tok6 tok7"] * len(imgs)
        return filt.match(imgs + imgs, [c.text for c in caps] + web, batch_size=b)

    run(images[:b])
    seconds, scores = clock(lambda: run(images))
    ips = n / seconds
    return {
        "images": n,
        "batch": b,
        "image_size": size,
        "seconds": seconds,
        "images_per_s": ips,
        "hours_for_129M": WEB_IMAGES / ips / 3600,
        "itm_scores": len(scores),
    }


SECTIONS = {
    "caption": caption_section,
    "pretrain": pretrain_section,
    "retrieval": retrieval_section,
    "capfilt": capfilt_section,
}


def markdown(results: dict) -> str:
    """The results as the tables BENCHMARKS.md takes."""
    env = results["environment"]
    lines = [
        f"# GPU suite: {env['device_name']}, {results['dtype']}, torch {env['torch']}"
        + (" (SMOKE: tiny shapes, not figures)" if results["smoke"] else ""),
        "",
    ]
    if "caption" in results:
        c = results["caption"]
        lines += [
            "## Captioning (beam 3, 20 tokens)",
            "",
            ("| batch | mode | ours s | transformers s | speed-up | identical rows |"),
            "|---|---|---|---|---|---|",
            (
                f"| {c['batch']} | {c['mode']} | {c['ours_s']:.3f} | {c['transformers_s']:.3f} | "
                f"{c['speedup']:.2f}x | {c['identical_rows']}/{c['batch']} |"
            ),
            "",
        ]
    if "pretrain" in results:
        lines += [
            "## Pretraining step",
            "",
            "| batch | step s | pairs/s | peak GiB | TFLOP/s | MFU |",
            "|---|---|---|---|---|---|",
        ]
        for r in results["pretrain"]["rows"]:
            if r.get("oom"):
                lines.append(f"| {r['batch']} | out of memory | | | | |")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
            lines.append(
                f"| {r['batch']} | {r['step_s']:.3f} | {r['pairs_per_s']:.1f} | "
                f"{r.get('peak_memory_gib', float('nan')):.1f} | {r['achieved_tflops']:.2f} | {mfu} |"
            )
        lines.append("")
    if "retrieval" in results:
        r = results["retrieval"]
        lines += [
            f"## Two-stage retrieval, {r['images']} images x {r['texts']} texts, k_test {r['k_test']}",
            "",
            (
                f"ITC stage {r['itc_stage_s']:.1f} s; ITM timed on {r['itm_queries_timed']} queries and "
                f"extrapolated: ours {r['ours_full_s_extrapolated']:.1f} s, the reference's one query at a time "
                f"{r['reference_full_s_extrapolated']:.1f} s ({r['speedup']:.2f}x); max |diff| of the scores "
                f"{r['max_abs_diff_vs_reference']:.2g}."
            ),
            "",
        ]
    if "capfilt" in results:
        c = results["capfilt"]
        lines += [
            f"## CapFilt at {c['image_size']} px",
            "",
            (
                f"{c['images_per_s']:.1f} images/s (batch {c['batch']}, "
                f"{c['images']} images): {c['hours_for_129M']:.0f} hours for 129M images on one device."
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    sizes = SMOKE if args.smoke else FULL
    clock = Clock(device)
    env = {
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "CPU",
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if device.type == "cpu":
        from blip.cli.env import cpu_facts

        env["device_name"] = f"CPU {cpu_facts()['cpu']}"
    results: dict = {"environment": env, "dtype": args.dtype, "smoke": args.smoke, "seconds": {}}
    start = time.perf_counter()
    for name in args.only:
        t0 = time.perf_counter()
        results[name] = SECTIONS[name](args, sizes, device, clock)
        results["seconds"][name] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    results["seconds"]["total"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu_suite.md").write_text(markdown(results))
    print(f"wrote {args.out}/gpu_suite.json and gpu_suite.md in {results['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
