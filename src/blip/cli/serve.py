"""`blip serve`: the HTTP API and web page for caption, ask, match (with Grad-CAM heat maps) and search."""

from __future__ import annotations

import argparse
import sys

from blip.cli.common import add_model_args, open_model
from blip.errors import BlipError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web page and HTTP API (caption, ask, match, Grad-CAM, search)",
        description="Serve a page and a JSON API on localhost: /api/caption, /api/ask, /api/match, "
        "/api/gradcam, /api/search (images as a multipart field named 'image'), /health. "
        "Each model is loaded once; requests queue for it.",
    )
    add_model_args(p)
    p.add_argument("--vqa-model", help="a VQA checkpoint for /api/ask (default: --model, if it is one)")
    p.add_argument("--match-model", help="an ITM/ITC checkpoint for match, Grad-CAM and search (default: --model)")
    p.add_argument("--index", help="a search index folder (blip.Index; enables /api/search)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload, in MB")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from blip.serve import create_app
    except ModuleNotFoundError as e:
        raise BlipError(f"blip serve needs {e.name}: pip install 'blip[serve]'") from None
    model = open_model(args)
    vqa = open_model(_with_model(args, args.vqa_model)) if args.vqa_model else None
    matcher = open_model(_with_model(args, args.match_model)) if args.match_model else None
    index = None
    if args.index:
        from blip import Index  # built only for search, so loaded only when asked for

        index = Index.open(args.index)
    app = create_app(
        model, vqa_model=vqa, match_model=matcher, index=index, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024)
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"blip serve: listening on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"blip serve: http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _with_model(args: argparse.Namespace, source: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "model": source})
