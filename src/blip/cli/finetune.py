"""`blip finetune TASK`: fine-tune a pretrained model for a downstream task from a recipe."""

from __future__ import annotations

import argparse

from blip.cli.common import add_recipe_args, load_recipe

TASKS = ("caption",)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune for a downstream task",
                       description="Fine-tune from a YAML recipe (configs/); one process or under torchrun.")
    p.add_argument("task", choices=TASKS)
    add_recipe_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.tasks.caption import finetune_caption

    final = {"caption": finetune_caption}[args.task](load_recipe(args.config, args.set), resume=args.resume)
    print(f"model written to {final}")
    return 0
