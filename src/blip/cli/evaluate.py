"""`blip evaluate TASK`: the paper's metric of a model on an annotation file."""

from __future__ import annotations

import argparse
import json

from blip.cli.common import open_model, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a model on a dataset",
        description="retrieval: Karpathy recalls (two-stage ITC + ITM); caption: BLEU, METEOR, "
        "ROUGE-L, CIDEr of beam-search captions; nlvr2: accuracy; vqa: VQA accuracy; video-retrieval: "
        "zero-shot text-video recalls (MSRVTT layout); video-qa: zero-shot top-1 accuracy "
        "(MSRVTT-QA, MSVD-QA) of a VQA model ranking an answer list. Retrieval runs under "
        "torchrun too, the ITM re-ranking split across ranks.",
    )
    p.add_argument("task", choices=["retrieval", "caption", "nlvr2", "vqa", "video-retrieval", "video-qa"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="annotation file (Karpathy val/test, NLVR2 split, MSRVTT, MSRVTT-QA)")
    p.add_argument("--image-root", default="", help="folder the annotation's image or video paths are relative to")
    p.add_argument(
        "--k-test",
        type=positive_int,
        help="candidates re-scored: retrieval by ITM (default 256), VQA answers by full likelihood (default 128)",
    )
    p.add_argument(
        "--answer-list",
        help="vqa: rank this answer list (JSON list) instead of generating; video-qa: "
        "rank it instead of the annotation's answers",
    )
    p.add_argument("--num-frames", type=positive_int, default=8, help="video: frames sampled uniformly per video")
    p.add_argument("--split", default="test", help="video: split of an official MSRVTT videodatainfo.json")
    p.add_argument("--no-meteor", action="store_true", help="captioning: skip METEOR (slow, needs Java)")
    p.add_argument(
        "--out", help="caption / vqa / video-qa: write the results (COCO results / VQA submission format) here"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--tokenizer")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.distributed import rank

    if args.task in ("retrieval", "video-retrieval"):
        from blip.distributed import setup_distributed

        # Under torchrun every rank computes all ITC features and ITM-scores its share of the queries.
        setup_distributed()
    task = {"caption": "caption", "nlvr2": "nlvr2", "vqa": "vqa", "video-qa": "vqa"}.get(args.task, "retrieval")
    model = open_model(args, task=task)
    k_test = {"k_test": args.k_test} if args.k_test else {}  # else each task's own default (the reference's)
    if args.task == "retrieval":
        from blip.tasks.retrieval import evaluate_retrieval

        metrics = evaluate_retrieval(model, args.data, args.image_root, batch_size=args.batch_size, **k_test)
    elif args.task == "vqa":
        from blip.tasks.vqa import evaluate_vqa

        metrics = evaluate_vqa(
            model,
            args.data,
            args.image_root,
            answer_list=args.answer_list,
            **k_test,
            out=args.out,
            batch_size=args.batch_size,
        )
    elif args.task == "caption":
        from blip.tasks.caption import evaluate_caption

        metrics = evaluate_caption(
            model, args.data, args.image_root, out=args.out, meteor=not args.no_meteor, batch_size=args.batch_size
        )
    elif args.task == "nlvr2":
        from blip.tasks.nlvr2 import evaluate_nlvr2

        metrics = evaluate_nlvr2(model, args.data, args.image_root, batch_size=args.batch_size)
    elif args.task == "video-qa":
        from blip.tasks.video import evaluate_video_qa

        metrics = evaluate_video_qa(
            model,
            args.data,
            args.image_root,
            answer_list=args.answer_list,
            num_frames=args.num_frames,
            **k_test,
            out=args.out,
            batch_size=args.batch_size,
        )
    else:
        from blip.tasks.video import evaluate_video_retrieval

        metrics = evaluate_video_retrieval(
            model,
            args.data,
            args.image_root,
            split=args.split or None,
            num_frames=args.num_frames,
            **k_test,
        )
    if rank() == 0:
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    return 0
