"""The search index: results equal a brute-force ranking by transformers' BLIP; incremental, kill-safe, refusing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.cli import main
from blip.errors import BlipError
from blip.index import Index, IndexWriter
from conftest import ENC, make_hf

TOL = 2e-3  # stored features are float16: cosines within about 1e-3 of float32


def random_image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def write_shard(path: Path, seeds: list[int]) -> None:
    """A webdataset shard in the img2dataset layout: KEY.jpg + KEY.txt."""
    with tarfile.open(path, "w") as tar:
        for i, seed in enumerate(seeds):
            buf = io.BytesIO()
            random_image(seed).save(buf, "JPEG", quality=95)
            for name, data in ((f"{i:06d}.jpg", buf.getvalue()), (f"{i:06d}.txt", b"a picture")):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 1_700_000_000
                tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def collection(tmp_path):
    """Six PNG files (one in a subfolder) and a shard of three JPEGs."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(6):
        random_image(i).save(photos / ("sub" if i == 5 else "") / f"{i}.png")
    write_shard(tmp_path / "shard.tar", [10, 11, 12])
    return [str(photos), str(tmp_path / "shard.tar")]


def reference_scores(hf, model, index: Index, text: str) -> tuple[dict, dict]:
    """key -> ITC cosine and key -> ITM match logit of every indexed image, from transformers' BLIP."""
    ids, mask = model.tokenizer([text], max_length=35)
    enc = ids.clone()
    enc[:, 0] = ENC
    itc, itm = {}, {}
    with torch.no_grad():
        for key in index.keys:
            px = model.pixels([index.image(blip.SearchHit(0, key, None, 0.0, None))])
            itc[key] = float(hf(input_ids=ids, pixel_values=px, attention_mask=mask, use_itm_head=False).itm_score)
            logits = hf(input_ids=enc, pixel_values=px, attention_mask=mask).itm_score[0]
            itm[key] = (float(logits[1]), float(logits.softmax(-1)[1]))  # (match logit, match probability)
    return itc, itm


def assert_ranked_like(hits, ref: dict[str, float], tol: float) -> None:
    """Hits are the reference's best len(hits), in its order (up to ties within tol), with its scores."""
    best = sorted(ref.values(), reverse=True)[: len(hits)]
    assert np.allclose([ref[h.key] for h in hits], best, atol=tol)
    assert np.allclose([h.itc for h in hits], [ref[h.key] for h in hits], atol=tol)


def test_search_equals_transformers_brute_force(hf_models, collection, tmp_path):
    hf, folder = hf_models["retrieval"]
    model = blip.load(folder)
    index = model.index(collection, tmp_path / "idx", batch_size=4, shard_size=4)
    assert len(index) == 9 and index.build_report.embedded == 9
    text = "the red square on the left"
    itc, itm = reference_scores(hf, model, index, text)

    # ITC alone: every image ranked by cosine.
    hits = index.search(model, text=text, top_k=9, rerank_k=0)
    assert [h.rank for h in hits] == list(range(1, 10)) and all(h.itm is None for h in hits)
    assert_ranked_like(hits, itc, TOL)

    # ITM re-ranking of the ITC top 4 by match logit + cosine (the paper's evaluation); the rest keep ITC order.
    hits = index.search(model, text=text, top_k=9, rerank_k=4)
    top4 = [h.key for h in index.search(model, text=text, top_k=4, rerank_k=0)]
    assert sorted(h.key for h in hits[:4]) == sorted(top4)
    expected = sorted(top4, key=lambda k: -(itm[k][0] + itc[k]))
    assert [h.key for h in hits[:4]] == expected
    for h in hits[:4]:
        assert h.itm == pytest.approx(itm[h.key][1], abs=1e-4)  # a probability
        assert h.itc == pytest.approx(itc[h.key], abs=1e-4)  # re-ranked hits carry the float32 cosine
    assert all(h.itm is None for h in hits[4:])
    assert_ranked_like(hits[4:], {k: v for k, v in itc.items() if k not in top4}, TOL)

    # Image to image: cosine of transformers' projected image features; no re-ranking.
    query = collection[0] + "/3.png"
    with torch.no_grad():
        feats = torch.nn.functional.normalize(
            hf.vision_proj(
                hf.vision_model(
                    model.pixels([query] + [index.image(blip.SearchHit(0, k, None, 0, None)) for k in index.keys])
                )[0][:, 0]
            ),
            dim=-1,
        )
    ref = dict(zip(index.keys, (feats[1:] @ feats[0]).tolist()))
    hits = index.search(model, image=query, top_k=5)
    assert hits[0].key == os.path.abspath(query) and all(h.itm is None for h in hits)
    assert_ranked_like(hits, ref, TOL)
    # Shard members have no file path; their image comes from the shard.
    member = next(h for h in index.search(model, image=query, top_k=9) if h.key.startswith(collection[1]))
    assert member.path is None and member.key.split("#")[1] in {"000000", "000001", "000002"}
    assert index.image(member).size == (40, 40)


def count_embedded(model) -> list[int]:
    """Wrap the model's image encoder to count the images it encodes."""
    seen = [0]
    encode = model.model.encode_image

    def counting(pixels):
        seen[0] += len(pixels)
        return encode(pixels)

    model.model.encode_image = counting
    return seen


def all_hits(index: Index, model, text: str = "two blue circles") -> list[tuple[str, float]]:
    return [(h.key, h.itc) for h in index.search(model, text=text, top_k=len(index), rerank_k=0)]


def test_incremental_reindex_embeds_only_changed_images(hf_models, collection, tmp_path):
    model = blip.load(hf_models["retrieval"][1])
    photos = Path(collection[0])
    model.index(collection, tmp_path / "idx", batch_size=4, shard_size=4)
    random_image(100).save(photos / "1.png")  # changed content
    random_image(101).save(photos / "new.png")  # added
    (photos / "2.png").unlink()  # removed
    os.utime(photos / "3.png", (1_800_000_000, 1_800_000_000))  # touched, same content
    seen = count_embedded(model)
    index = model.index(collection, tmp_path / "idx", batch_size=4, shard_size=4)
    report = index.build_report
    assert seen[0] == 2 and (report.embedded, report.reused, report.removed) == (2, 7, 1)
    scratch = blip.load(hf_models["retrieval"][1]).index(collection, tmp_path / "scratch", batch_size=3)
    assert len(index) == len(scratch) == 9
    a, b = all_hits(index, model), all_hits(scratch, model)
    assert [k for k, _ in a] == [k for k, _ in b] and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)
    # Nothing changed: nothing embedded, and unused shards were deleted.
    seen[0] = 0
    again = model.index(collection, tmp_path / "idx", batch_size=4, shard_size=4)
    assert seen[0] == 0 and again.build_report.embedded == 0 and all_hits(again, model) == a
    assert len(list((tmp_path / "idx" / "shards").glob("emb-*.npy"))) == len(again._shards)


KILLER = """
import os, signal, sys
import blip, blip.index as bi
write = bi._write_parquet
def dying(path, *a, **k):
    if path.name == "meta-000002.parquet":  # vectors of the third shard written, its metadata not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, *a, **k)
bi._write_parquet = dying
blip.load(sys.argv[1]).index(sys.argv[2:-1], sys.argv[-1], batch_size=2, shard_size=2)
"""


def test_kill_9_during_indexing_loses_nothing_written(hf_models, collection, tmp_path):
    folder = hf_models["retrieval"][1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(blip.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(folder), *collection, str(tmp_path / "idx")], check=False, env=env
    )
    assert proc.returncode == -9
    assert (tmp_path / "idx" / "shards" / "emb-000002.npy").exists() and not (
        tmp_path / "idx" / "table.parquet"
    ).exists()
    with pytest.raises(BlipError, match="not a finished search index"):
        Index.open(tmp_path / "idx")
    model = blip.load(folder)
    seen = count_embedded(model)
    index = model.index(collection, tmp_path / "idx", batch_size=2, shard_size=2)
    assert index.build_report.reused == 4 and seen[0] == index.build_report.embedded == 5  # 2 shards of 2 kept
    assert not (tmp_path / "idx" / "shards" / "emb-000002.npy").exists()  # the orphan is gone
    scratch = blip.load(folder).index(collection, tmp_path / "scratch")
    a, b = all_hits(index, model), all_hits(scratch, model)
    assert [k for k, _ in a] == [k for k, _ in b] and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-3)


def test_index_of_another_model_is_refused(hf_models, collection, tmp_path, capsys):
    folder = hf_models["retrieval"][1]
    blip.load(folder).index(collection, tmp_path / "idx")
    other = tmp_path / "other"
    make_hf("retrieval", other, seed=7)
    index = Index.open(tmp_path / "idx")
    with pytest.raises(BlipError, match="built with another model .weights"):
        index.search(blip.load(other), text="a dog")
    with pytest.raises(BlipError, match="built with another model .weights"):
        blip.load(other).index(collection, tmp_path / "idx")
    with pytest.raises(BlipError, match="image size 32, this model's is 48"):
        index.search(blip.load(folder, image_size=48), text="a dog")
    # the same weights in bf16 may search the float32 index, with the same top hit, but not add to it
    bf16 = blip.load(folder, dtype="bfloat16")
    assert index.search(bf16, text="a dog")[0].key == index.search(blip.load(folder), text="a dog")[0].key
    with pytest.raises(BlipError, match="built in float32 and this model runs in bfloat16"):
        bf16.index(collection, tmp_path / "idx")
    capsys.readouterr()
    code = main(["search", str(tmp_path / "idx"), "a dog", "--model", str(other)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "another model" in err


def test_bad_images_are_skipped_and_counted(hf_models, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    random_image(0).save(photos / "good.png")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_bytes(b"not an image at all")
    buf = io.BytesIO()
    random_image(1, 64).save(buf, "PNG")
    (photos / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    write_shard(tmp_path / "full.tar", [2, 3])
    with tarfile.open(tmp_path / "full.tar") as tar:
        second = tar.getmember("000001.jpg")
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: second.offset_data + second.size // 2])  # the first image whole
    (tmp_path / "list.txt").write_text("photos/good.png\nphotos/gone.png\n# a comment\ncut.tar\n")
    model = blip.load(hf_models["retrieval"][1])
    index = model.index([str(photos), str(tmp_path / "list.txt")], tmp_path / "idx")
    assert len(index) == 2  # good.png (listed twice, kept once) and the whole member of the cut shard
    assert dict(index.build_report.skipped.skipped) == {
        "empty": 1,
        "not_image": 1,
        "truncated": 2,
        "missing": 1,
        "bad_shard": 1,
    }
    capsys.readouterr()
    for _ in range(2):  # the rerun reuses good.png and counts the same bad images
        code = main(["index", str(photos), "--model", str(hf_models["retrieval"][1]), "--out", str(tmp_path / "i2")])
        err = capsys.readouterr().err
        assert code == 1 and "3 of 4 inputs skipped (empty 1, not_image 1, truncated 1)" in err


def test_cli_index_then_search_with_the_recorded_model(hf_models, collection, tmp_path, capsys):
    folder = hf_models["retrieval"][1]
    assert main(["index", *collection, "--model", str(folder), "--out", str(tmp_path / "idx")]) == 0
    assert "9 images; 9 embedded, 0 unchanged, 0 removed; search: exact" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "idx"), "a red square", "--top-k", "3", "--rerank-k", "5", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = blip.load(folder)
    expected = Index.open(tmp_path / "idx").search(model, text="a red square", top_k=3, rerank_k=5)
    assert [r["key"] for r in rows] == [h.key for h in expected] and [r["rank"] for r in rows] == [1, 2, 3]
    assert all(0 <= r["itm"] <= 1 and -1 <= r["itc"] <= 1 for r in rows)
    assert main(["search", str(tmp_path / "idx"), "--image", collection[0] + "/0.png", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "ITC cosine similarity (not a probability)" in out[0] and "ITM match probability" in out[0]
    assert out[1].split("\t")[0] == "1" and out[1].endswith("/0.png") and "itm=-" in out[1]
    assert main(["search", str(tmp_path / "idx"), "a", "--image", "x.png"]) == 2


def test_faiss_recall_at_10_on_random_unit_vectors(tmp_path):
    rng = np.random.default_rng(0)
    n, dim = 20_000, 32
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = IndexWriter(tmp_path / "idx", {"weights": "random"}, dim)
    items = [blip.index.Item(f"{i:06d}", f"/nowhere/{i}.png", -1, 1, 0.0, "") for i in range(n)]
    rows = []
    for start in range(0, n, 5000):
        places = writer.add(items[start : start + 5000], vectors[start : start + 5000])
        rows += [{**vars(it), "shard": s, "row": r} for it, (s, r) in zip(items[start : start + 5000], places)]
    report = writer.commit(rows, nn="faiss", recall_target=0.95)
    assert report.nn == "faiss" and report.recall_at_10 >= 0.95
    index = Index.open(tmp_path / "idx")
    assert index.faiss is not None and index.faiss.nprobe == report.nprobe
    stored = vectors.astype(np.float16).astype(np.float32)
    queries = rng.standard_normal((100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    recall = []
    for q in queries:
        truth = np.argsort(-(stored @ q), kind="stable")[:10]
        assert np.array_equal(index.nearest(q, 10, exact=True)[1], truth)  # exact: numpy's ranking
        recall.append(len(np.intersect1d(index.nearest(q, 10)[1], truth)) / 10)
    assert np.mean(recall) >= 0.9
    # An exact index of the same vectors carries no faiss index.
    assert writer.commit(rows, nn="exact").nn == "exact" and Index.open(tmp_path / "idx").faiss is None
