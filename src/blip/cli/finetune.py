"""`blip finetune TASK`: fine-tune a pretrained model for a downstream task from a recipe."""

from __future__ import annotations

import argparse

from blip.cli.common import add_recipe_args

# The tasks of blip.tasks.finetune (named here so that the parser is built without importing torch).
TASKS = ("caption", "nlvr2", "retrieval", "vqa")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune for a downstream task",
        description="Fine-tune from a YAML recipe (configs/); one process or under torchrun.",
    )
    p.add_argument("task", choices=TASKS)
    add_recipe_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.recipes import load_recipe
    from blip.tasks.finetune import finetune

    print(f"model written to {finetune(args.task, load_recipe(args.config, args.set), resume=args.resume)}")
    return 0
