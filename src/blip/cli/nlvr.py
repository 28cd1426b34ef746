"""`blip nlvr`: is a statement true of a pair of images? (an NLVR2 checkpoint)."""

from __future__ import annotations

import argparse

from blip.cli.common import add_model_args, emit, finish, open_model, usable_images


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nlvr",
        help="judge a statement about a pair of images",
        description="Is each statement true of the (left, right) image pair? Needs an NLVR2 checkpoint.",
    )
    p.add_argument("left", help="the first (left) image")
    p.add_argument("right", help="the second (right) image")
    p.add_argument("--statement", "-s", action="append", required=True, help="a statement (repeat for several)")
    add_model_args(p, batch_size=16)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = open_model(args)
    images, names, skipped = usable_images([args.left, args.right])
    if skipped:  # without both images there is no pair to judge
        finish(skipped, 2)
        return 2
    verdicts = model.nlvr(
        [images[0]] * len(args.statement), [images[1]] * len(args.statement), args.statement, batch_size=args.batch_size
    )
    for text, v in zip(args.statement, verdicts):
        emit(
            {
                "left": names[0],
                "right": names[1],
                "statement": text,
                "true": v.true,
                "probability": round(v.probability, 6),
            },
            args.json,
            f"{'true' if v.true else 'false'}\t{v.probability:.4f}\t{text}",
        )
    return 0
