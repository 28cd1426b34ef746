"""`blip data`: generate the synthetic world (`synth`) and validate a dataset (`check`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from blip.cli.common import nonnegative_int, positive_int


def _synth(args: argparse.Namespace) -> int:
    """Generate the synthetic world and print what was written."""
    from blip.data.synth import generate
    from blip.errors import BlipError

    out = Path(args.out)
    if out.is_file():
        raise BlipError(f"{out}: is a file, not a folder")
    # Files of an earlier, larger world would stay behind among the new ones and be read as part of it.
    if out.is_dir() and (entries := sorted(p.name for p in out.iterdir())):
        raise BlipError(
            f"{out}: folder is not empty ({len(entries)} entries, e.g. {entries[0]!r}); write the "
            f"synthetic world to a new or empty folder"
        )
    start = time.perf_counter()
    manifest = generate(
        args.out,
        num_images=args.images,
        seed=args.seed,
        noise=args.noise,
        size=args.size,
        num_videos=args.videos,
        workers=args.workers,
        web_fraction=args.web_fraction,
    )
    elapsed = time.perf_counter() - start
    splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    print(
        f"wrote {manifest['num_images']} images ({splits}) and {manifest['num_videos']} videos to {args.out} "
        f"in {elapsed:.1f} s; {manifest['noisy_web_texts']} of {manifest['splits']['web']} web texts are noisy "
        f"(labels in web_noise_labels.json)"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate a dataset and print counts by reason; exit 1 if anything was skipped."""
    from blip.data.check import check_path
    from blip.data.robust import SkipCounter

    reports = check_path(args.path, image_root=args.image_root, workers=args.workers, limit=args.limit)
    total = SkipCounter()
    for report in reports:
        print(report.line())
        total.merge(report.counter)
    if args.json:
        print(json.dumps({"files": {r.path: r.counter.as_dict() for r in reports}, "total": total.as_dict()}))
    print(f"total: {total.summary()}")
    for reason, examples in sorted(total.examples.items()):
        for message in examples:
            print(f"  {reason}: {message}", file=sys.stderr)
    return 1 if total.total_skipped else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `blip data synth` and `blip data check`."""
    parser = subparsers.add_parser("data", help="generate the synthetic world, validate datasets")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = sub.add_parser("synth", help="write the synthetic world (images, captions, VQA, NLVR2, videos, web)")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--images", type=positive_int, default=1000, help="number of still images (default 1000)")
    synth.add_argument(
        "--seed", type=nonnegative_int, default=0, help="random seed; the same seed gives the same bytes"
    )
    synth.add_argument("--noise", type=float, default=0.3, help="fraction of corrupted web texts (default 0.3)")
    synth.add_argument(
        "--web-fraction",
        type=float,
        default=0.5,
        help="fraction of the images that are web images with one noisy text each (default 0.5)",
    )
    synth.add_argument("--size", type=positive_int, default=64, help="image side in pixels (even; default 64)")
    synth.add_argument(
        "--videos", type=nonnegative_int, default=None, help="number of videos (default images/50, at least 4)"
    )
    synth.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores, at most 8)")
    synth.set_defaults(func=_synth)

    check = sub.add_parser("check", help="validate a dataset and print skipped samples by reason")
    check.add_argument(
        "path", help="synthetic-world folder, annotation file (.json/.jsonl/.csv), .tar shard or folder of shards"
    )
    check.add_argument(
        "--image-root", default=None, help="folder image paths are relative to (default: the annotation file's folder)"
    )
    check.add_argument("--workers", type=positive_int, default=1, help="decoding processes (default 1)")
    check.add_argument(
        "--limit", type=positive_int, default=None, help="decode at most this many files per annotation file"
    )
    check.add_argument("--json", action="store_true", help="also print the counts as one JSON line")
    check.set_defaults(func=_check)
