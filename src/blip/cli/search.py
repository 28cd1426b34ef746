"""`blip search`: the images of an index nearest to a text (ITC, then ITM re-ranking) or to an image."""

from __future__ import annotations

import argparse

from blip.cli.common import add_model_args, emit, open_model
from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search an index by text or by image",
        description="Rank the images of an index against a text or an image. Each result shows itc, "
        "the ITC cosine similarity (not a probability), and for text queries re-ranked by "
        "the ITM head, itm, the ITM match probability; re-ranking orders by ITM logit + "
        "ITC as the paper's retrieval evaluation does.",
    )
    p.add_argument("index", help="an index folder written by `blip index`")
    p.add_argument("text", nargs="?", help="the text to search for")
    p.add_argument("--image", help="search by this image instead of a text")
    p.add_argument("--top-k", type=int, default=10, help="results to show (default 10)")
    p.add_argument(
        "--rerank-k",
        type=int,
        default=64,
        help="re-rank the ITC top k by ITM (text queries, models with an ITM head); 0 turns it off",
    )
    add_model_args(p, batch_size=16, model_required=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.index import Index, as_record

    if (args.text is None) == (args.image is None):
        raise BlipError("give a text or --image, not both")
    index = Index.open(args.index)
    if args.model is None:  # the model the index was built with, as `blip index` recorded it
        recorded = index.manifest.get("model")
        if not recorded:
            raise BlipError(f"{args.index} does not say which model built it: pass --model")
        args.model = recorded["model"]
        args.tokenizer = args.tokenizer or recorded.get("tokenizer")
        args.image_size = args.image_size or recorded.get("image_size")
    model = open_model(args)
    hits = index.search(model, text=args.text, image=args.image, top_k=args.top_k, rerank_k=args.rerank_k)
    if not args.json:
        print("# rank  itc = ITC cosine similarity (not a probability)  itm = ITM match probability  image")
    for hit in hits:
        itm = "-" if hit.itm is None else f"{hit.itm:.4f}"
        emit(as_record(hit), args.json, f"{hit.rank}\titc={hit.itc:.4f}\titm={itm}\t{hit.path or hit.key}")
    return 0
