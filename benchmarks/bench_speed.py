"""Issue 15 on CPU, side by side in one run: bf16 against fp32 and transformers, agreement, decoder profile, compile.

Parts (--parts, default all but compile):
  speed      base shapes (ViT-B/16 at 384 + BERT-base, random weights built by transformers and loaded by ours),
             beam 3, 20 tokens with the end token blocked: transformers fp32, ours fp32, ours bf16 through autocast
             alone, a cast alone, and cast + autocast (what `--dtype bfloat16` does); vision and decoding timed apart.
  nounits    ours fp32 against ours bf16 with oneDNN capped below AVX512-BF16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE), as
             on a CPU without bf16 units (a subprocess).
  agreement  a tiny model pretrained here on the synthetic world: captions of 64 test images, ITM probabilities and
             ITC cosines of 64 pairs in bf16 against fp32.
  profile    torch.profiler of one bf16 caption batch, decoder before (KV cache grown by torch.cat, a host sync every
             step) and after (preallocated cache, a sync every 4 steps).
  compile    `Blip.compile()` on the tiny preset: compile time, then vision and decoding against eager.

    python benchmarks/bench_speed.py --batch 4 --json runs/bench_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_caption import DEC, PAD, PROMPT_WORDS, SEP, build_models
from blip import generation
from blip.api import _cast_to_bf16
from blip.cli.env import cpu_facts
from blip.generation import GenerationConfig, generate
from blip.model.text import KVCache

ROOT = Path(__file__).resolve().parents[1]


class ConcatKVCache(KVCache):
    """The cache before issue 15: every step concatenates its keys/values onto the history."""

    def update(self, index, k, v):
        while len(self.layers) <= index:
            self.layers.append(None)
        past = self.layers[index]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        self.layers[index] = (k, v)
        return k, v


@contextlib.contextmanager
def before_issue_15():
    """Decode as before: concatenating cache, host synchronisation every step."""
    old = generation.KVCache, generation.SYNC_EVERY
    generation.KVCache = lambda capacity=None: ConcatKVCache()
    generation.SYNC_EVERY = 1
    try:
        yield
    finally:
        generation.KVCache, generation.SYNC_EVERY = old


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------------------ speed
def speed(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        hf, ours = build_models(0, Path(tmp))
        ours_cast = copy.deepcopy(ours)
        _cast_to_bf16(ours_cast)
        b = args.batch
        pixels = torch.randn(b, 3, 384, 384, generator=torch.Generator().manual_seed(1))
        prompt = torch.tensor([[DEC] + PROMPT_WORDS] * b)
        gen = GenerationConfig(num_beams=3, max_length=20, min_length=20, suppress_eos=True, length_norm="transformers")

        def ac():
            return torch.autocast("cpu", dtype=torch.bfloat16)

        modes = {
            "ours fp32": (ours, contextlib.nullcontext),
            "ours bf16 autocast": (ours, ac),
            "ours bf16 cast": (ours_cast, contextlib.nullcontext),
            "ours bf16 cast+autocast": (ours_cast, ac),
        }

        def ours_run(model, ctx):
            with torch.no_grad(), ctx():
                tv, e = timed(lambda: model.encode_image(pixels.to(next(model.parameters()).dtype)))
                td, ids = timed(
                    lambda: (
                        generate(
                            model.text_decoder, prompt, model.text_decoder.bert.cross_kv(e), None, gen, SEP, PAD
                        ).sequences
                    )
                )
            return tv, td, ids

        def hf_run():
            with torch.no_grad():
                tv, _ = timed(lambda: hf.vision_model(pixel_values=pixels)[0])
                tt, ids = timed(
                    lambda: hf.generate(
                        pixel_values=pixels,
                        input_ids=torch.tensor([[101] + PROMPT_WORDS + [SEP]] * b),
                        num_beams=3,
                        max_length=20,
                        min_length=20,
                        do_sample=False,
                    )
                )
            return tv, tt - tv, ids

        runs = {name: [] for name in ["transformers fp32", *modes]}
        for model, ctx in modes.values():  # untimed small pass: page faults, oneDNN kernel creation
            with torch.no_grad(), ctx():
                model.encode_image(pixels[:1].to(next(model.parameters()).dtype))
        for r in range(args.repeats):
            for name, outs in runs.items():
                out = hf_run() if name == "transformers fp32" else ours_run(*modes[name])
                outs.append(out)
                print(
                    f"repeat {r + 1} {name:26s} vision {out[0]:7.2f} s  decoding {out[1]:7.2f} s  "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    ref_ids = runs["ours fp32"][0][2]
    table = {}
    for name, outs in runs.items():
        best = min(outs, key=lambda o: o[0] + o[1])
        table[name] = {
            "vision_s": best[0],
            "decoding_s": best[1],
            "total_s": best[0] + best[1],
            "identical_ids_to_ours_fp32": bool((outs[0][2] == ref_ids).all()),
            "rows_identical": int((outs[0][2] == ref_ids).all(dim=1).sum()),
        }
    hf_total = table["transformers fp32"]["total_s"]
    for row in table.values():
        row["speedup_vs_transformers_fp32"] = hf_total / row["total_s"]
    return {"batch": args.batch, "repeats": args.repeats, "rows": table}


def nounits(args) -> dict:
    """Re-run ours fp32 vs bf16 in a subprocess whose oneDNN may not use AVX512-BF16 / AMX."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "PYTHONPATH": str(ROOT / "src")}
    code = (
        f"import sys; sys.argv=['x','--parts','_nounits_child','--batch','{args.batch}','--threads',"
        f"'{args.threads}']; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_speed; "
        f"bench_speed.main()"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _nounits_child(args) -> dict:
    from blip.model.blip import BlipModel
    from blip.model.config import preset

    torch.manual_seed(0)
    m32 = BlipModel(preset("base", task="caption")).eval()
    m16 = copy.deepcopy(m32)
    _cast_to_bf16(m16)
    pixels = torch.randn(args.batch, 3, 384, 384)
    out = {"onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    for name, model, ctx in (
        ("fp32", m32, contextlib.nullcontext()),
        ("bf16 cast+autocast", m16, torch.autocast("cpu", dtype=torch.bfloat16)),
    ):
        with torch.no_grad(), ctx:
            model.encode_image(pixels[:1])
            out[f"vision_s {name}"] = min(timed(lambda m=model: m.encode_image(pixels))[0] for _ in range(2))
    return out


# ------------------------------------------------------------------------------------------------ agreement
def agreement(args) -> dict:
    import blip
    from blip.cli.common import load_recipe
    from blip.data.synth import generate as synth
    from blip.tasks.pretrain import pretrain

    out = Path(args.work) / "agreement"
    world = out / "synth"
    if not (world / "manifest.json").exists():
        synth(world, num_images=args.world_images, seed=0, noise=0.0)
    recipe = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), [])
    recipe["data"] = [{"reader": "pretrain_json", "path": str(world / "pretrain.json"), "image_root": str(world)}]
    recipe["tokenizer"] = str(world / "tokenizer") if (world / "tokenizer").exists() else "from_data"
    recipe["train"] = {
        **recipe["train"],
        "out": str(out / "run"),
        "max_steps": args.train_steps,
        "batch_size": 48,
        "epochs": 100,
        "seed": 0,
        "progress": False,
        "checkpoint_every": 10**9,
    }
    train_s, final = timed(lambda: pretrain(recipe, resume=any((out / "run").glob("checkpoint-*.pt"))))
    test = json.loads((world / "coco_karpathy_test.json").read_text())[:64]
    images = [str(world / e["image"]) for e in test]
    texts = [e["caption"][0] for e in test]
    m32, m16 = blip.load(final), blip.load(final, dtype="bfloat16")
    c32, c16 = m32.caption(images, batch_size=16), m16.caption(images, batch_size=16)
    s32, s16 = m32.match(images, texts), m16.match(images, texts)
    same = sum(a.text == b.text for a, b in zip(c32, c16))
    return {
        "train_steps": args.train_steps,
        "train_s": train_s,
        "world_images": args.world_images,
        "images": len(images),
        "identical_captions": same,
        "share_identical": same / len(images),
        "max_abs_diff_itm": max(abs(a["itm"] - b["itm"]) for a, b in zip(s32, s16)),
        "max_abs_diff_itc": max(abs(a["itc"] - b["itc"]) for a, b in zip(s32, s16)),
        "example": [c32[0].text, c16[0].text],
    }


# ------------------------------------------------------------------------------------------------ profile
def profile(args) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from blip.model.blip import BlipModel
    from blip.model.config import preset

    torch.manual_seed(0)
    model = BlipModel(preset("base", task="caption")).eval()
    _cast_to_bf16(model)
    b = args.batch
    prompt = torch.tensor([[DEC] + PROMPT_WORDS] * b)
    gen = GenerationConfig(num_beams=3, max_length=20, min_length=20, suppress_eos=True, length_norm="transformers")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        kv = model.text_decoder.bert.cross_kv(model.encode_image(torch.randn(b, 3, 384, 384)))
    result = {}
    for name, ctx in (("before", before_issue_15), ("after", contextlib.nullcontext)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), ctx():
            generate(model.text_decoder, prompt, kv, None, gen, SEP, PAD)  # warm
            seconds = min(
                timed(lambda: generate(model.text_decoder, prompt, kv, None, gen, SEP, PAD))[0] for _ in range(2)
            )
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                generate(model.text_decoder, prompt, kv, None, gen, SEP, PAD)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        result[name] = {
            "decoding_s": seconds,
            "top_ops": [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:10]],
        }
        print(
            f"\n{name}: decoding {seconds:.3f} s\n"
            + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12),
            flush=True,
        )
    return result


# ------------------------------------------------------------------------------------------------ compile
def compile_part(args) -> dict:
    from blip.api import Blip
    from blip.model.blip import BlipModel
    from blip.model.config import preset
    from blip.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer.from_vocab(
        ["[PAD]"]
        + [f"[unused{i}]" for i in range(99)]
        + ["[UNK]", "[CLS]", "[SEP]"]
        + [f"t{i}" for i in range(30521 - 103)]
    )
    model = Blip(BlipModel(preset("tiny", task="caption")), tok)
    pixels = torch.randn(args.batch, 3, 64, 64)
    prompt = torch.tensor([[DEC] + PROMPT_WORDS] * args.batch)
    gen = GenerationConfig(num_beams=3, max_length=20, min_length=20, suppress_eos=True, length_norm="transformers")

    def run():
        with torch.no_grad():
            tv, e = timed(lambda: model.model.encode_image(pixels))
            td, ids = timed(
                lambda: generate(
                    model.model.text_decoder, prompt, model.model.text_decoder.bert.cross_kv(e), None, gen, SEP, PAD
                )
            )
        return tv, td, ids.sequences

    run()
    eager = min((run() for _ in range(3)), key=lambda r: r[0] + r[1])
    model.compile()
    first_s, _ = timed(run)
    compiled = min((run() for _ in range(3)), key=lambda r: r[0] + r[1])
    return {
        "preset": "tiny",
        "batch": args.batch,
        "first_call_s (compiles)": first_s,
        "eager_vision_s": eager[0],
        "eager_decoding_s": eager[1],
        "compiled_vision_s": compiled[0],
        "compiled_decoding_s": compiled[1],
        "identical_ids": bool((eager[2] == compiled[2]).all()),
    }


PARTS = {
    "speed": speed,
    "nounits": nounits,
    "agreement": agreement,
    "profile": profile,
    "compile": compile_part,
    "_nounits_child": _nounits_child,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", nargs="+", default=["speed", "nounits", "agreement", "profile"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--world-images", type=int, default=1000)
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--work", default="runs/bench_speed")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.parts == ["_nounits_child"]:
        print(json.dumps(_nounits_child(args)))
        return 0
    facts = cpu_facts()
    results = {
        "cpu": facts,
        "torch": torch.__version__,
        "threads": args.threads,
        "args": vars(args) | {"json": str(args.json)},
    }
    for part in args.parts:
        t0 = time.perf_counter()
        results[part] = PARTS[part](args)
        results[part]["part_seconds"] = time.perf_counter() - t0
        print(f"{part}: {json.dumps(results[part], default=str)}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
