"""`blip caption` on the streaming engine: same records as the in-memory API, whatever batch size, workers and ranks;
outputs (JSONL, CSV, Parquet, sidecars), resume after kill -9, option errors, quiet `| head`, progress lines."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import blip
from blip.images import load_image


def run_blip(*args, cwd=None, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "blip", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        **kw,
    )


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Nine photos in a folder tree, and one zero-byte file."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(9):
        sub = root / ("nested" if i % 3 == 0 else "")
        sub.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(sub / f"p{i}.jpg")
    (root / "zero.jpg").write_bytes(b"")
    return root


def good_images(folder):
    return sorted(str(p) for p in folder.rglob("p*.jpg"))


def test_folder_records_equal_the_in_memory_api(hf_models, folder, tmp_path):
    model_dir = hf_models["caption"][1]
    out = tmp_path / "c.jsonl"
    r = run_blip(
        "caption", folder, "--model", model_dir, "--out", out, "--batch-size", 3, "--workers", 2, "--unit-size", 4
    )
    assert r.returncode == 1 and "1 of 10 inputs skipped (empty 1)" in r.stderr, r.stderr
    got = records(out)
    paths = good_images(folder)
    model = blip.load(model_dir)
    want = model.caption([load_image(p) for p in paths], batch_size=len(paths))  # all decoded up front, one batch
    assert [g["image"] for g in got] == paths
    for g, w in zip(got, want):
        assert g["caption"] == w.text
        assert g["logprob"] == pytest.approx(w.logprob, abs=1e-4)
        assert g["mean_logprob"] == pytest.approx(w.mean_logprob, abs=1e-4)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_size_workers_and_ranks_give_identical_outputs(hf_models, folder, tmp_path):
    model_dir = hf_models["caption"][1]
    outs = []
    for i, extra in enumerate([("--batch-size", 1, "--workers", 0), ("--batch-size", 4, "--workers", 2)]):
        outs.append(tmp_path / f"o{i}.jsonl")
        r = run_blip("caption", folder, "--model", model_dir, "--out", outs[-1], "--unit-size", 3, *extra)
        assert r.returncode == 1, r.stderr
    ranked = tmp_path / "ranks.jsonl"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            "-m",
            "blip",
            "caption",
            str(folder),
            "--model",
            str(model_dir),
            "--out",
            str(ranked),
            "--unit-size",
            "3",
            "--batch-size",
            "2",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ranked.exists(), r.stderr[-3000:]
    parts = sorted((tmp_path / "ranks.jsonl.parts").glob("*.jsonl"))
    assert len(parts) == 4  # 10 files in units of 3, dealt to the two ranks
    assert outs[0].read_bytes() == outs[1].read_bytes() == ranked.read_bytes()
    assert len(records(ranked)) == 9


def test_sampled_captions_reranked_by_a_filter_do_not_depend_on_batching(hf_models, folder, tmp_path):
    cap, filt = hf_models["caption"][1], hf_models["retrieval"][1]
    outs = []
    for i, extra in enumerate(
        [("--batch-size", 1, "--workers", 0, "--unit-size", 10), ("--batch-size", 3, "--workers", 2, "--unit-size", 2)]
    ):
        outs.append(tmp_path / f"s{i}.jsonl")
        r = run_blip(
            "caption",
            folder,
            "--model",
            cap,
            "--filter",
            filt,
            "--sample",
            "--num-captions",
            3,
            "--rerank",
            "itm",
            "--out",
            outs[-1],
            *extra,
        )
        assert r.returncode == 1, r.stderr
    assert outs[0].read_bytes() == outs[1].read_bytes()
    filter_model = blip.load(filt)
    for rec in records(outs[0])[:3]:
        # The kept caption is the one the filter's ITM head scores highest, and every score is the filter's.
        scores = [m["itm"] for m in filter_model.match([load_image(rec["image"])], rec["all_captions"])]
        assert rec["all_itm"] == pytest.approx(scores, abs=1e-4)
        assert rec["caption"] == rec["all_captions"][int(np.argmax(scores))]
        assert rec["itm"] == pytest.approx(max(scores), abs=1e-4) and len(rec["all_captions"]) == 3


def test_csv_and_parquet_hold_the_jsonl_records(hf_models, folder, tmp_path):
    import pyarrow.parquet as pq

    model_dir = hf_models["caption"][1]
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        r = run_blip("caption", folder, "--model", model_dir, "--out", tmp_path / name, "--workers", 0)
        assert r.returncode == 1, r.stderr
    want = records(tmp_path / "a.jsonl")
    with open(tmp_path / "a.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["caption"], float(r["logprob"])) for r in rows] == [
        (w["image"], w["caption"], w["logprob"]) for w in want
    ]
    assert pq.read_table(tmp_path / "a.parquet").to_pylist() == want


def test_sidecars_prefix_suffix_and_skip_existing(hf_models, folder, tmp_path):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(folder, photos)
    model_dir = hf_models["caption"][1]
    first = min(photos.rglob("p*.jpg"))
    first.with_suffix(".txt").write_text("hand written\n")
    r = run_blip(
        "caption",
        photos,
        "--model",
        model_dir,
        "--sidecar",
        ".txt",
        "--prefix",
        "sks, ",
        "--suffix",
        ".",
        "--skip-existing",
        "--workers",
        0,
        "--json",
    )
    assert r.returncode == 1, r.stderr
    assert "1 images already had a caption file, left alone" in r.stderr and r.stdout == ""
    assert first.with_suffix(".txt").read_text() == "hand written\n"
    want = {c["image"]: c["caption"] for c in records_from_api(model_dir, sorted(photos.rglob("p*.jpg"))[1:])}
    for image, caption in want.items():
        assert Path(image).with_suffix(".txt").read_text() == f"sks, {caption}.\n"
    assert not (photos / "zero.txt").exists()


def records_from_api(model_dir, paths):
    model = blip.load(model_dir)
    return [{"image": str(p), "caption": c.text} for p, c in zip(paths, model.caption([load_image(p) for p in paths]))]


def test_kill_and_rerun_gives_one_record_per_image_as_an_uninterrupted_run(hf_models, tmp_path):
    rng = np.random.default_rng(1)
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photos / f"{i:02d}.jpg")
    model_dir = hf_models["caption"][1]

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "blip",
            "caption",
            str(photos),
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--unit-size",
            "2",
            "--batch-size",
            "2",
            "--sample",
            "--num-captions",
            "3",
            "--workers",
            "1",
        ]

    # The killed run is pinned to one thread (slow enough for the kill to land mid-run); the straight run and the
    # rerun are pinned too, so the runs differ only by the kill.
    one = dict(os.environ, OMP_NUM_THREADS="1")
    straight = tmp_path / "straight.jsonl"
    assert subprocess.run(cmd(straight), capture_output=True, check=False, env=one).returncode == 0
    out = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=one)
    parts = tmp_path / "killed.jsonl.parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.jsonl"))) < 2:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("*.jsonl")))
    assert 2 <= done < 12 and not out.exists(), "the kill must land mid-run"
    r = subprocess.run(cmd(out), capture_output=True, text=True, check=False, env=one)
    assert r.returncode == 0, r.stderr
    got = records(out)
    assert sorted(g["image"] for g in got) == sorted(str(p) for p in photos.glob("*.jpg"))  # one record each
    assert out.read_bytes() == straight.read_bytes()


@pytest.mark.parametrize(
    "args,message",
    [
        (("--batch-size", "0"), "--batch-size: must be at least 1"),  # argparse type check of add_model_args
        (("--beams", "0"), "--beams must be at least 1"),
        (("--max-length", "-3"), "--max-length must be at least 1"),
        (("--min-length", "-1"), "--min-length must not be negative"),
        (("--num-captions", "3"), "--num-captions above 1 needs --sample"),
        (("--out", "x.xlsx"), "unknown format"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    r = run_blip("caption", tmp_path, "--model", tmp_path / "no-model", *args)
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_piping_into_head_ends_quietly(hf_models, folder):
    cmd = (
        f"{sys.executable} -m blip caption {folder} --model {hf_models['caption'][1]} --unit-size 1 --workers 0 "
        f"--batch-size 1 | head -n 1"
    )
    r = subprocess.run(
        ["bash", "-c", cmd],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
    )
    assert len(r.stdout.splitlines()) == 1
    assert "BrokenPipe" not in r.stderr and "Traceback" not in r.stderr and "Exception" not in r.stderr


def test_progress_lines_outside_a_terminal(hf_models, folder, tmp_path):
    r = run_blip(
        "caption",
        folder,
        "--model",
        hf_models["caption"][1],
        "--out",
        tmp_path / "p.jsonl",
        "--progress-every",
        "0",
        "--workers",
        "0",
        "--batch-size",
        "2",
    )
    lines = [x for x in r.stderr.splitlines() if "img/s" in x]
    assert len(lines) >= 3 and lines[-1].startswith("blip: 10/10 images"), r.stderr


def test_shards_caption_and_a_truncated_shard_is_counted(hf_models, tmp_path):
    import io
    import tarfile

    rng = np.random.default_rng(2)
    blobs = []
    for s in range(2):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for k in range(3):
                im = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(im, "JPEG")
                blobs.append(im.getvalue())
                info = tarfile.TarInfo(f"{s}{k:03d}.jpg")
                info.size = len(im.getvalue())
                tar.addfile(info, io.BytesIO(im.getvalue()))
        data = buf.getvalue()
        (tmp_path / f"shard-{s}.tar").write_bytes(data if s == 0 else data[: len(data) - 1024 - 7])
    out = tmp_path / "s.jsonl"
    r = run_blip("caption", tmp_path / "shard-{0..1}.tar", "--model", hf_models["caption"][1], "--out", out)
    assert r.returncode == 1 and "bad_shard 1" in r.stderr, r.stderr
    got = records(out)
    assert [g["image"] for g in got][:3] == ["shard-0.tar:0000", "shard-0.tar:0001", "shard-0.tar:0002"]
    want = blip.load(hf_models["caption"][1]).caption([load_image(b) for b in blobs[: len(got)]])
    assert [g["caption"] for g in got] == [w.text for w in want]
