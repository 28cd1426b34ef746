"""Captioning throughput: our BLIP against transformers' BlipForConditionalGeneration, same weights, same settings.

Both models get the base shapes (ViT-B/16 at 384, BERT-base text, vocab 30524) with one set of random weights:
transformers builds and saves them, ours loads the saved folder with `blip.checkpoint.load_checkpoint`. Both decode
beam 3 to max_length 20 (prompt "[DEC] a picture of", as the reference captioner) with the end token suppressed, so
every sequence is full length; the script checks that the ids are identical (asserted in float32).

Timed per side: the vision encoder alone, and a whole caption batch (vision + decoding); decoder = total - vision.
Repeats are interleaved (ours, theirs, ours, theirs...) so background load hits both sides alike; medians reported.

    .venv/bin/python benchmarks/bench_caption.py                       # CPU, fp32, batch 8, 2 threads
    .venv/bin/python benchmarks/bench_caption.py --profile             # + torch.profiler of our side, one batch
    .venv/bin/python benchmarks/bench_caption.py --device cuda --dtype bfloat16 --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

# Special ids of the released BLIP vocabulary (bert-base-uncased + [DEC] + [ENC]).
PAD, CLS, SEP, DEC, ENC = 0, 101, 102, 30522, 30523
PROMPT_WORDS = [1037, 3861, 1997]  # "a picture of" in bert-base-uncased ids (the reference prompt)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--max-length", type=int, default=20, help="total length, prompt included (as both libraries)")
    p.add_argument(
        "--no-prompt",
        action="store_true",
        help="start from [DEC] alone (19 new tokens) instead of '[DEC] a picture of' (16 new tokens)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed full-size runs per measurement (default 1 on GPU, 0 on CPU); a small untimed pass "
        "(batch 1, 2 new tokens) always runs first so page faults and kernel set-up are not timed",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-transformers", action="store_true", help="time our side only (no ratio, no id check)")
    p.add_argument("--profile", action="store_true", help="torch.profiler (CPU) of our side on one batch")
    p.add_argument("--profile-only", action="store_true", help="build, check nothing, profile, exit")
    p.add_argument("--profile-rows", type=int, default=25)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(args) -> dict:
    import transformers

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
    }
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


# --------------------------------------------------------------------------------------------------- models
def hf_base_config():
    """transformers BlipConfig with the base preset's shapes and the released checkpoints' special ids."""
    from transformers import BlipConfig

    text = dict(
        vocab_size=30524,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        encoder_hidden_size=768,
        bos_token_id=DEC,
        sep_token_id=SEP,
        eos_token_id=SEP,
        pad_token_id=PAD,
    )
    vision = dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=16,
        layer_norm_eps=1e-6,
    )
    return BlipConfig(text_config=text, vision_config=vision)


def build_models(seed: int, folder: Path):
    """transformers' captioner with random weights, saved to `folder`; ours loaded from that folder."""
    from transformers import BlipForConditionalGeneration

    from blip.checkpoint import load_checkpoint

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    hf = BlipForConditionalGeneration(hf_base_config()).eval()
    hf.save_pretrained(folder)
    ours, _, report = load_checkpoint(folder)
    ours.eval()
    assert report.format == "transformers", report
    assert ours.has("text_decoder") and ours.cfg.text.vocab_size == 30524
    print(
        f"built and loaded the weights in {time.perf_counter() - t0:.1f} s "
        f"({sum(p.numel() for p in hf.parameters()) / 1e6:.0f} M parameters in transformers' model)",
        flush=True,
    )
    return hf, ours


class Runner:
    """The four timed calls, on one device and dtype, with the same pixels and prompt for both sides."""

    def __init__(self, hf, ours, args):
        from blip.generation import GenerationConfig

        self.args = args
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.hf = hf.to(self.device)
        self.ours = ours.to(self.device)
        if self.dtype != torch.float32:
            self.hf = self.hf.to(self.dtype)  # transformers: the model cast; ours: autocast (as blip.api does)
        g = torch.Generator().manual_seed(args.seed + 1)
        self.pixels = torch.randn(args.batch, 3, 384, 384, generator=g).to(self.device)
        words = [] if args.no_prompt else PROMPT_WORDS
        self.our_prompt = torch.tensor([[DEC] + words] * args.batch, device=self.device)
        # transformers replaces position 0 by bos ([DEC]) and drops the last token (the tokenizer's [SEP]).
        self.hf_prompt = torch.tensor([[CLS] + words + [SEP]] * args.batch, device=self.device)
        self.gen = GenerationConfig(
            strategy="beam" if args.beams > 1 else "greedy",
            num_beams=args.beams,
            max_length=args.max_length,
            min_length=args.max_length,
            suppress_eos=True,
            length_norm="transformers",
        )

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def ours_vision(self) -> torch.Tensor:
        with self.autocast():
            return self.ours.encode_image(self.pixels)

    @torch.no_grad()
    def ours_caption(self) -> torch.Tensor:
        from blip.generation import generate

        with self.autocast():
            embeds = self.ours.encode_image(self.pixels)
            kv = self.ours.text_decoder.bert.cross_kv(embeds)
            return generate(self.ours.text_decoder, self.our_prompt, kv, None, self.gen, SEP, PAD).sequences

    @torch.no_grad()
    def hf_vision(self) -> torch.Tensor:
        return self.hf.vision_model(pixel_values=self.pixels.to(self.hf.dtype))[0]

    @torch.no_grad()
    def hf_caption(self) -> torch.Tensor:
        # min_length = max_length blocks [SEP] at every step (MinLengthLogitsProcessor), as suppress_eos does.
        return self.hf.generate(
            pixel_values=self.pixels.to(self.hf.dtype),
            input_ids=self.hf_prompt.clone(),
            num_beams=self.args.beams,
            max_length=self.args.max_length,
            min_length=self.args.max_length,
            do_sample=False,
            early_stopping=False,
            length_penalty=1.0,
            repetition_penalty=1.0,
            num_return_sequences=1,
        )

    @torch.no_grad()
    def warm_small(self) -> None:
        """Batch 1, two new tokens, both sides: touches every weight (ours may be memory-mapped from safetensors)."""
        from blip.generation import GenerationConfig, generate

        p = self.our_prompt.shape[1]
        gen = GenerationConfig(
            num_beams=self.args.beams, max_length=p + 2, min_length=p + 2, suppress_eos=True, length_norm="transformers"
        )
        with self.autocast():
            kv = self.ours.text_decoder.bert.cross_kv(self.ours.encode_image(self.pixels[:1]))
            generate(self.ours.text_decoder, self.our_prompt[:1], kv, None, gen, SEP, PAD)
        if not self.args.skip_transformers:
            self.hf.generate(
                pixel_values=self.pixels[:1].to(self.hf.dtype),
                input_ids=self.hf_prompt[:1].clone(),
                num_beams=self.args.beams,
                max_length=p + 2,
                min_length=p + 2,
                do_sample=False,
            )
        self.sync()

    def timed(self, fn):
        """Wall seconds, process CPU seconds (all threads) and the output of fn()."""
        self.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, time.process_time() - c0, out


# --------------------------------------------------------------------------------------------------- checks
def check_ids(ours: torch.Tensor, theirs: torch.Tensor, args) -> dict:
    ours, theirs = ours.cpu(), theirs.cpu()
    info = {"ours_shape": list(ours.shape), "transformers_shape": list(theirs.shape)}
    full = ours.shape == (args.batch, args.max_length) and theirs.shape == (args.batch, args.max_length)
    no_end = not bool((ours[:, 1:] == SEP).any()) and not bool((theirs[:, 1:] == SEP).any())
    same = ours.shape == theirs.shape and bool((ours == theirs).all())
    info.update(full_length=full, no_end_token=no_end, identical=same)
    if ours.shape == theirs.shape:
        info["rows_identical"] = int((ours == theirs).all(dim=1).sum())
        info["tokens_identical_frac"] = float((ours == theirs).float().mean())
    return info


# --------------------------------------------------------------------------------------------------- profile
TOP = (
    "blip::vision",
    "blip::cross_kv_precompute",
    "blip::dec_embeddings",
    "blip::dec_layers",
    "blip::lm_head",
    "blip::kv_cache_reorder",
    "blip::beam_logits_process",
)
IN_LAYER = (
    "blip::self_attn_kv_proj",
    "blip::kv_cache_cat",
    "blip::self_attn_attend(q,sdpa,out)",
    "blip::cross_attn_attend(q,sdpa,out)",
    "blip::ffn",
)


def _labelled(fn, name):
    from torch.profiler import record_function

    def wrapper(*a, **k):
        with record_function(name):
            return fn(*a, **k)

    return wrapper


def instrument(model) -> list:
    """Wrap our model's pieces in record_function ranges (instance attributes only; undone by the returned list)."""
    import blip.generation as generation
    from blip.model import text

    undo = []

    def wrap(obj, attr, name):
        old = getattr(obj, attr)
        setattr(obj, attr, _labelled(old, name))
        undo.append((obj, attr, old, attr in vars(obj)))

    # Top-level regions (TOP) are disjoint, and so are the in-layer ones (IN_LAYER) inside blip::dec_layers; what is
    # left of generate() is the beam bookkeeping (log_softmax, topk, gathers, ...).
    wrap(model.visual_encoder, "forward", "blip::vision")
    dec = model.text_decoder
    wrap(dec.bert, "cross_kv", "blip::cross_kv_precompute")
    wrap(dec.bert.embeddings, "forward", "blip::dec_embeddings")
    for layer in dec.bert.encoder.layer:
        wrap(layer, "forward", "blip::dec_layers")
        wrap(layer.attention, "kv", "blip::self_attn_kv_proj")
        wrap(layer.attention, "attend", "blip::self_attn_attend(q,sdpa,out)")
        wrap(layer.crossattention, "attend", "blip::cross_attn_attend(q,sdpa,out)")
        wrap(layer.intermediate.dense, "forward", "blip::ffn")
        wrap(layer.output, "forward", "blip::ffn")
    wrap(dec.cls.predictions, "forward", "blip::lm_head")
    wrap(text.KVCache, "update", "blip::kv_cache_cat")
    wrap(text.KVCache, "reorder", "blip::kv_cache_reorder")
    wrap(generation, "_process", "blip::beam_logits_process")
    return undo


def uninstrument(undo) -> None:
    for obj, attr, old, own in reversed(undo):
        if own:
            setattr(obj, attr, old)
        else:
            delattr(obj, attr)


def profile(runner: Runner, rows: int) -> dict:
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    undo = instrument(runner.ours)
    try:
        with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            with record_function("blip::caption_batch"):
                runner.ours_caption()
    finally:
        uninstrument(undo)
    averages = prof.key_averages()
    print("\n=== torch.profiler, our side, one batch: top ops by self CPU time ===")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
    print("=== the same, by input shape (which matmuls) ===")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows))

    # Region totals (inclusive time of our labels): the decoder layers split into their parts plus the glue between
    # them (GELU, mask, residual views); the rest of the batch outside every label is the beam-search bookkeeping.
    inclusive = {e.key: e.cpu_time_total for e in averages if e.key.startswith("blip::")}
    total_us = inclusive["blip::caption_batch"]
    regions = {k: inclusive.get(k, 0.0) for k in TOP if k != "blip::dec_layers"}
    regions.update({k: inclusive.get(k, 0.0) for k in IN_LAYER})
    layers_us = inclusive.get("blip::dec_layers", 0.0)
    regions["blip::dec_layers_other (gelu, masks, glue)"] = layers_us - sum(inclusive.get(k, 0.0) for k in IN_LAYER)
    regions["blip::beam_search_rest (topk, gathers, log_softmax, ...)"] = total_us - sum(
        inclusive.get(k, 0.0) for k in TOP
    )
    print(f"=== where the time goes (one batch, {total_us / 1e6:.2f} s under the profiler) ===")
    for key, us in sorted(regions.items(), key=lambda kv: -kv[1]):
        print(f"  {key:58s} {us / 1e6:8.3f} s  {100 * us / total_us:5.1f} %")
    top_ops = [
        {
            "op": e.key,
            "self_cpu_s": e.self_cpu_time_total / 1e6,
            "calls": e.count,
            "share": e.self_cpu_time_total / total_us,
        }
        for e in sorted((e for e in averages if not e.key.startswith("blip::")), key=lambda e: -e.self_cpu_time_total)[
            :rows
        ]
    ]
    return {"total_s": total_us / 1e6, "regions_s": {k: v / 1e6 for k, v in regions.items()}, "top_ops": top_ops}


# --------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    warmup = args.warmup if args.warmup is not None else (1 if args.device.startswith("cuda") else 0)
    env = environment(args)
    print(json.dumps(env), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        hf, ours = build_models(args.seed, Path(tmp))
    runner = Runner(hf, ours, args)
    t0 = time.perf_counter()
    runner.warm_small()
    print(f"small warm-up pass (batch 1, both sides) {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": env,
    }

    if args.profile_only:
        results["profile"] = profile(runner, args.profile_rows)
        _write(results, args)
        return 0

    names = ["ours_vision", "ours_total"] + ([] if args.skip_transformers else ["hf_vision", "hf_total"])
    calls = {
        "ours_vision": runner.ours_vision,
        "ours_total": runner.ours_caption,
        "hf_vision": runner.hf_vision,
        "hf_total": runner.hf_caption,
    }
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = defaultdict(list)
    cpu_times: dict[str, list[float]] = defaultdict(list)
    loads: list[float] = []
    outputs: dict[str, torch.Tensor] = {}
    for r in range(args.repeats):
        for name in names:
            seconds, cpu_seconds, out = runner.timed(calls[name])
            times[name].append(seconds)
            cpu_times[name].append(cpu_seconds)
            outputs.setdefault(name, out)
            loads.append(os.getloadavg()[0])
            # CPU seconds / wall seconds below the thread count means the process waited (other load on the box).
            print(
                f"repeat {r + 1}/{args.repeats}  {name:12s} {seconds:8.3f} s wall  {cpu_seconds:8.3f} s CPU  "
                f"load1 {loads[-1]:.2f}",
                flush=True,
            )

    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    cpu_med = {name: statistics.median(ts) for name, ts in cpu_times.items()}
    for d in (med, best, cpu_med):
        d["ours_decoder"] = d["ours_total"] - d["ours_vision"]
        if not args.skip_transformers:
            d["hf_decoder"] = d["hf_total"] - d["hf_vision"]
    if not args.skip_transformers:
        diff = (outputs["ours_vision"].float() - outputs["hf_vision"].float()).abs().max().item()
        ids = check_ids(outputs["ours_total"], outputs["hf_total"], args)
        ids["vision_max_abs_diff"] = diff
        results["ids"] = ids
        print(f"ids: {json.dumps(ids)}", flush=True)
    results["times_s"] = dict(times)
    results["cpu_times_s"] = dict(cpu_times)
    results["loadavg_1min_after_each"] = loads
    results["median_s"] = med
    results["min_s"] = best
    results["cpu_median_s"] = cpu_med

    for title, table in (
        (f"median wall of {args.repeats}", med),
        (f"min wall of {args.repeats}", best),
        (f"median process CPU seconds of {args.repeats}", cpu_med),
    ):
        print(
            f"\nbatch {args.batch}, beam {args.beams}, max_length {args.max_length}, {args.dtype} on {args.device}, "
            f"{torch.get_num_threads()} threads, {title} (decoder = total - vision)"
        )
        print(f"{'part':10s} {'ours s/batch':>13s} {'transformers':>13s} {'speed-up':>9s}")
        for part in ("vision", "decoder", "total"):
            ours_s = table[f"ours_{part}"]
            if args.skip_transformers:
                print(f"{part:10s} {ours_s:13.3f}")
            else:
                hf_s = table[f"hf_{part}"]
                print(f"{part:10s} {ours_s:13.3f} {hf_s:13.3f} {hf_s / ours_s:8.2f}x")
    if not args.skip_transformers:
        results["speedup"] = {p: med[f"hf_{p}"] / med[f"ours_{p}"] for p in ("vision", "decoder", "total")}
        results["speedup_min"] = {p: best[f"hf_{p}"] / best[f"ours_{p}"] for p in ("vision", "decoder", "total")}
        print(f"captions/s: ours {args.batch / med['ours_total']:.3f}, transformers {args.batch / med['hf_total']:.3f}")

    if args.profile:
        results["profile"] = profile(runner, args.profile_rows)
    results["environment"]["loadavg_end"] = os.getloadavg()
    _write(results, args)

    if not args.skip_transformers:
        ids = results["ids"]
        assert ids["full_length"] and ids["no_end_token"], f"not full-length outputs: {ids}"
        if args.dtype == "float32":
            assert ids["identical"], f"ids differ between ours and transformers: {ids}"
        elif not ids["identical"]:
            print(
                f"note: ids differ in {args.dtype} ({ids.get('rows_identical')} of {args.batch} rows identical); "
                f"half precision rounds differently on the two sides (autocast vs a cast model)"
            )
    return 0


def _write(results: dict, args) -> None:
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    sys.exit(main())
