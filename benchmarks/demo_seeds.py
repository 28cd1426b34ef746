"""The demo's CapFilt ablation over several seeds: mean and sample standard deviation of every row and metric.

    python benchmarks/demo_seeds.py --seeds 0 1 2 --out runs/demo_seeds      # runs the missing seeds, then prints
    python benchmarks/demo_seeds.py --seeds 1 2 3 4 --finetune-steps 240     # longer fine-tunes than the demo's

Each seed is a new synthetic world and new models (`blip demo --seed S`); finished seeds are read from
OUT/seed_S/results.json, so rerunning only prints, and a killed run resumes inside its seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from blip.tasks.ablation import VARIANTS, AblationConfig, run_ablation

METRICS = ("txt_r1", "img_r1", "bleu4", "cider")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/demo_seeds")
    ap.add_argument(
        "--finetune-steps",
        type=int,
        default=AblationConfig.finetune_steps,
        help="captioner, filter and caption-evaluation fine-tunes (the demo's default unless given)",
    )
    args = ap.parse_args()
    results = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed_{seed}"
        done = out / "results.json"
        results.append(
            json.loads(done.read_text())
            if done.exists()
            else run_ablation(AblationConfig(out=str(out), seed=seed, finetune_steps=args.finetune_steps))
        )
    print(f"\n{len(results)} seeds ({', '.join(map(str, args.seeds))}): mean ± sample sd")
    print("| pretraining data | text R@1 | image R@1 | BLEU-4 | CIDEr |\n|---|---|---|---|---|")
    for name in VARIANTS:
        cells = []
        for metric in METRICS:
            values = [r["rows"][name][metric] for r in results]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {sd:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    # Every row of a seed shares its world, test images and first pretraining: the paired difference is what says
    # whether bootstrapping beats noisy pretraining.
    print("\ndifference from no bootstrapping, paired by seed: mean ± sample sd (seeds ahead)")
    print("| pretraining data | text R@1 | image R@1 | BLEU-4 | CIDEr |\n|---|---|---|---|---|")
    for name in VARIANTS[1:]:
        cells = []
        for metric in METRICS:
            diffs = [r["rows"][name][metric] - r["rows"][VARIANTS[0]][metric] for r in results]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            cells.append(f"{statistics.mean(diffs):+.1f} ± {sd:.1f} ({sum(d > 0 for d in diffs)}/{len(diffs)})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for key in ("precision", "recall"):
        print(f"filter {key}: " + " / ".join(f"{r['filter'][key]:.1f}" for r in results))


if __name__ == "__main__":
    main()
