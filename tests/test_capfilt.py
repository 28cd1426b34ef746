"""CapFilt: verdicts follow the filter's ITM head; kill -9 mid-run and resume gives exactly the uninterrupted output."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest
import yaml

import blip
from blip.images import load_image


def capfilt_cmd(hf_models, synth_world, out, unit_size=4):
    return [
        sys.executable,
        "-m",
        "blip",
        "capfilt",
        "--captioner",
        str(hf_models["caption"][1]),
        "--filter",
        str(hf_models["retrieval"][1]),
        "--web",
        str(synth_world / "web.json"),
        "--image-root",
        str(synth_world),
        "--human",
        str(synth_world / "coco_karpathy_train.json"),
        "--out",
        str(out),
        "--unit-size",
        str(unit_size),
        "--captions-per-image",
        "2",
        "--batch-size",
        "4",
    ]


@pytest.fixture(scope="module")
def straight(hf_models, synth_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("capfilt_straight")
    r = subprocess.run(capfilt_cmd(hf_models, synth_world, out), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_verdicts_follow_the_filter(straight, hf_models, synth_world):
    rows = [json.loads(x) for x in (straight / "provenance.jsonl").read_text().splitlines()]
    web = json.loads((synth_world / "web.json").read_text())
    assert sum(r["source"] == "web" for r in rows) == len(web)
    assert sum(r["source"] == "synthetic" for r in rows) == 2 * len(web)
    filt = blip.load(hf_models["retrieval"][1])
    for r in rows[:6]:  # the ITM probability is the filter's, and kept means >= 0.5
        expected = filt.match([load_image(r["path"])], [r["text"]])[0]["itm"]
        assert r["itm"] == pytest.approx(expected, abs=1e-5)
        assert r["kept"] == (r["itm"] >= 0.5)
    boot = json.loads((straight / "bootstrapped.json").read_text())
    human = json.loads((synth_world / "coco_karpathy_train.json").read_text())
    assert len(boot) == sum(len(h["caption"]) if isinstance(h["caption"], list) else 1 for h in human) + sum(
        r["kept"] for r in rows
    )
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["web_kept"] + summary["synthetic_kept"] == sum(r["kept"] for r in rows)
    assert list((straight / "shards").glob("*.tar"))


def test_kill_and_resume_gives_the_uninterrupted_output(straight, hf_models, synth_world, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        capfilt_cmd(hf_models, synth_world, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parts").glob("*.jsonl"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "parts").glob("*.jsonl")))
    total = len(list((straight / "parts").glob("*.jsonl")))
    assert 2 <= done < total, "the kill must land mid-run"
    r = subprocess.run(capfilt_cmd(hf_models, synth_world, out), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("provenance.jsonl", "bootstrapped.json"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name


def web_shards(synth_world, folder, shards=2, per_shard=3):
    """Tar shards (KEY.jpg + KEY.txt) of the synthetic world's first web pairs; returns {key: (bytes, text)}."""
    web = json.loads((synth_world / "web.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    samples = {}
    for s in range(shards):
        with tarfile.open(folder / f"web-{s}.tar", "w") as tar:
            for k in range(per_shard):
                entry = web[s * per_shard + k]
                key = f"{s}{k:04d}"
                data = (synth_world / entry["image"]).read_bytes()
                samples[f"web-{s}.tar:{key}"] = (data, entry["caption"])
                for name, blob in ((f"{key}.jpg", data), (f"{key}.txt", entry["caption"].encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
    return samples


def shard_cmd(hf_models, shards, out, *extra):
    return [
        sys.executable,
        "-m",
        "blip",
        "capfilt",
        "--captioner",
        str(hf_models["caption"][1]),
        "--filter",
        str(hf_models["retrieval"][1]),
        "--web",
        shards,
        "--out",
        str(out),
        "--captions-per-image",
        "2",
        "--batch-size",
        "2",
        "--threshold",
        "0.3",
        *extra,
    ]


def read_tar(path):
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]


def test_shards_in_shards_out_with_the_image_bytes(hf_models, synth_world, tmp_path):
    samples = web_shards(synth_world, tmp_path / "in")
    out = tmp_path / "out"
    r = subprocess.run(
        shard_cmd(hf_models, str(tmp_path / "in" / "web-{0..1}.tar"), out), capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "provenance.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows if r["source"] == "web"] == list(samples)  # the input's order
    filt = blip.load(hf_models["retrieval"][1])
    for s in range(2):
        members = read_tar(out / "shards" / f"web-{s}.tar")
        kept = [
            (r, j)
            for key in samples
            if key.startswith(f"web-{s}.tar")
            for j, r in enumerate(x for x in rows if x["image"] == key)
            if r["kept"]
        ]
        assert [name for name, _ in members] == [
            f"{r['image'].split(':')[1]}_{j}.{ext}" for r, j in kept for ext in ("jpg", "txt", "json")
        ]
        for (r, _), i in zip(kept, range(0, len(members), 3)):
            image, text, meta = members[i][1], members[i + 1][1].decode(), json.loads(members[i + 2][1])
            assert image == samples[r["image"]][0]  # the input's bytes, unchanged
            assert text == r["text"] and meta["source"] == r["source"] and meta["shard"] == f"web-{s}.tar"
            assert meta["itm"] == pytest.approx(filt.match([load_image(image)], [text])[0]["itm"], abs=1e-5)
            assert meta["itm"] >= 0.3
    assert 0 < sum(r["kept"] for r in rows) < len(rows)  # the threshold keeps some and drops some
    # Shard inputs have no image paths: their pairs are the shards, not bootstrapped.json.
    assert json.loads((out / "bootstrapped.json").read_text()) == []


def test_kill_and_resume_over_shards_gives_the_uninterrupted_output(hf_models, synth_world, tmp_path):
    web_shards(synth_world, tmp_path / "in", shards=6, per_shard=4)
    pattern = str(tmp_path / "in" / "web-{0..5}.tar")
    straight = tmp_path / "straight"
    r = subprocess.run(shard_cmd(hf_models, pattern, straight), capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        shard_cmd(hf_models, pattern, out, "--workers", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "parts").glob("*.jsonl"))) < 2:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(list((out / "parts").glob("*.jsonl"))) < 6, "the kill must land mid-run"
    r = subprocess.run(shard_cmd(hf_models, pattern, out), capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "provenance.jsonl").read_bytes() == (straight / "provenance.jsonl").read_bytes()
    for s in range(6):
        assert read_tar(out / "shards" / f"web-{s}.tar") == read_tar(straight / "shards" / f"web-{s}.tar")
    assert not [p for p in (out / "shards").iterdir() if p.name.startswith(".")]  # no partial shard left


def test_relative_paths_resolve_against_the_annotation_folder(hf_models, synth_world, tmp_path):
    web = json.loads((synth_world / "web.json").read_text())[:4]
    data = tmp_path / "data"
    for entry in web:
        (data / entry["image"]).parent.mkdir(parents=True, exist_ok=True)
        (data / entry["image"]).write_bytes((synth_world / entry["image"]).read_bytes())
    (data / "web.json").write_text(json.dumps(web))
    base = [
        sys.executable,
        "-m",
        "blip",
        "capfilt",
        "--captioner",
        str(hf_models["caption"][1]),
        "--filter",
        str(hf_models["retrieval"][1]),
        "--web",
        str(data / "web.json"),
        "--batch-size",
        "4",
    ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The same blip as this test's, whatever the working folder (PYTHONPATH may be relative).
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(blip.__file__)))
    r = subprocess.run(
        base + ["--out", str(tmp_path / "ok")], cwd=elsewhere, capture_output=True, text=True, check=False, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["web_total"] == 4 and summary["skipped"] == {}
    boot = json.loads((tmp_path / "ok" / "bootstrapped.json").read_text())
    assert boot and all(os.path.isfile(b["image"]) for b in boot)  # loadable paths
    r = subprocess.run(
        base + ["--out", str(tmp_path / "bad"), "--image-root", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "4 of 4 web samples skipped (missing 4): nothing was usable" in r.stderr


def test_default_recipes_are_found_from_any_folder(tmp_path, monkeypatch):
    from blip.cli.capfilt import default_recipe

    monkeypatch.chdir(tmp_path)
    for name in ("caption_tiny_synth.yaml", "retrieval_tiny_synth.yaml"):
        path = default_recipe(name)
        with open(path) as f:
            assert os.path.isabs(path) and yaml.safe_load(f)["train"]["out"]


def test_beam_captions_are_the_captioners_beam_search(hf_models, synth_world, tmp_path):
    from blip.data.text import pre_caption
    from blip.errors import BlipError
    from blip.recipes import CapFiltConfig
    from blip.tasks.capfilt import run_capfilt

    web = json.loads((synth_world / "web.json").read_text())[:3]
    (tmp_path / "web.json").write_text(json.dumps(web))
    captioner, filt = blip.load(hf_models["caption"][1]), blip.load(hf_models["retrieval"][1])
    cfg = CapFiltConfig(
        out=str(tmp_path / "out"),
        web=[str(tmp_path / "web.json")],
        image_root=str(synth_world),
        strategy="beam",
        captions_per_image=2,
        progress=False,
    )
    run_capfilt(cfg, captioner, filt)
    rows = [json.loads(x) for x in (tmp_path / "out" / "provenance.jsonl").read_text().splitlines()]
    images = [load_image(synth_world / w["image"]) for w in web]
    # The paper's beam (Table 2): the two best of 3 beams, no repetition penalty, as Blip.caption(strategy="beam").
    expected = captioner.caption(images, strategy="beam", num_beams=3, num_captions=2, max_length=30, min_length=5)
    assert [r["text"] for r in rows if r["source"] == "synthetic"] == [pre_caption(c.text, 30) for c in expected]
    with pytest.raises(BlipError, match="capfilt strategy: nucleus or beam, not 'greedy'"):
        CapFiltConfig(strategy="greedy")
