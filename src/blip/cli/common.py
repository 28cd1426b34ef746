"""Arguments and helpers shared by the inference commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blip.errors import BlipError, ImageError
from blip.images import load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (batch sizes, beams, lengths, counts)."""
    return _bounded_int(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number of at least 0 (seeds, workers)."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser, batch_size: int = 8, model_required: bool = True) -> None:
    """--model, --tokenizer, --device, --dtype, --compile, --batch-size, --image-size and --json."""
    p.add_argument(
        "--model",
        required=model_required,
        help="checkpoint: reference .pth, transformers folder or "
        "Hub id, or a folder written by `blip convert --to blip`",
    )
    p.add_argument("--tokenizer", help="vocab.txt or tokenizer.json, when the checkpoint has none")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: bfloat16 on cuda, float32 on cpu; `blip env` says whether bf16 pays on this CPU",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the vision encoder and the decoder step (pays only on long runs: compiling takes minutes)",
    )
    p.add_argument("--image-size", type=positive_int, help="resample position embeddings to this input size")
    p.add_argument("--batch-size", type=positive_int, default=batch_size)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")


def open_model(args: argparse.Namespace, task: str | None = None):
    """Load the model named on the command line."""
    import blip

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BlipError("--device cuda given but no CUDA GPU is available")
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    model = blip.load(
        args.model, task=task, device=args.device, dtype=dtype, image_size=args.image_size, tokenizer=args.tokenizer
    )
    return model.compile() if getattr(args, "compile", False) else model


def expand_images(paths: Iterable[str]) -> list[str]:
    """Files as given; folders expanded to the image files inside them (recursively), sorted."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            out.append(p)
    if not out:
        raise BlipError("no images given (folders held no image files)")
    return out


def usable_images(paths: list[str]) -> tuple[list[Any], list[str], dict[str, int]]:
    """Decode every image once; bad ones are reported on stderr, counted by reason and left out (small inputs only:
    collections go through blip.inference.engine, which streams)."""
    images, names, skipped = [], [], {}
    for p in paths:
        try:
            images.append(load_image(p))
            names.append(p)
        except ImageError as e:
            print(f"blip: skipped {e}", file=sys.stderr)
            skipped[e.reason] = skipped.get(e.reason, 0) + 1
    return images, names, skipped


def finish(skipped: dict[str, int], total: int) -> int:
    """Print the skip summary; exit status 1 when any input was skipped (saying so when most were), 2 when all."""
    from blip.inference.engine import report_skips

    return report_skips(skipped, total)


def emit(record: dict[str, Any], as_json: bool, text: str) -> None:
    """One result: a JSON line or a human line."""
    print(json.dumps(record, ensure_ascii=False) if as_json else text, flush=True)


def progress_bar(total: int, unit: str = "img", every: float = 30.0):
    """Progress for more than a handful of items: a tqdm bar on a terminal, else a line on stderr every `every` s."""
    if total <= 8:
        return None
    from blip.inference.engine import Progress

    return Progress(total, every=every)


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    """--config, --resume and --set for the training commands."""
    p.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the out folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe entry, e.g. train.epochs=2 or data.0.path=x.json (YAML values)",
    )


def load_recipe(path: str, sets: list[str]) -> dict:
    """A YAML recipe with dotted KEY=VALUE overrides (blip.recipes.load_recipe, imported only when called: the
    inference commands share this module and start without torch)."""
    from blip import recipes

    return recipes.load_recipe(path, sets)
