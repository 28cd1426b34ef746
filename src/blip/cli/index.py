"""`blip index`: embed a collection's images into a search index (incremental; rerun to update it)."""

from __future__ import annotations

import argparse
import os

from blip.cli.common import add_model_args, finish, open_model, progress_bar


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="build or update a search index of images",
        description="Store the L2-normalised ITC features of every image of SOURCES (files, folders, "
        ".txt lists of paths, webdataset .tar shards) in an index folder. Rerun it on the "
        "same sources to embed only new or changed images and drop removed ones.",
    )
    p.add_argument("sources", nargs="+", help="image files, folders, .txt list files or .tar shards")
    p.add_argument("--out", required=True, help="the index folder")
    p.add_argument(
        "--nn",
        default="auto",
        choices=["auto", "exact", "faiss"],
        help="nearest-neighbour search: exact matmul, faiss IVF, or auto (faiss above 200k images)",
    )
    p.add_argument("--shard-size", type=int, default=1024, help="images per feature shard (the unit kept on a kill)")
    p.add_argument(
        "--recall-target",
        type=float,
        default=0.95,
        help="faiss: smallest recall@10 against exact search when choosing nprobe",
    )
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default 2; 0: in this one)")
    add_model_args(p, batch_size=32)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = open_model(args)
    source = {
        "model": os.path.abspath(args.model) if os.path.exists(args.model) else args.model,
        "tokenizer": os.path.abspath(args.tokenizer) if args.tokenizer else None,
        "image_size": args.image_size,
    }
    index = model.index(
        args.sources,
        args.out,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        nn=args.nn,
        recall_target=args.recall_target,
        progress=progress_bar,
        model_source=source,
        workers=args.workers,
    )
    report = index.build_report
    print(f"{args.out}: {len(index)} images; {report.summary()}")
    return finish(dict(report.skipped.skipped), report.skipped.used + report.skipped.total_skipped)
