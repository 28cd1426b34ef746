"""Tiny pretraining on the synthetic world, then zero-shot retrieval on its held-out test split.

    python benchmarks/pretrain_tiny.py --images 3000 --steps 600 --out runs/bench_pretrain_tiny

Prints the Karpathy-protocol recalls next to chance (a random ranking).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import blip
from blip.cli.common import load_recipe
from blip.data.synth import generate
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import evaluate_retrieval

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_pretrain_tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k-test", type=int, default=16, help="ITM re-ranks each query's ITC top k")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    synth = out / "synth"
    if not (synth / "manifest.json").exists():
        generate(synth, num_images=args.images, seed=args.seed, noise=0.0)
    recipe = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), args.set)
    recipe["data"] = [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}]
    recipe["tokenizer"] = str(synth / "tokenizer") if (synth / "tokenizer").exists() else "from_data"
    recipe["train"] = {**recipe["train"], "out": str(out / "run")}
    recipe["train"].update(
        out=str(out / "run"),
        max_steps=args.steps,
        batch_size=args.batch_size,
        epochs=100,
        seed=args.seed,
        progress=False,
        checkpoint_every=10**9,
    )
    start = time.perf_counter()
    final = pretrain(recipe, resume=any((out / "run").glob("checkpoint-*.pt")))
    train_s = time.perf_counter() - start
    model = blip.load(final)
    test = json.loads((synth / "coco_karpathy_test.json").read_text())
    test_file = str(synth / "coco_karpathy_test.json")
    # k_test 1 leaves each query's ITC ranking untouched at rank 1: ITC-alone R@1 (its R@5/10 are not meaningful).
    itc = evaluate_retrieval(model, test_file, str(synth), k_test=1)
    metrics = evaluate_retrieval(model, test_file, str(synth), k_test=args.k_test)
    n_img, n_txt = len(test), sum(len(e["caption"]) for e in test)
    result = {
        "train_seconds": round(train_s, 1),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "test_images": n_img,
        "test_texts": n_txt,
        "chance_txt_r1": round(100 * 5 / n_txt, 2),
        "chance_img_r1": round(100 / n_img, 2),
        "itc_txt_r1": round(itc["txt_r1"], 2),
        "itc_img_r1": round(itc["img_r1"], 2),
        **{k: round(v, 2) for k, v in metrics.items()},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
