"""`blip convert`: any supported checkpoint to the project's format or to a transformers folder."""

from __future__ import annotations

import argparse

from blip.cli.common import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a checkpoint",
        description="Convert a reference .pth, transformers folder or project folder.",
    )
    p.add_argument("source")
    p.add_argument("out", help="output folder")
    p.add_argument("--to", choices=["blip", "transformers"], default="blip")
    p.add_argument(
        "--task",
        choices=["caption", "retrieval", "vqa", "pretrain"],
        help="keep only this task's parts (required to export a pretraining checkpoint to transformers)",
    )
    p.add_argument("--tokenizer", help="vocab.txt or tokenizer.json to bundle, when the checkpoint has none")
    p.add_argument("--image-size", type=positive_int, help="resample position embeddings to this input size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blip.checkpoint import export_transformers, load_checkpoint, save_pretrained

    model, tok, report = load_checkpoint(
        args.source, task=args.task, image_size=args.image_size, tokenizer=args.tokenizer
    )
    if args.to == "blip":
        save_pretrained(model, tok, args.out)
        written = "blip"
    else:
        written = export_transformers(model, tok, args.out, task=args.task)
    print(f"{args.source} ({report.format}; parts {'+'.join(model.cfg.parts)}) -> {args.out} ({written})")
    if report.ignored:
        print(f"  dropped {len(report.ignored)} training-only or unused tensors")
    if tok is None:
        print("  note: no tokenizer bundled; pass --tokenizer to include one")
    return 0
