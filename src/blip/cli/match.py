"""`blip match`: ITM match probability and ITC cosine of images against texts."""

from __future__ import annotations

import argparse

from blip.cli.common import add_model_args, emit, expand_images, finish, open_model, usable_images


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "match",
        help="score images against texts",
        description="Score every image against every text: ITM match probability and ITC cosine "
        "(a similarity, not a probability).",
    )
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--text", "-t", action="append", required=True, help="a text (repeat for several)")
    add_model_args(p, batch_size=16)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = expand_images(args.images)
    model = open_model(args)
    images, names, skipped = usable_images(paths)
    pairs = [(i, t) for i in range(len(images)) for t in args.text]
    scores = (
        model.match([images[i] for i, _ in pairs], [t for _, t in pairs], batch_size=args.batch_size) if pairs else []
    )
    for (i, text), s in zip(pairs, scores):
        shown = "\t".join(f"{k}={v:.4f}" for k, v in s.items())
        emit(
            {"image": names[i], "text": text, **{k: round(v, 6) for k, v in s.items()}},
            args.json,
            f"{names[i]}\t{text}\t{shown}",
        )
    return finish(skipped, len(paths))
