"""`blip gradcam`: where in an image the ITM head finds a text, as a heat map overlaid on the image."""

from __future__ import annotations

import argparse

from blip.cli.common import add_model_args, emit, open_model
from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gradcam",
        help="ITM Grad-CAM heat map of a text on an image",
        description="Grad-CAM of the ITM match logit at one cross-attention layer (as BLIP's demo "
        "and LAVIS): the mean map over the text's tokens, or one token's, on the image.",
    )
    p.add_argument("image", help="an image file")
    p.add_argument("--text", "-t", required=True, help="the text to ground")
    p.add_argument("--out", required=True, help="where to write the overlay (PNG or JPEG)")
    p.add_argument("--layer", type=int, help="cross-attention layer index (default: the middle one, 6 of 12)")
    p.add_argument("--token", type=int, help="the map of this token (0 = first word) instead of the mean")
    add_model_args(p, batch_size=1)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.gradcam import overlay
    from blip.images import load_image

    image = load_image(args.image)
    model = open_model(args)
    cam = model.gradcam(image, args.text, layer=args.layer)
    which = "mean" if args.token is None else args.token
    heat = cam.heatmap(image.size, which)
    try:
        overlay(image, heat).save(args.out)
    except (OSError, ValueError) as e:
        raise BlipError(f"{args.out}: cannot write the heat map ({e})") from None
    emit(
        {
            "image": args.image,
            "text": args.text,
            "itm": round(cam.itm, 6),
            "layer": cam.layer,
            "tokens": cam.tokens,
            "out": args.out,
        },
        args.json,
        f"{args.image}\t{args.text}\titm={cam.itm:.4f}\tlayer={cam.layer}\t-> {args.out}",
    )
    return 0
