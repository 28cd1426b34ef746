"""`blip demo`: the CapFilt ablation in miniature on the synthetic world (the project's main job)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from blip.tasks.ablation import AblationConfig

# Options left out take AblationConfig's defaults: the miniature's settings live in one place.
OPTIONS = {
    "out": str,
    "images": int,
    "web_fraction": float,
    "threshold": float,
    "noise": float,
    "seed": int,
    "pretrain_steps": int,
    "finetune_steps": int,
    "capfilt_strategy": str,
    "vision_lr_scale": float,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the CapFilt ablation in miniature (synthetic world, CPU)",
        description="Pretrain on noisy web texts, bootstrap them with CapFilt, pretrain again on "
        "each variant and print the paper's Table 1 in miniature. Resumes if rerun. "
        "Every option defaults to the demo's settings (blip.tasks.ablation).",
    )
    for name, kind in OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    """The AblationConfig of the command line: the options given, the defaults for the rest."""
    from blip.tasks.ablation import AblationConfig

    return AblationConfig(**{name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None})


def run(args: argparse.Namespace) -> int:
    import torch

    from blip.tasks.ablation import run_ablation

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = config_from_args(args)
    run_ablation(cfg)
    print(f"\nreport: {cfg.out}/report.md")
    return 0
