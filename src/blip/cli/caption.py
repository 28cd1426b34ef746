"""`blip caption`: caption images (files, folders, lists, tar shards), streaming, by beam search or sampling."""

from __future__ import annotations

import argparse
import json
import os
import sys

from blip.cli.common import add_model_args, finish, open_model
from blip.defaults import PROMPT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="caption images",
        description="Caption images: files, folders (recursive), list files (TXT of paths, "
        "CSV/TSV/JSONL with an image column) or webdataset shards. Images are decoded in "
        "--workers processes and streamed; with --out the run resumes after a kill and "
        "runs under torchrun, each rank taking its share of the units.",
    )
    p.add_argument("images", nargs="+", help="image files, folders, list files or tar shards (brace patterns, URLs)")
    add_model_args(p)
    p.add_argument("--prompt", default=PROMPT, help=f'text the caption continues (default "{PROMPT}")')
    p.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    p.add_argument("--beams", type=int, default=3, help="beam width (default 3)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    p.add_argument(
        "--top-k",
        type=int,
        default=50,
        help="sampling keeps the k likeliest tokens before top-p (reference: 50; 0 = off)",
    )
    p.add_argument("--max-length", type=int, default=20, help="tokens, prompt included (reference: 20)")
    p.add_argument("--min-length", type=int, default=5, help="tokens, prompt included (reference: 5)")
    p.add_argument("--repetition-penalty", type=float, help="default 1.0 for beams, 1.1 for sampling")
    p.add_argument("--num-captions", type=int, default=1, help="captions per image (needs --sample; default 1)")
    p.add_argument(
        "--rerank",
        choices=["itm", "logprob"],
        default=None,
        help="with several captions keep the best by ITM match (LAION-COCO style) or by mean token "
        "log-probability (default: logprob)",
    )
    p.add_argument(
        "--filter",
        dest="filter_model",
        help="ITM model (retrieval checkpoint) scoring the captions, when the captioning model has no ITM head",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each image's draw is seeded by it and its name)")
    p.add_argument(
        "--out", help="write the records to this file: .jsonl, .csv, .tsv or .parquet (resumable); default: print them"
    )
    p.add_argument("--sidecar", metavar="EXT", help="write each caption to a file next to its image, e.g. .txt")
    p.add_argument("--prefix", default="", help="text put before each sidecar caption (e.g. a trigger word)")
    p.add_argument("--suffix", default="", help="text put after each sidecar caption")
    p.add_argument("--skip-existing", action="store_true", help="leave images that already have a sidecar alone")
    p.add_argument("--image-root", help="folder that paths in list files are relative to (default: the list's folder)")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default 2; 0: in this one)")
    p.add_argument("--unit-size", type=int, default=1000, help="images per resumable unit of a list (default 1000)")
    p.add_argument(
        "--progress-every",
        type=float,
        default=30.0,
        help="seconds between progress lines when stderr is not a terminal",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.inference.caption import CaptionJob, run_caption
    from blip.inference.engine import join_ranks

    job = CaptionJob(
        sources=args.images,
        out=args.out,
        sidecar=args.sidecar,
        prefix=args.prefix,
        suffix=args.suffix,
        skip_existing=args.skip_existing,
        image_root=args.image_root,
        prompt=args.prompt,
        sample=args.sample,
        beams=args.beams,
        top_p=args.top_p,
        top_k=args.top_k,
        max_length=args.max_length,
        min_length=args.min_length,
        repetition_penalty=args.repetition_penalty,
        num_captions=args.num_captions,
        rerank=args.rerank,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        unit_size=args.unit_size,
        progress_every=args.progress_every,
    )
    job.validate()  # one-line errors before the model is loaded
    join_ranks()
    model = open_model(args)
    filt = None
    if args.filter_model:
        import blip

        filt = blip.load(args.filter_model, device=args.device, dtype=model.dtype, tokenizer=args.tokenizer)
    emit = None
    if args.out is None and args.sidecar is None:

        def emit(record: dict) -> None:
            line = json.dumps(record, ensure_ascii=False) if args.json else f"{record['image']}\t{record['caption']}"
            print(line, flush=True)

    try:
        result = run_caption(job, model, filt, emit)
    except BrokenPipeError:
        # The reader (`head`) has gone: end quietly, and keep Python from complaining when it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if result.existing:
        print(f"blip: {result.existing} images already had a caption file, left alone", file=sys.stderr)
    if args.out is not None and result.written:
        print(f"blip: wrote {result.written} records to {args.out}", file=sys.stderr)
    return finish(result.skipped, result.inputs)
