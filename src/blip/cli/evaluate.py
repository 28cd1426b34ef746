"""`blip evaluate TASK`: the paper's metric of a model on an annotation file."""

from __future__ import annotations

import argparse
import json

from blip.cli.common import open_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a dataset",
                       description="Retrieval: Karpathy recalls (two-stage ITC + ITM). Captioning: BLEU, METEOR, "
                                   "ROUGE-L, CIDEr of beam-search captions.")
    p.add_argument("task", choices=["retrieval", "caption"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="Karpathy-style val/test annotation file")
    p.add_argument("--image-root", default="", help="folder the annotation's image paths are relative to")
    p.add_argument("--k-test", type=int, default=256, help="retrieval: candidates re-ranked by ITM")
    p.add_argument("--no-meteor", action="store_true", help="captioning: skip METEOR (slow, needs Java)")
    p.add_argument("--out", help="captioning: write the captions in the COCO results format here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    p.add_argument("--image-size", type=int)
    p.add_argument("--tokenizer")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = open_model(args, task="retrieval" if args.task == "retrieval" else "caption")
    if args.task == "retrieval":
        from blip.tasks.retrieval import evaluate_retrieval

        metrics = evaluate_retrieval(model, args.data, args.image_root, k_test=args.k_test,
                                     batch_size=args.batch_size)
    else:
        from blip.tasks.caption import evaluate_caption

        metrics = evaluate_caption(model, args.data, args.image_root, out=args.out, meteor=not args.no_meteor,
                                   batch_size=args.batch_size)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    return 0
