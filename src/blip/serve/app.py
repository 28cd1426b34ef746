"""The HTTP API and page of `blip serve`: caption, ask, match with Grad-CAM heat maps, and index search.

Every model call goes through one lock, so concurrent requests queue instead of running the model at once (on a
CPU they would only fight over the same cores). Endpoints are plain `def`s: FastAPI runs them in its thread pool,
which keeps the event loop free to accept and refuse uploads while a request computes.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from blip.api import Blip
from blip.defaults import PROMPT
from blip.errors import BlipError, ImageError
from blip.gradcam import GradCam, overlay
from blip.images import load_image

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
THUMBNAIL = 160  # longest side of search thumbnails, pixels
OVERLAY = 512  # longest side of heat-map overlays, pixels
# HTTP status per image problem: too big is 413, not an image 415, anything else wrong with the bytes 400.
IMAGE_STATUS = {"too_large": 413, "not_image": 415}


# Request fields: the image as a multipart file named "image", the rest as form fields.
Upload = Annotated[UploadFile, File()]
MaybeUpload = Annotated[UploadFile | None, File()]
FormStr = Annotated[str, Form()]
FormStrs = Annotated[list[str], Form()]
FormInt = Annotated[int, Form()]
FormFloat = Annotated[float, Form()]
FormBool = Annotated[bool, Form()]
MaybeInt = Annotated[int | None, Form()]
MaybeStr = Annotated[str | None, Form()]


class HTTPProblem(Exception):
    """A request the server refuses, with its status code and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(
    model: Blip | None,
    vqa_model: Blip | None = None,
    match_model: Blip | None = None,
    index: Any = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The FastAPI app; `match_model` (ITM/ITC, Grad-CAM, search) defaults to `model`, `vqa_model` too."""
    match_model = match_model or model
    vqa_model = vqa_model or model
    lock = threading.Lock()
    app = FastAPI(title="blip serve", docs_url="/docs", redoc_url=None)
    static = resources.files("blip.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(HTTPProblem)
    def _problem(request: Request, exc: HTTPProblem) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(BlipError)
    def _blip_error(request: Request, exc: BlipError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.middleware("http")
    async def _refuse_large_bodies(request: Request, call_next: Callable) -> Any:
        # Refused before the body is read when the client declares its size; read_image checks the rest.
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            return JSONResponse(
                {"error": f"upload of {int(length)} bytes exceeds the limit of {max_upload_bytes}"}, status_code=413
            )
        return await call_next(request)

    def run(fn: Callable[[], Any]) -> Any:
        with lock:
            return fn()

    def need(m: Blip | None, part: str, what: str) -> Blip:
        if m is None or not m.model.has(part):
            raise HTTPProblem(400, f"{what} is not available: no loaded model has a {part}")
        return m

    def read_image(upload: UploadFile) -> Image.Image:
        data = upload.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPProblem(413, f"{upload.filename}: larger than the upload limit of {max_upload_bytes} bytes")
        try:
            return load_image(data)
        except ImageError as e:
            raise HTTPProblem(IMAGE_STATUS.get(e.reason, 400), f"{upload.filename}: {e}") from None

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """What is loaded, hence which endpoints work."""
        return {
            "status": "ok",
            "caption": model is not None and model.model.has("text_decoder") and model.cfg.decoder_input == "image",
            "ask": vqa_model is not None and vqa_model.cfg.decoder_input == "question",
            "match": match_model is not None and match_model.model.has("itm"),
            "itc": match_model is not None and match_model.model.has("itc"),
            "search": index is not None,
            "index_size": None if index is None else len(index),
        }

    @app.post("/api/caption")
    def caption(
        image: Upload,
        strategy: FormStr = "beam",
        num_beams: FormInt = 3,
        max_length: FormInt = 20,
        min_length: FormInt = 5,
        top_p: FormFloat = 0.9,
        num_captions: FormInt = 1,
        prompt: FormStr = PROMPT,
        seed: MaybeInt = None,
    ) -> dict[str, Any]:
        """Captions of the image with their log-probabilities (and ITM probability when the model has a head)."""
        if strategy not in ("beam", "nucleus"):
            raise HTTPProblem(400, f"strategy must be beam or nucleus, not {strategy!r}")
        if not 1 <= num_captions <= 16 or not 1 <= num_beams <= 16 or not 1 <= max_length <= 100:
            raise HTTPProblem(400, "num_captions and num_beams must be 1-16, max_length 1-100")
        m = need(model, "text_decoder", "captioning")
        im = read_image(image)

        def work():
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            return m.caption(
                [im],
                prompt=prompt,
                strategy=strategy,
                num_beams=num_beams,
                max_length=max_length,
                min_length=min_length,
                top_p=top_p,
                num_captions=num_captions,
                generator=gen,
            )

        return {"captions": [vars(c) for c in run(work)]}

    @app.post("/api/ask")
    def ask(
        image: Upload,
        question: FormStr,
        answers: MaybeStr = None,
        num_beams: FormInt = 3,
        max_length: FormInt = 10,
        k_test: FormInt = 128,
    ) -> dict[str, Any]:
        """The answer to a question: generated, or ranked from `answers` (one per line) when given."""
        m = need(vqa_model, "text_decoder", "question answering")
        if m.cfg.decoder_input != "question":
            raise HTTPProblem(400, "question answering is not available: start blip serve with --vqa-model")
        choices = None if answers is None else [a.strip() for a in answers.splitlines() if a.strip()] or None
        im = read_image(image)
        (a,) = run(
            lambda: m.ask([im], [question], answers=choices, num_beams=num_beams, max_length=max_length, k_test=k_test)
        )
        return {"question": question, "answer": a.text, "logprob": a.logprob, "ranked": choices is not None}

    @app.post("/api/match")
    def match(image: Upload, text: FormStrs, heatmaps: FormBool = True, layer: MaybeInt = None) -> dict[str, Any]:
        """ITM match probability and ITC cosine of the image with each text, with each text's Grad-CAM map."""
        texts = [t for t in text if t.strip()]
        if not texts:
            raise HTTPProblem(400, "give at least one non-empty text")
        m = need(match_model, "itm", "matching")
        im = read_image(image)

        def work():
            scores = m.match([im], texts)
            cams = m.gradcam(im, texts, layer=layer) if heatmaps else [None] * len(texts)
            return scores, cams

        scores, cams = run(work)
        results = []
        for t, s, cam in zip(texts, scores, cams):
            row: dict[str, Any] = {"text": t, **s}
            if cam is not None:
                row["gradcam"] = _cam_json(cam, im, per_token_overlays=False)
            results.append(row)
        return {"results": results}

    @app.post("/api/gradcam")
    def gradcam(image: Upload, text: FormStr, layer: MaybeInt = None) -> dict:
        """The Grad-CAM maps of one text: at [ENC], the mean over tokens and per token, with overlays."""
        m = need(match_model, "itm", "Grad-CAM")
        im = read_image(image)
        cam = run(lambda: m.gradcam(im, text, layer=layer))
        return {"text": text, **_cam_json(cam, im, per_token_overlays=True)}

    @app.post("/api/search")
    def search(
        text: MaybeStr = None, image: MaybeUpload = None, top_k: FormInt = 10, rerank_k: FormInt = 64
    ) -> dict[str, Any]:
        """The index's images nearest a text or an image (ITC, then ITM re-ranking), with thumbnails."""
        if index is None:
            raise HTTPProblem(404, "search is not available: start blip serve with --index")
        if (text is None or not text.strip()) == (image is None):
            raise HTTPProblem(400, "give exactly one of text and image")
        if not 1 <= top_k <= 100:
            raise HTTPProblem(400, "top_k must be 1-100")
        m = need(match_model, "itc", "search")
        query = read_image(image) if image is not None else None

        def work():
            hits = index.search(m, text=text if query is None else None, image=query, top_k=top_k, rerank_k=rerank_k)
            return [(h, index.image(h)) for h in hits]

        out = []
        for hit, im in run(work):
            thumb = im.copy()
            thumb.thumbnail((THUMBNAIL, THUMBNAIL))
            out.append(
                {
                    "rank": hit.rank,
                    "key": hit.key,
                    "path": hit.path,
                    "itc": hit.itc,
                    "itm": hit.itm,
                    "thumbnail": _data_url(thumb, "JPEG"),
                }
            )
        return {"hits": out}

    return app


def _cam_json(cam: GradCam, image: Image.Image, per_token_overlays: bool) -> dict[str, Any]:
    """A GradCam as JSON: its grids as nested lists, and the mean map (and each token's) overlaid as JPEG data."""
    image = image.copy()
    image.thumbnail((OVERLAY, OVERLAY))  # a phone photo's full size would only make the answer slow and large
    out: dict[str, Any] = {
        "itm": cam.itm,
        "layer": cam.layer,
        "tokens": cam.tokens,
        "enc": cam.enc.tolist(),
        "mean": cam.mean.tolist(),
        "per_token": cam.per_token.tolist(),
        "overlay": _data_url(overlay(image, cam.heatmap(image.size)), "JPEG"),
    }
    if per_token_overlays:
        out["token_overlays"] = [
            _data_url(overlay(image, cam.heatmap(image.size, i)), "JPEG") for i in range(len(cam.tokens))
        ]
    return out


def _data_url(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
