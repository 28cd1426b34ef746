"""The `blip` command: one sub-command module per job, errors as one line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from blip.errors import BlipError

# Each module defines add_parser(subparsers) and sets `func` on its parser; the func returns an exit code.
COMMANDS = ("caption", "ask", "match", "convert", "data", "pretrain", "finetune", "evaluate", "capfilt", "chain", "demo",
            "env")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="blip", description="BLIP: caption, ask, match, train and bootstrap.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"blip.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"blip.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `blip` console script."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        _leave_process_group()
        return code
    except BlipError as e:
        print(f"blip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blip: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line by default, the traceback on request
        if os.environ.get("BLIP_DEBUG"):
            raise
        print(f"blip: error: {type(e).__name__}: {e} (set BLIP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def _leave_process_group() -> None:
    """Under torchrun: wait for every rank, then close the group, so no rank tears it down under another."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
