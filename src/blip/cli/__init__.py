"""The `blip` command: one sub-command module per job, errors as one line and a non-zero exit."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from blip.errors import BlipError

# Each module defines add_parser(subparsers) and sets `func` on its parser; the func returns an exit code.
COMMANDS = (
    "caption",
    "ask",
    "match",
    "convert",
    "data",
    "pretrain",
    "finetune",
    "evaluate",
    "capfilt",
    "chain",
    "demo",
    "nlvr",
    "index",
    "search",
    "gradcam",
    "serve",
    "env",
)


def _has_default(action: argparse.Action) -> bool:
    """Whether the option has a default worth showing (not None, an off switch, empty or suppressed)."""
    d = action.default
    return not (d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, (list, str)) and not d))


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless there is none or its help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _has_default(action) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The parser of `blip` and of every sub-command (sub-parsers are built from the parent's class)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def _add_action(self, action: argparse.Action) -> argparse.Action:
        # An option without help text would hide its default: give it a line that shows it.
        if action.help is None and action.option_strings and _has_default(action):
            action.help = "default: %(default)s"
        return super()._add_action(action)

    def error(self, message: str):
        """Argument errors as one line (argparse would print the whole usage first), exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = _Parser(prog="blip", description="BLIP: caption, ask, match, train and bootstrap.")
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
    if "torch" not in sys.modules:  # a command that never needed torch has no group to close
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
