"""`blip finetune TASK`: fine-tune a pretrained model for a downstream task from a recipe."""

from __future__ import annotations

import argparse
import importlib

from blip.cli.common import add_recipe_args, load_recipe

# task -> (module, function) in blip.tasks; imported only when run.
TASKS = {
    "caption": ("caption", "finetune_caption"),
    "retrieval": ("retrieval", "finetune_retrieval"),
    "nlvr2": ("nlvr2", "finetune_nlvr2"),
    "vqa": ("vqa", "finetune_vqa"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune for a downstream task",
        description="Fine-tune from a YAML recipe (configs/); one process or under torchrun.",
    )
    p.add_argument("task", choices=sorted(TASKS))
    add_recipe_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module, function = TASKS[args.task]
    finetune = getattr(importlib.import_module(f"blip.tasks.{module}"), function)
    print(f"model written to {finetune(load_recipe(args.config, args.set), resume=args.resume)}")
    return 0
