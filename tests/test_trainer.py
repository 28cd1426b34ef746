"""The trainer: exact resume after a kill, and torchrun (2 processes, gloo) equal to one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blip.cli.common import load_recipe
from blip.errors import BlipError
from blip.tasks.pretrain import pretrain
from blip.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def recipe(synth: Path, out: Path, max_steps: int) -> dict:
    r = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), [])
    r["data"] = [{"reader": "pretrain_json", "path": str(synth / "pretrain.json"), "image_root": str(synth)}]
    r["tokenizer"] = str(synth / "tokenizer")
    r["queue_size"] = 32
    r["model"]["overrides"] = {"vision.depth": 1, "text.layers": 1}
    r["train"].update(
        out=str(out),
        batch_size=8,
        max_steps=max_steps,
        checkpoint_every=2,
        log_every=1,
        num_workers=0,
        warmup_steps=2,
        deterministic=True,
    )
    return r


def test_resume_after_kill_is_exact(tmp_path, synth_world):
    straight = pretrain(recipe(synth_world, tmp_path / "a", 4))
    pretrain(recipe(synth_world, tmp_path / "b", 2))  # "killed" after step 2 (its last checkpoint)
    resumed = pretrain(recipe(synth_world, tmp_path / "b", 4), resume=True)
    logs = [[json.loads(x) for x in (p.parent / "metrics.jsonl").read_text().splitlines()] for p in (straight, resumed)]
    keys = ("loss", "itc", "itm", "lm", "lr")
    assert [[r[k] for k in keys] for r in logs[0]] == [[r[k] for k in keys] for r in logs[1]]
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_equal_one_on_the_whole_batch(tmp_path):
    script = ROOT / "tests" / "ddp_equivalence.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.pt")], env=env, capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path / "two.pt"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name in ("itc", "itm", "lm"):
        assert abs(one[name] - two[name]) <= 1e-5, name
    assert one["grads"].keys() == two["grads"].keys()
    worst = max(float((one["grads"][k] - two["grads"][k]).abs().max()) for k in one["grads"])
    assert worst <= 1e-5
    assert torch.allclose(one["queue"], two["queue"], atol=1e-6)


def test_bad_samples_are_skipped_counted_and_whole_bad_batches_do_not_stall(tmp_path):
    from dataclasses import dataclass

    from blip.data.robust import Skip
    from blip.training.trainer import EpochSampler, TrainConfig, Trainer

    @dataclass
    class Sample:
        x: torch.Tensor

    good = {3, 7, 8, 9}

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            return Sample(torch.full((2,), float(i))) if i in good else Skip("corrupt", f"sample {i}")

    def loss_fn(m, batch, info):
        return {"loss": m(batch["x"]).pow(2).mean()}

    cfg = TrainConfig(
        out=str(tmp_path / "t"),
        epochs=1,
        batch_size=4,
        num_workers=0,
        warmup_steps=1,
        checkpoint_every=100,
        progress=False,
        lr=1e-3,
        seed=3,
    )
    trainer = Trainer(cfg, torch.nn.Linear(2, 1), Data(), loss_fn)
    trainer.fit()
    # Independent count: the batches of this epoch's permutation that hold at least one good sample.
    keys = EpochSampler(16, 3, 0, 0, 4).keys
    usable = sum(any(k % 16 in good for k in keys[b : b + 4]) for b in range(0, 16, 4))
    assert usable < 4, "the permutation should hold a batch with no good sample"
    assert trainer.skips.skipped["corrupt"] == 12 and trainer.skips.used == 4
    assert trainer.step == usable and trainer.epoch == 1 and trainer.batch_in_epoch == 0


def test_train_config_takes_yaml_exponents_and_refuses_words():
    # YAML 1.1 reads `lr: 5e-4` as the string "5e-4".
    assert TrainConfig(lr="5e-4", warmup_steps="10").lr == 5e-4
    assert TrainConfig(warmup_steps="10").warmup_steps == 10
    with pytest.raises(BlipError, match="train.lr must be a number"):
        TrainConfig(lr="fast")


def test_lr_scale_moves_each_group_by_its_own_lr(tmp_path):
    from dataclasses import dataclass

    from blip.training.trainer import Trainer, lr_at

    @dataclass
    class Sample:
        x: torch.Tensor

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Sample(torch.full((2,), float(i + 1)))

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(
        out=str(tmp_path / "t"),
        batch_size=4,
        num_workers=0,
        lr=1e-2,
        warmup_steps=0,
        max_steps=1,
        weight_decay=0.0,
        lr_scale={"0.": 0.1},
        progress=False,
    )
    Trainer(cfg, model, Data(), lambda m, b, info: {"loss": m(b["x"]).pow(2).mean()}).fit()
    # Adam's first step moves every weight by lr * g / (|g| + eps): by the group's lr, whatever the gradient.
    lr = lr_at(cfg, 0, 0, 1)
    assert lr == 1e-2
    for (name, p), p0 in zip(model.named_parameters(), before):
        want = lr * (0.1 if name.startswith("0.") else 1.0)
        assert torch.allclose((p.detach() - p0).abs(), torch.full_like(p0, want), rtol=1e-3), name
    with pytest.raises(BlipError, match="train.lr_scale: no parameter name starts with 'vision'"):
        Trainer(TrainConfig(out=str(tmp_path / "u"), lr_scale={"vision": 0.1}), model, Data(), lambda *a: {})
