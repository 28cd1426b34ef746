"""`/api/search` on a tiny index built by `Blip.index`: the hits equal `Index.search`'s, with thumbnails."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import blip
from blip.serve import create_app


def write_images(folder, n: int = 6) -> list[bytes]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        im = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
        im.save(folder / f"{i:02d}.png")
        out.append((folder / f"{i:02d}.png").read_bytes())
    return out


@pytest.fixture(scope="module")
def served(hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    model = blip.load(hf_models["retrieval"][1])
    images = write_images(root / "images")
    model.index([str(root / "images")], root / "index", batch_size=4)
    index = blip.Index.open(root / "index")
    return model, index, images, TestClient(create_app(None, match_model=model, index=index))


def test_health_counts_the_index(served):
    _, index, images, client = served
    health = client.get("/health").json()
    assert health["search"] is True and health["index_size"] == len(index) == len(images)


@pytest.mark.parametrize("query", ["text", "image"])
def test_search_hits_equal_index_search(served, query):
    model, index, images, client = served
    if query == "text":
        got = client.post("/api/search", data={"text": "a red square", "top_k": 3, "rerank_k": 4})
        want = index.search(model, text="a red square", top_k=3, rerank_k=4)
    else:
        got = client.post(
            "/api/search", files={"image": ("q.png", images[2], "image/png")}, data={"top_k": 3, "rerank_k": 4}
        )
        want = index.search(model, image=images[2], top_k=3, rerank_k=4)
    assert got.status_code == 200, got.text
    hits = got.json()["hits"]
    assert [(h["rank"], h["key"], h["path"]) for h in hits] == [(w.rank, w.key, w.path) for w in want]
    assert [h["itc"] for h in hits] == pytest.approx([w.itc for w in want], abs=1e-6)
    assert [h["itm"] for h in hits] == pytest.approx([w.itm for w in want], abs=1e-6)
    for h, w in zip(hits, want):
        head, data = h["thumbnail"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        thumb = Image.open(io.BytesIO(base64.b64decode(data)))
        full = index.image(w)
        assert max(thumb.size) <= 160 and abs(thumb.size[0] / thumb.size[1] - full.size[0] / full.size[1]) < 0.1


def test_search_needs_exactly_one_query(served):
    _, _, images, client = served
    assert client.post("/api/search", data={"top_k": 3}).status_code == 400
    both = client.post("/api/search", files={"image": ("q.png", images[0], "image/png")}, data={"text": "a dog"})
    assert both.status_code == 400
    assert client.post("/api/search", files={"image": ("q.png", b"nope", "image/png")}).status_code == 415
