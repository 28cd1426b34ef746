"""The GPU suite's CPU smoke run at tiny sizes: every section runs, agrees with its peer, and writes JSON + Markdown."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_fp32(suite, tmp_path):
    assert suite.main(["--smoke", "--device", "cpu", "--dtype", "float32", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_suite.json").read_text())
    # Captioning: identical ids to transformers' BLIP on the same weights in fp32.
    assert res["caption"]["identical_ids"] and res["caption"]["identical_rows"] == res["caption"]["batch"]
    # Pretraining: every batch tried fits on CPU; FLOPs counted per step grow with the batch.
    rows = res["pretrain"]["rows"]
    assert [r["batch"] for r in rows] == [2, 4] and res["pretrain"]["largest_batch"] == 4
    assert 1.8 < rows[1]["flops_per_step"] / rows[0]["flops_per_step"] < 2.2
    # Retrieval: batching queries gives the scores of the reference's one query at a time.
    assert res["retrieval"]["max_abs_diff_vs_reference"] < 1e-5
    capfilt = res["capfilt"]
    assert capfilt["itm_scores"] == 2 * capfilt["images"]
    assert capfilt["hours_for_129M"] == pytest.approx(129e6 / capfilt["images_per_s"] / 3600)
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "SMOKE" in md and "## Pretraining step" in md and "## CapFilt" in md


def test_smoke_caption_bf16(suite, tmp_path):
    assert suite.main(["--smoke", "--device", "cpu", "--only", "caption", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gpu_suite.json").read_text())["caption"]
    assert res["dtype"] == "bfloat16" and res["mode"] == "both cast + autocast" and res["ours_s"] > 0
