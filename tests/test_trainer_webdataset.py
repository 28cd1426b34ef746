"""Pretraining from webdataset tar shards through the trainer: exact resume of the sample stream, bad samples
skipped and counted."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import blip.tasks.pretrain as pretrain_task
from blip.cli.common import load_recipe
from blip.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("square", "circle", "triangle")
CORRUPT = "000001_0002"  # the one sample whose image is not an image
TRAIN_AND_SAVE = pretrain_task.train_and_save


def write_shards(folder: Path) -> list[str]:
    """3 shards of 4 samples in the img2dataset layout (KEY.jpg + KEY.txt); returns the captions."""
    captions = []
    for shard in range(3):
        with tarfile.open(folder / f"shard-{shard:06d}.tar", "w") as tar:
            for i in range(4):
                key = f"{shard:06d}_{i:04d}"
                n = shard * 4 + i
                caption = f"a {COLOURS[n % 4]} {SHAPES[n % 3]} number {n}"
                captions.append(caption)
                buf = io.BytesIO()
                Image.new("RGB", (40, 40), (60 * (n % 4), 20 * n, 255 - 20 * n)).save(buf, "JPEG")
                image = b"this is not a jpeg" if key == CORRUPT else buf.getvalue()
                for name, data in ((f"{key}.jpg", image), (f"{key}.txt", caption.encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return captions


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    captions = write_shards(folder)
    Tokenizer.from_texts(captions).save(folder / "tokenizer")
    return folder


def recipe(shards: Path, out: Path, max_steps: int, workers: int) -> dict:
    r = load_recipe(str(ROOT / "configs/pretrain_tiny_synth.yaml"), [])
    r["data"] = [{"reader": "webdataset", "urls": str(shards / "shard-{000000..000002}.tar")}]
    r["tokenizer"] = str(shards / "tokenizer")
    r["queue_size"] = 8
    r["mirror"] = False
    r["model"] = {
        "preset": "tiny",
        "image_size": 32,
        "overrides": {"vision.depth": 1, "text.layers": 1, "vision.patch_size": 16},
    }
    # An epoch is 3 steps of 4 = the 12 samples; the corrupt one takes a slot and is skipped.
    r["train"].update(
        out=str(out),
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        max_steps=max_steps,
        checkpoint_every=2,
        log_every=1,
        num_workers=workers,
        warmup_steps=2,
        deterministic=True,
    )
    return r


def run(monkeypatch, r: dict, resume: bool = False) -> tuple[Path, list[list[str]]]:
    """Pretrain with `r`; returns the model folder and the captions of every step, recorded in the loss."""
    seen: list[list[str]] = []

    def recording(train, module, model, tok, dataset, loss_fn, *args, **kwargs):
        def loss(m, batch, info):
            seen.append(list(batch["caption"]))
            return loss_fn(m, batch, info)

        return TRAIN_AND_SAVE(train, module, model, tok, dataset, loss, *args, **kwargs)

    monkeypatch.setattr(pretrain_task, "train_and_save", recording)
    return pretrain_task.pretrain(r, resume=resume), seen


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_webdataset_run_sees_the_same_samples(tmp_path, shards, monkeypatch, workers):
    straight, seen = run(monkeypatch, recipe(shards, tmp_path / "a", 6, workers))
    _, first = run(monkeypatch, recipe(shards, tmp_path / "b", 2, workers))  # "killed" after step 2, mid-epoch
    resumed, rest = run(monkeypatch, recipe(shards, tmp_path / "b", 6, workers), resume=True)
    assert len(seen) == 6 and first + rest == seen
    logs = [[json.loads(x) for x in (p.parent / "metrics.jsonl").read_text().splitlines()] for p in (straight, resumed)]
    keys = ("loss", "itc", "itm", "lm", "lr")
    assert [[r[k] for k in keys] for r in logs[0]] == [[r[k] for k in keys] for r in logs[1]]
    epochs = [[c for step in seen[:3] for c in step], [c for step in seen[3:] for c in step]]
    assert epochs[0] != epochs[1]  # reshuffled
    if workers == 0:
        assert sorted(epochs[0]) == sorted(epochs[1]) and len(epochs[0]) == 11  # each sample once, but the corrupt
        for out in (straight.parent, resumed.parent):
            skips = torch.load(sorted(out.glob("checkpoint-*.pt"))[-1], weights_only=True)["skips"]
            assert skips["used"] == 22 and sum(skips["skipped"].values()) == 2  # the corrupt sample, once an epoch
            assert CORRUPT in skips["examples"][next(iter(skips["skipped"]))][0]
