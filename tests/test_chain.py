"""The chain recipe (configs/chain_tiny_synth.yaml) runs end to end on a tiny world and resumes without retraining."""

from __future__ import annotations

import json
from pathlib import Path

from blip.cli import main
from blip.cli.common import load_recipe
from blip.data.synth import generate
from blip.tasks.chain import run_chain

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "chain_tiny_synth.yaml")
TINY = [
    "pretrain.train.max_steps=2",
    "pretrain.train.batch_size=8",
    "captioner.train.max_steps=1",
    "captioner.train.batch_size=8",
    "evaluate.0.k_test=4",
]


def test_chain_recipe_runs_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "data" / "synth", num_images=60, seed=0, noise=0.4, num_videos=0)
    assert main(["chain", "--config", CONFIG, *(f"--set={s}" for s in TINY)]) == 0
    out = tmp_path / "runs" / "chain_tiny_synth"
    assert "bootstrapped: retrieval/txt_r1" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert set(result["noisy"]) == set(result["bootstrapped"]) >= {"retrieval/txt_r1", "caption/CIDEr"}
    # The second pretraining reads what CapFilt wrote: the human pairs plus the kept web and synthetic texts.
    boot = json.loads((out / "capfilt" / "bootstrapped.json").read_text())
    assert len(boot) == result["capfilt"]["texts_out"]
    used = json.loads((out / "pretrain_bootstrapped" / "recipe.json").read_text())["data"]
    assert used == [{"reader": "pretrain_json", "path": str(Path("runs/chain_tiny_synth/capfilt/bootstrapped.json"))}]
    # Rerun: every stage is found finished, nothing is trained again.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    assert len(stamps) == 6  # noisy, captioner, filter, bootstrapped, and a caption fine-tune of each pretrained model
    run_chain(load_recipe(CONFIG, TINY))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")} == stamps
