"""Two runs of one chain recipe (pretrain -> fine-tune captioner and filter -> CapFilt -> pretrain again -> evaluate)
write the same bytes: every checkpoint and model, CapFilt's outputs and results.json.

Each run is a fresh process with its own PYTHONHASHSEED, as two runs of `blip chain` or `blip demo` are, and trains
on 2 threads: on one thread the kernel that made runs differ (the CPU backward of the ITM negatives' indexing, which
adds with atomics across threads) never races, and the test could not fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from blip.data.synth import generate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "chain_tiny_synth.yaml")
TINY = [
    "pretrain.train.max_steps=3",
    "pretrain.train.batch_size=8",
    "pretrain.train.threads=2",
    "captioner.train.max_steps=2",  # the filter and the evaluation's caption fine-tune share this mapping
    "captioner.train.batch_size=8",
    "captioner.train.threads=2",
    "evaluate.0.k_test=4",
]
# Files that hold time values by design: the trainer's log (samples_per_s) and CapFilt's summary (its speed).
TIMED = {"metrics.jsonl": ["samples_per_s"], "summary.json": ["images_per_second_this_run"]}


def run_chain_in_process(folder: Path, world: Path, hash_seed: str) -> Path:
    """`blip chain` in a fresh process, in its own folder (the recipe's relative paths) over one synthetic world."""
    folder.mkdir()
    (folder / "data").mkdir()
    (folder / "data" / "synth").symlink_to(world)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONHASHSEED": hash_seed,
    }
    subprocess.run(
        [sys.executable, "-m", "blip", "chain", "--config", CONFIG, *(f"--set={s}" for s in TINY)],
        cwd=folder,
        env=env,
        check=True,
        capture_output=True,
    )
    return folder / "runs" / "chain_tiny_synth"


def without_times(path: Path) -> list:
    """The records of a time-bearing file with its time values left out."""
    keys = TIMED[path.name]
    lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
    return [{k: v for k, v in json.loads(line).items() if k not in keys} for line in lines if line]


def written(out: Path) -> list[str]:
    """The files a run wrote, but TensorBoard's event files (named by time and host, when tensorboard is there)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "tb" not in p.parts)


def test_two_runs_of_one_seed_write_the_same_bytes(tmp_path):
    world = tmp_path / "world"
    generate(world, num_images=60, seed=0, noise=0.4, num_videos=0)
    first = run_chain_in_process(tmp_path / "a", world, "1")
    second = run_chain_in_process(tmp_path / "b", world, "2")
    files = written(first)
    assert files == written(second)
    # Every stage ran: 6 trained models (noisy, captioner, filter, bootstrapped, a caption fine-tune of each
    # pretrained model), CapFilt wrote its data, and training really ran on 2 threads.
    assert sum(name.endswith("model.safetensors") for name in files) == 6
    assert {"results.json", "capfilt/provenance.jsonl", "capfilt/bootstrapped.json"} <= set(files)
    checkpoint = torch.load(first / "pretrain_noisy" / "checkpoint-00000003.pt", weights_only=True)
    assert checkpoint["config"]["threads"] == 2 and checkpoint["config"]["deterministic"] is True
    differing = [
        name
        for name in files
        if Path(name).name not in TIMED and (first / name).read_bytes() != (second / name).read_bytes()
    ]
    assert differing == []
    timed = [name for name in files if Path(name).name in TIMED]
    assert timed and all(without_times(first / name) == without_times(second / name) for name in timed)
