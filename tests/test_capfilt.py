"""CapFilt: verdicts follow the filter's ITM head; kill -9 mid-run and resume gives exactly the uninterrupted output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import blip
from blip.images import load_image


def capfilt_cmd(hf_models, synth_world, out, unit_size=4):
    return [sys.executable, "-m", "blip", "capfilt", "--captioner", str(hf_models["caption"][1]),
            "--filter", str(hf_models["retrieval"][1]), "--web", str(synth_world / "web.json"),
            "--image-root", str(synth_world), "--human", str(synth_world / "coco_karpathy_train.json"),
            "--out", str(out), "--unit-size", str(unit_size), "--captions-per-image", "2", "--batch-size", "4"]


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
        r["kept"] for r in rows)
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["web_kept"] + summary["synthetic_kept"] == sum(r["kept"] for r in rows)
    assert list((straight / "shards").glob("*.tar"))


def test_kill_and_resume_gives_the_uninterrupted_output(straight, hf_models, synth_world, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(capfilt_cmd(hf_models, synth_world, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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
