"""`blip caption`: caption images with beam search or nucleus sampling, with confidences."""

from __future__ import annotations

import argparse

from blip.cli.common import add_model_args, emit, expand_images, finish, open_model, progress_bar, usable_images


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption images", description="Caption images (files or folders).")
    p.add_argument("images", nargs="+", help="image files or folders")
    add_model_args(p)
    p.add_argument("--prompt", default="a picture of ", help='text the caption continues (default "a picture of ")')
    p.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50, help="sampling keeps the k likeliest tokens before top-p "
                                                         "(reference: 50; 0 = off)")
    p.add_argument("--max-length", type=int, default=20, help="tokens, prompt included (reference: 20)")
    p.add_argument("--min-length", type=int, default=5, help="tokens, prompt included (reference: 5)")
    p.add_argument("--repetition-penalty", type=float, help="default 1.0 for beams, 1.1 for sampling")
    p.add_argument("--num-captions", type=int, default=1, help="captions per image (sampling)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    paths = expand_images(args.images)
    model = open_model(args)
    images, names, skipped = usable_images(paths)
    bar = progress_bar(len(images))
    generator = torch.Generator(device=model.device).manual_seed(args.seed)
    captions = model.caption(images, prompt=args.prompt, strategy="nucleus" if args.sample else "beam",
                             num_beams=args.beams, max_length=args.max_length, min_length=args.min_length,
                             top_p=args.top_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty,
                             num_captions=args.num_captions if args.sample else 1, batch_size=args.batch_size,
                             generator=generator, progress=bar) if images else []
    if bar is not None:
        bar.close()
    per_image = len(captions) // max(1, len(images))
    for i, c in enumerate(captions):
        record = {"image": names[i // per_image], "caption": c.text, "logprob": round(c.logprob, 4),
                  "mean_logprob": round(c.mean_logprob, 4)}
        if c.itm is not None:
            record["itm"] = round(c.itm, 4)
        emit(record, args.json, f"{names[i // per_image]}\t{c.text}")
    return finish(skipped, len(paths))
