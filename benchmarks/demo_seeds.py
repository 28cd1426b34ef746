"""The demo's CapFilt ablation over several seeds: mean and sample standard deviation of every row and metric.

    python benchmarks/demo_seeds.py --seeds 0 1 2 --out runs/demo_seeds      # runs the missing seeds, then prints
    python benchmarks/demo_seeds.py --seeds 1 2 3 4 --finetune-steps 240     # longer fine-tunes than the demo's
    python benchmarks/demo_seeds.py --seeds 0 1 --noise 0.7 --out runs/seeds_noise07  # any `blip demo` option
    python benchmarks/demo_seeds.py --seeds 0 1 --filter-itm-negatives uniform --out runs/seeds_uniform

Each seed is a new synthetic world and new models (`blip demo --seed S`); finished seeds are read from
OUT/seed_S/results.json, so rerunning only prints, and a killed run resumes inside its seed. Besides the means it
prints each row's paired difference from no bootstrapping with a two-sided paired t-test (scipy), the filter's drop
rate per kind of web text, and the share of the captioner's synthetic captions that are wholly true (checked against
the scene graphs by the independent checker of tests/test_data_synth.py), kept and dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from scipy.stats import ttest_rel

from blip.cli.demo import OPTIONS
from blip.tasks.ablation import VARIANTS, AblationConfig, run_ablation
from blip.training.contrastive import ITM_NEGATIVES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_data_synth import caption_holds  # noqa: E402

METRICS = ("txt_r1", "img_r1", "bleu4", "cider")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/demo_seeds")
    # Every setting of `blip demo` (the demo's default unless given) and how ITM draws its negatives.
    for name, kind in OPTIONS.items():
        if name not in ("out", "seed"):
            ap.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"AblationConfig.{name}")
    for part in ("pretrain", "filter"):
        ap.add_argument(
            f"--{part}-itm-negatives",
            choices=ITM_NEGATIVES,
            default=None,
            help=f"how ITM draws its negatives in the {part} training (AblationConfig)",
        )
    args = ap.parse_args()
    fields = {f.name for f in dataclasses.fields(AblationConfig)} - {"out", "seed"}
    results = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed_{seed}"
        done = out / "results.json"
        results.append(
            json.loads(done.read_text())
            if done.exists()
            else run_ablation(
                AblationConfig(
                    out=str(out),
                    seed=seed,
                    **{k: v for k, v in vars(args).items() if k in fields and v is not None},
                )
            )
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
    print(
        "\ndifference from no bootstrapping, paired by seed: mean ± sample sd (seeds ahead), two-sided paired t-test p"
    )
    print("| pretraining data | text R@1 | image R@1 | BLEU-4 | CIDEr |\n|---|---|---|---|---|")
    for name in VARIANTS[1:]:
        cells = []
        for metric in METRICS:
            diffs = [r["rows"][name][metric] - r["rows"][VARIANTS[0]][metric] for r in results]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            ahead = f"({sum(d > 0 for d in diffs)}/{len(diffs)})"
            cells.append(f"{statistics.mean(diffs):+.1f} ± {sd:.1f} {ahead}, p {paired_p(results, name, metric)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for key in ("precision", "recall"):
        print(f"filter {key}: " + " / ".join(f"{r['filter'][key]:.1f}" for r in results))
    kinds = sorted({k for r in results for k in r["filter"]["dropped_by_kind"]})
    print("\nshare of each kind of web text the filter drops, per seed")
    for kind in kinds:
        rates = [r["filter"]["dropped_by_kind"].get(kind) for r in results]
        print(f"{kind}: " + " / ".join("-" if q is None else f"{100 * q['dropped'] / q['of']:.0f}%" for q in rates))
    print(
        "\nthe captioner's synthetic captions (one per web image) that are wholly true, per seed: all / kept / dropped"
    )
    print(" | ".join(wholly_true(Path(args.out) / f"seed_{seed}") for seed in args.seeds))


def paired_p(results: list[dict], name: str, metric: str) -> str:
    """Two-sided paired t-test of a row against no bootstrapping over the seeds."""
    if len(results) < 2:
        return "-"
    row = [r["rows"][name][metric] for r in results]
    base = [r["rows"][VARIANTS[0]][metric] for r in results]
    return f"{ttest_rel(row, base).pvalue:.3f}"


def wholly_true(run: Path) -> str:
    """Shares of the run's synthetic captions that hold against its scene graphs: all, kept by the filter, dropped."""
    path = run / "capfilt" / "provenance.jsonl"
    if not path.exists():
        return "-"
    scenes = json.loads((run / "synth" / "scenes.json").read_text())
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows = [r for r in rows if r.get("source") == "synthetic"]
    holds = [(r["kept"], caption_holds(r["text"], scenes[int(Path(r["image"]).stem)])[0]) for r in rows]

    def share(xs: list[bool]) -> str:
        return f"{100 * sum(xs) / len(xs):.1f}%" if xs else "-"

    return " / ".join(share([h for k, h in holds if k in keep]) for keep in ((True, False), (True,), (False,)))


if __name__ == "__main__":
    main()
