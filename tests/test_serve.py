"""`blip serve`'s API through FastAPI's test client: answers equal the Blip methods' on the same image bytes; bad
uploads get a 4xx answer; model calls never overlap."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import blip
from blip.serve import create_app

TEXTS = ["a red square on the left", "two dog", "the blue circle"]


def png_bytes(seed: int = 0, size: tuple[int, int] = (48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def decode_data_url(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.fixture(scope="module")
def models(hf_models):
    return {kind: blip.load(hf_models[kind][1]) for kind in ("caption", "vqa", "retrieval")}


@pytest.fixture(scope="module")
def client(models):
    app = create_app(models["caption"], vqa_model=models["vqa"], match_model=models["retrieval"])
    return TestClient(app)


def upload(data: bytes, name: str = "x.png"):
    return {"image": (name, data, "image/png")}


def test_health_says_what_is_loaded(client, models):
    assert client.get("/health").json() == {
        "status": "ok",
        "caption": True,
        "ask": True,
        "match": True,
        "itc": True,
        "search": False,
        "index_size": None,
    }
    only_captions = TestClient(create_app(models["caption"])).get("/health").json()
    assert only_captions["caption"] and not only_captions["ask"] and not only_captions["match"]


def test_page_and_assets_are_served_without_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        body = client.get(asset)
        assert body.status_code == 200
        assert "http://" not in body.text and "https://" not in body.text  # no CDN, no web fonts
    assert "http://" not in page.text and "https://" not in page.text


def test_caption_equals_blip_caption(client, models):
    data = png_bytes(1)
    got = client.post("/api/caption", files=upload(data), data={"num_beams": 2, "max_length": 12, "min_length": 3})
    assert got.status_code == 200
    want = models["caption"].caption([data], num_beams=2, max_length=12, min_length=3)
    assert got.json()["captions"] == [
        {
            "text": c.text,
            "logprob": pytest.approx(c.logprob, abs=1e-5),
            "mean_logprob": pytest.approx(c.mean_logprob, abs=1e-5),
            "itm": c.itm,
            "ids": c.ids,
            "score": pytest.approx(c.score, abs=1e-5),
            "error": None,
        }
        for c in want
    ]
    sampled = client.post(
        "/api/caption", files=upload(data), data={"strategy": "nucleus", "num_captions": 3, "seed": 7}
    ).json()["captions"]
    want = models["caption"].caption(
        [data], strategy="nucleus", num_captions=3, generator=torch.Generator().manual_seed(7)
    )
    assert [c["text"] for c in sampled] == [c.text for c in want]


def test_ask_generates_or_ranks_like_blip_ask(client, models):
    data = png_bytes(2)
    got = client.post("/api/ask", files=upload(data), data={"question": "what colour is the square?"}).json()
    (want,) = models["vqa"].ask([data], ["what colour is the square?"])
    assert got["answer"] == want.text and got["logprob"] == pytest.approx(want.logprob, abs=1e-5)
    assert got["ranked"] is False
    answers = ["red", "blue", "green square", "two"]
    got = client.post(
        "/api/ask", files=upload(data), data={"question": "what is there?", "answers": "\n".join(answers) + "\n\n"}
    ).json()
    (want,) = models["vqa"].ask([data], ["what is there?"], answers=answers)
    assert got["ranked"] is True and got["answer"] == want.text
    assert got["logprob"] == pytest.approx(want.logprob, abs=1e-5)


def test_match_scores_and_heat_maps_equal_blip(client, models):
    data = png_bytes(3)
    got = client.post("/api/match", files=upload(data), data={"text": TEXTS, "layer": 0})
    assert got.status_code == 200
    results = got.json()["results"]
    m = models["retrieval"]
    want, cams = m.match([data], TEXTS), m.gradcam(data, TEXTS, layer=0)
    assert [r["text"] for r in results] == TEXTS
    for r, w, cam in zip(results, want, cams):
        assert r["itm"] == pytest.approx(w["itm"], abs=1e-6) and r["itc"] == pytest.approx(w["itc"], abs=1e-6)
        g = r["gradcam"]
        assert g["tokens"] == cam.tokens and g["layer"] == 0
        np.testing.assert_allclose(g["mean"], cam.mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(g["per_token"], cam.per_token.numpy(), atol=1e-6)
        assert decode_data_url(g["overlay"]).size == (48, 40)
    bare = client.post("/api/match", files=upload(data), data={"text": TEXTS[:1], "heatmaps": False}).json()
    assert "gradcam" not in bare["results"][0]


def test_gradcam_endpoint_gives_every_token(client, models):
    data = png_bytes(4)
    got = client.post("/api/gradcam", files=upload(data), data={"text": TEXTS[0]}).json()
    cam = models["retrieval"].gradcam(data, TEXTS[0])
    assert got["tokens"] == cam.tokens == TEXTS[0].split()
    np.testing.assert_allclose(got["enc"], cam.enc.numpy(), atol=1e-6)
    assert got["itm"] == pytest.approx(cam.itm, abs=1e-6)
    assert len(got["token_overlays"]) == len(cam.tokens)
    assert decode_data_url(got["token_overlays"][-1]).size == (48, 40)


def test_bad_uploads_get_4xx(models, client):
    text = {"text": "a dog"}
    cases = [
        (upload(b"this is not an image", "notes.txt"), 415),
        (upload(b"", "empty.png"), 400),
        (upload(png_bytes()[:60], "truncated.png"), 400),
    ]
    for files, status in cases:
        r = client.post("/api/match", files=files, data=text)
        assert r.status_code == status, r.text
        assert r.json()["error"]
    assert client.post("/api/caption", data={}).status_code == 422  # no image field at all
    assert client.post("/api/match", files=upload(png_bytes())).status_code == 422  # no text
    assert client.post("/api/caption", files=upload(png_bytes()), data={"strategy": "greedy"}).status_code == 400
    assert client.post("/api/search", data={"text": "a dog"}).status_code == 404  # no index loaded
    small = TestClient(create_app(models["caption"], match_model=models["retrieval"], max_upload_bytes=1000))
    big = png_bytes(size=(200, 200))
    r = small.post("/api/caption", files=upload(big))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    # A caption-only server answers match and ask with a clear 400, not a crash.
    captioner = TestClient(create_app(models["caption"]))
    r = captioner.post("/api/match", files=upload(png_bytes()), data=text)
    assert r.status_code == 400 and "itm" in r.json()["error"]
    assert captioner.post("/api/ask", files=upload(png_bytes()), data={"question": "what?"}).status_code == 400


def test_concurrent_requests_queue_for_the_model(models):
    """Eight clients at once: every answer is right and the model never runs two requests at the same time."""
    m = models["retrieval"]
    active, peak, guard = [0], [0], threading.Lock()
    original = m.match

    def counting_match(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.05)  # widens the window in which an unqueued second request would overlap
            return original(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    m.match = counting_match
    try:
        client = TestClient(create_app(None, match_model=m))
        images = [png_bytes(s) for s in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda d: client.post("/api/match", files=upload(d), data={"text": "a dog", "heatmaps": False}),
                    images,
                )
            )
    finally:
        del m.match
    assert peak[0] == 1
    for data, r in zip(images, answers):
        assert r.status_code == 200
        assert r.json()["results"][0]["itm"] == pytest.approx(original([data], ["a dog"])[0]["itm"], abs=1e-6)
