"""`blip demo`: the CapFilt ablation in miniature on the synthetic world (the project's main job)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the CapFilt ablation in miniature (synthetic world, CPU)",
                       description="Pretrain on noisy web texts, bootstrap them with CapFilt, pretrain again on "
                                   "each variant and print the paper's Table 1 in miniature. Resumes if rerun.")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--images", type=int, default=7500)
    p.add_argument("--web-fraction", type=float, default=0.8)
    p.add_argument("--threshold", type=float, default=1 / 3, help="filter: minimum ITM match probability kept")
    p.add_argument("--noise", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=500)
    p.add_argument("--finetune-steps", type=int, default=120)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from blip.tasks.ablation import AblationConfig, run_ablation

    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_ablation(AblationConfig(out=args.out, images=args.images, noise=args.noise, seed=args.seed,
                                web_fraction=args.web_fraction, threshold=args.threshold,
                                pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps))
    print(f"\nreport: {args.out}/report.md")
    return 0
