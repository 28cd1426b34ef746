"""`blip chain`: the CapFilt chain from one recipe (pretrain noisy -> CapFilt -> pretrain bootstrapped -> evaluate)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chain",
        help="pretrain, CapFilt, pretrain again on the bootstrapped data, evaluate",
        description="Run the CapFilt chain of a YAML recipe (configs/chain_*.yaml). Every stage "
        "is kept in the out folder: rerun the same command to resume a killed chain.",
    )
    p.add_argument("--config", required=True, help="YAML chain recipe")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe entry, e.g. pretrain.train.max_steps=100 (YAML values)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.recipes import load_recipe
    from blip.tasks.chain import run_chain

    result = run_chain(load_recipe(args.config, args.set))
    for name in ("noisy", "bootstrapped"):
        print(f"{name:>13}: " + ", ".join(f"{k} {v:.2f}" for k, v in result[name].items()))
    print(json.dumps(result["capfilt"]))
    return 0
