"""`blip pretrain`: run a pretraining recipe, in one process or under torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain with ITC + ITM + LM from a recipe",
                       description="Pretrain from a YAML recipe (configs/). Runs as one process, or under "
                                   "`torchrun --nproc_per_node N -m blip pretrain ...` for DDP.")
    p.add_argument("--config", required=True, help="YAML recipe")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the out folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe entry, e.g. train.epochs=2 (YAML value syntax)")
    p.set_defaults(func=run)


def load_recipe(path: str, sets: list[str]) -> dict:
    """Read a YAML recipe and apply dotted KEY=VALUE overrides."""
    file = Path(path)
    if not file.is_file():
        raise BlipError(f"{path}: no such recipe")
    try:
        recipe = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise BlipError(f"{path}: not valid YAML ({e})") from None
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise BlipError(f"--set {item!r}: expected KEY=VALUE")
        node = recipe
        *parents, leaf = key.split(".")
        try:
            for name in parents:  # list items by index: data.0.path=...
                node = node[int(name)] if isinstance(node, list) else node.setdefault(name, {})
            node[int(leaf) if isinstance(node, list) else leaf] = yaml.safe_load(value)
        except (IndexError, ValueError, TypeError):
            raise BlipError(f"--set {item!r}: no such place in the recipe") from None
    return recipe


def run(args: argparse.Namespace) -> int:
    from blip.tasks.pretrain import pretrain

    final = pretrain(load_recipe(args.config, args.set), resume=args.resume)
    print(f"model written to {final}")
    return 0
