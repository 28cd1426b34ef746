"""`blip pretrain`: run a pretraining recipe, in one process or under torchrun."""

from __future__ import annotations

import argparse

from blip.cli.common import add_recipe_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain with ITC + ITM + LM from a recipe",
        description="Pretrain from a YAML recipe (configs/). Runs as one process, or under "
        "`torchrun --nproc_per_node N -m blip pretrain ...` for DDP.",
    )
    add_recipe_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.recipes import load_recipe
    from blip.tasks.pretrain import pretrain

    final = pretrain(load_recipe(args.config, args.set), resume=args.resume)
    print(f"model written to {final}")
    return 0
