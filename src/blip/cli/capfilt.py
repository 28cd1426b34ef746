"""`blip capfilt`: bootstrap a noisy web dataset with a captioner and a filter (CapFilt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capfilt",
        help="bootstrap a noisy dataset (captioner + filter)",
        description="Caption every web image (nucleus sampling), keep the web and synthetic texts "
        "the filter's ITM head judges matching, write bootstrapped.json, webdataset "
        "shards and provenance.jsonl. Give --captioner and --filter, or --pretrained "
        "and --human to fine-tune both first. Resumes after a kill; runs under torchrun.",
    )
    p.add_argument("--web", action="append", required=True, help="web pairs: JSON list, CSV/JSONL or tar shards")
    p.add_argument(
        "--image-root",
        default=None,
        help="folder the web (and human) image paths are relative to (default: each annotation file's "
        "own folder, as `blip data check`)",
    )
    p.add_argument("--human", action="append", default=[], help="clean annotated pairs (JSON list)")
    p.add_argument("--out", required=True)
    p.add_argument("--captioner", help="captioning model (fine-tuned LM)")
    p.add_argument("--filter", dest="filter_model", help="filter model (fine-tuned ITC + ITM)")
    p.add_argument("--pretrained", help="pretrained model to fine-tune captioner and filter from, on --human")
    p.add_argument(
        "--captioner-recipe",
        default=None,
        help="fine-tuning recipe of the captioner (default: configs/caption_tiny_synth.yaml of blip)",
    )
    p.add_argument(
        "--filter-recipe",
        default=None,
        help="fine-tuning recipe of the filter (default: configs/retrieval_tiny_synth.yaml of blip)",
    )
    p.add_argument("--captions-per-image", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.5, help="minimum ITM match probability kept (0.5)")
    p.add_argument(
        "--strategy", default="nucleus", choices=["nucleus", "beam"], help="how captions are drawn (paper: nucleus)"
    )
    p.add_argument("--num-beams", type=int, default=3, help="beams of --strategy beam (3)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--unit-size", type=int, default=512, help="images per resumable unit of a list (default 512)")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default 2; 0: in this one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import blip
    from blip.inference.engine import join_ranks, report_skips
    from blip.tasks.capfilt import CapFiltConfig, run_capfilt

    for name, value in (
        ("--batch-size", args.batch_size),
        ("--unit-size", args.unit_size),
        ("--captions-per-image", args.captions_per_image),
        ("--num-beams", args.num_beams),
    ):
        if value < 1:
            raise BlipError(f"{name} must be at least 1")
    if args.workers < 0:
        raise BlipError("--workers must be 0 or more")
    join_ranks()
    captioner, filt = args.captioner, args.filter_model
    if captioner is None or filt is None:
        if not (args.pretrained and args.human):
            raise BlipError("give --captioner and --filter, or --pretrained and --human to fine-tune them")
        captioner, filt = finetune_pair(
            args.pretrained, args.human, args.image_root, args.out, args.captioner_recipe, args.filter_recipe
        )
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    cfg = CapFiltConfig(
        out=args.out,
        web=args.web,
        image_root=args.image_root,
        human=args.human,
        captions_per_image=args.captions_per_image,
        threshold=args.threshold,
        strategy=args.strategy,
        num_beams=args.num_beams,
        top_p=args.top_p,
        batch_size=args.batch_size,
        unit_size=args.unit_size,
        seed=args.seed,
        workers=args.workers,
    )
    summary = run_capfilt(
        cfg, blip.load(captioner, device=args.device, dtype=dtype), blip.load(filt, device=args.device, dtype=dtype)
    )
    if not summary:  # ranks other than 0
        return 0
    print(json.dumps(summary, indent=1))
    skipped = summary["skipped"]
    return report_skips(skipped, summary["web_total"] + sum(skipped.values()), "web samples", fail_on_any=False)


def default_recipe(name: str) -> str:
    """A recipe shipped in blip's configs/ folder, found from the working directory or from this source tree."""
    for folder in (Path("configs"), Path(__file__).resolve().parents[3] / "configs"):
        if (folder / name).is_file():
            return str(folder / name)
    raise BlipError(f"cannot find blip's configs/{name}; give --captioner-recipe and --filter-recipe")


def finetune_pair(
    pretrained: str,
    human: list[str],
    image_root: str | None,
    out: str,
    caption_recipe: str | None,
    filter_recipe: str | None,
) -> tuple[str, str]:
    """Fine-tune the captioner (LM) and the filter (ITC + ITM) separately from one pretrained model."""
    from dataclasses import replace

    from blip.recipes import Source, finetune_recipe, load_recipe
    from blip.tasks.finetune import finetune

    data = [
        Source(reader="pretrain_json", path=h, image_root=image_root if image_root is not None else str(Path(h).parent))
        for h in human
    ]
    jobs = []  # both recipes are checked before either model is trained
    for recipe_file, task, name in (
        (caption_recipe or default_recipe("caption_tiny_synth.yaml"), "caption", "captioner"),
        (filter_recipe or default_recipe("retrieval_tiny_synth.yaml"), "retrieval", "filter"),
    ):
        recipe = finetune_recipe(task).parse(load_recipe(recipe_file, []))
        train = replace(recipe.train, out=f"{out}/{name}")
        jobs.append((task, name, replace(recipe, init=pretrained, data=data, train=train)))
    paths = [
        str(finetune(task, recipe, resume=any((Path(out) / name).glob("checkpoint-*")))) for task, name, recipe in jobs
    ]
    return paths[0], paths[1]
