"""Latency of each `blip serve` endpoint next to the Blip method it wraps, measured side by side in one run.

    python benchmarks/bench_serve.py --preset tiny [--reps 10] [--threads 2]

A real uvicorn server in a thread, requests over HTTP with httpx, one client at a time; the peer is the same
Blip call on the same (already decoded) image, alternated with the request. Random weights: latency does not
depend on them. Prints a Markdown table (median ms over reps; ratio = endpoint / direct call).
"""

from __future__ import annotations

import argparse
import io
import platform
import socket
import statistics
import threading
import time

import httpx
import torch
import uvicorn
from PIL import Image, ImageDraw

import blip
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.serve import create_app
from blip.tokenizer import Tokenizer

WORDS = ["a", "picture", "of", "red", "blue", "square", "circle", "on", "the", "left", "right", "what", "colour", "is"]


def scene() -> bytes:
    im = Image.new("RGB", (640, 480), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    draw.rectangle((60, 140, 260, 340), fill=(220, 30, 30))
    draw.ellipse((380, 120, 600, 340), fill=(30, 70, 225))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def models(name: str) -> tuple[blip.Blip, blip.Blip]:
    tok = Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])
    torch.manual_seed(0)
    main = blip.Blip(BlipModel(preset(name)), tok)
    vqa = blip.Blip(BlipModel(preset(name, task="vqa")), tok)
    return main, vqa


def serve(app) -> tuple[str, uvicorn.Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, vqa = models(args.preset)
    url, server = serve(create_app(model, vqa_model=vqa))
    data = scene()
    image = blip.images.load_image(data)
    files = {"image": ("scene.jpg", data, "image/jpeg")}
    texts = ["a red square on the left", "a blue circle"]
    cases = {
        "/health": (lambda c: c.get("/health"), None),
        "/api/caption (beam 3, max 20)": (
            lambda c: c.post("/api/caption", files=files),
            lambda: model.caption([image]),
        ),
        "/api/ask (generate)": (
            lambda c: c.post("/api/ask", files=files, data={"question": "what colour is it?"}),
            lambda: vqa.ask([image], ["what colour is it?"]),
        ),
        "/api/match (2 texts, no maps)": (
            lambda c: c.post("/api/match", files=files, data={"text": texts, "heatmaps": False}),
            lambda: model.match([image], texts),
        ),
        "/api/match (2 texts + Grad-CAM)": (
            lambda c: c.post("/api/match", files=files, data={"text": texts}),
            lambda: (model.match([image], texts), model.gradcam(image, texts)),
        ),
        "/api/gradcam (1 text, every token)": (
            lambda c: c.post("/api/gradcam", files=files, data={"text": texts[0]}),
            lambda: model.gradcam(image, texts[0]),
        ),
    }
    print(
        f"preset {args.preset}, {args.threads} threads, {args.reps} reps, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| endpoint | endpoint ms (median) | direct call ms | ratio |\n|---|---|---|---|")
    with httpx.Client(base_url=url, timeout=600) as client:
        for name, (request, direct) in cases.items():
            assert request(client).status_code == 200  # warm-up (and a check that it works)
            if direct is not None:
                direct()
            ours, peer = [], []
            for _ in range(args.reps):
                ours.append(timed(lambda request=request: request(client).raise_for_status()))
                if direct is not None:
                    peer.append(timed(direct))
            m = statistics.median(ours)
            if peer:
                p = statistics.median(peer)
                print(f"| {name} | {m:.1f} | {p:.1f} | {m / p:.2f} |", flush=True)
            else:
                print(f"| {name} | {m:.1f} | - | - |", flush=True)
    server.should_exit = True


if __name__ == "__main__":
    main()
