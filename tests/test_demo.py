"""The demo chain: filter quality against hand-labelled cases, variant datasets, and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

from blip.tasks.ablation import AblationConfig, _variant_data, filter_quality, run_ablation


def test_filter_precision_and_recall_by_hand():
    web = [
        {"source": "web", "kept": k, "path": f"/i{i}.jpg", "text": "t", "itm": 0.0}
        for i, k in enumerate([False, False, True, True, False])
    ]
    kinds = [("boilerplate", None), ("clean", None), ("attribute", "shape"), ("clean", None), ("attribute", "shape")]
    labels = [{"noisy": n, "kind": k, "attribute": a} for n, (k, a) in zip([True, False, True, False, True], kinds)]
    q = filter_quality(web + [{"source": "synthetic", "kept": False}], labels)
    # dropped = {0, 1, 4}; noisy = {0, 2, 4}; both = {0, 4}
    assert (q["precision"], q["recall"], q["dropped"], q["noisy"]) == (200 / 3, 200 / 3, 3, 3)
    assert q["dropped_by_kind"] == {
        "attribute/shape": {"dropped": 1, "of": 2},
        "boilerplate": {"dropped": 1, "of": 1},
        "clean": {"dropped": 1, "of": 2},
    }


def test_variant_datasets(tmp_path, monkeypatch):
    synth = tmp_path / "synth"
    synth.mkdir()
    (synth / "coco_karpathy_train.json").write_text(json.dumps([{"image": "images/h.jpg", "caption": ["a", "b"]}]))
    rows = [
        {"source": "web", "kept": True, "path": str(synth / "images/1.jpg"), "text": "w1"},
        {"source": "synthetic", "kept": False, "path": str(synth / "images/1.jpg"), "text": "s1"},
        {"source": "web", "kept": False, "path": str(synth / "images/2.jpg"), "text": "w2"},
        {"source": "synthetic", "kept": True, "path": str(synth / "images/2.jpg"), "text": "s2"},
        {"image": "images/3.jpg", "skipped": "corrupt"},
    ]
    paths = _variant_data(synth, rows, tmp_path)
    caps = {
        name: [p["caption"] for p in json.loads(path.read_text())]
        for name, path in paths.items()
        if name != "no bootstrapping"
    }
    assert caps == {
        "filter only": ["a", "b", "w1"],
        "captioner only": ["a", "b", "w1", "s1", "w2", "s2"],
        "captioner + filter": ["a", "b", "w1", "s2"],
    }
    # A run resumed from another folder or with --out spelled relatively: its provenance has the other spelling.
    monkeypatch.chdir(tmp_path)
    images = [r["image"] for r in json.loads(_variant_data(Path("synth"), rows, tmp_path)["filter only"].read_text())]
    assert images == ["images/h.jpg", "images/h.jpg", "images/1.jpg"]


def test_tiny_end_to_end_run_writes_table_and_report(tmp_path, capsys):
    result = run_ablation(
        AblationConfig(
            out=str(tmp_path / "demo"), images=120, pretrain_steps=2, finetune_steps=1, batch_size=8, k_test=4
        )
    )
    assert list(result["rows"]) == ["no bootstrapping", "filter only", "captioner only", "captioner + filter"]
    assert "| captioner + filter |" in capsys.readouterr().out
    for name in ("report.md", "losses.png", "ablation.png", "results.json", "capfilt/provenance.jsonl"):
        assert (tmp_path / "demo" / name).exists(), name


def test_cli_defaults_are_the_ablation_defaults():
    from blip.cli import build_parser
    from blip.cli.demo import config_from_args

    assert config_from_args(build_parser().parse_args(["demo"])) == AblationConfig()
    given = config_from_args(build_parser().parse_args(["demo", "--seed", "3", "--finetune-steps", "7"]))
    assert (given.seed, given.finetune_steps, given.pretrain_steps) == (3, 7, AblationConfig().pretrain_steps)


def test_bad_setting_is_one_line_before_any_work(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "blip", "demo", "--out", str(tmp_path / "d"), "--capfilt-strategy", "greedy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [
        "blip: error: capfilt strategy: nucleus or beam, not 'greedy'"
    ], r.stderr
    assert not (tmp_path / "d" / "synth").exists()  # no world generated for a run that cannot go on
