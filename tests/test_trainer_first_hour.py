"""Resuming as a new user does it: with a changed recipe, after a truncated checkpoint; and a run whose images
are all missing fails instead of writing an untrained model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from blip.cli import main
from blip.training.trainer import TrainConfig, Trainer, TrainingError
from test_trainer import recipe


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(3, 1)


def collate(items):
    return {
        "x": torch.stack([x for x, _ in items]),
        "y": torch.stack([y for _, y in items]),
        "size": len(items),
        "skipped": [],
    }


def loss_fn(m, batch, info):
    return {"loss": ((m.layer(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()}


def data(n: int):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(3, generator=g), torch.randn((), generator=g)) for _ in range(n)]


def run(out, n=8, steps=2, **changes):
    cfg = TrainConfig(
        **{
            "out": str(out),
            "batch_size": 2,
            "max_steps": steps,
            "num_workers": 0,
            "warmup_steps": 0,
            "checkpoint_every": 1,
            "keep": 2,
            "lr": 0.1,
            "progress": False,
            **changes,
        }
    )
    trainer = Trainer(cfg, Linear(), data(n), loss_fn, collate)
    return trainer


def test_resume_with_changed_batching_or_data_is_refused_naming_it(tmp_path):
    run(tmp_path).fit()
    with pytest.raises(TrainingError, match=r"train.batch_size: 2 then, 4 now"):
        run(tmp_path, steps=3, batch_size=4).fit(resume=True)
    with pytest.raises(TrainingError, match=r"data: 8 samples then, 10 now"):
        run(tmp_path, n=10, steps=3).fit(resume=True)
    with pytest.raises(TrainingError, match=r"train.seed: 42 then, 7 now"):
        run(tmp_path, steps=3, seed=7).fit(resume=True)


def test_resume_with_changed_lr_warns_and_continues(tmp_path, capsys):
    run(tmp_path).fit()
    trainer = run(tmp_path, steps=3, lr=0.01)
    trainer.fit(resume=True)
    assert trainer.step == 3
    assert "changed schedule (train.lr: 0.1 then, 0.01 now)" in capsys.readouterr().err


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    run(tmp_path, steps=3).fit()
    names = [p.name for p in sorted(tmp_path.glob("checkpoint-*.pt"))]
    assert names == ["checkpoint-00000002.pt", "checkpoint-00000003.pt"]
    newest = tmp_path / names[1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    trainer = run(tmp_path, steps=3)
    assert trainer.resume() and trainer.step == 2
    saved = torch.load(tmp_path / names[0], weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in trainer.model.state_dict().items())
    err = capsys.readouterr().err
    assert f"cannot read {names[1]}" in err and f"resuming from the previous good checkpoint, {names[0]}" in err
    newest.write_bytes(b"")
    (tmp_path / names[0]).write_bytes(b"junk")
    with pytest.raises(TrainingError, match="no checkpoint in .* can be read"):
        run(tmp_path, steps=3).resume()


def test_training_on_missing_images_fails_instead_of_writing_a_model(tmp_path, synth_world, capsys):
    r = recipe(synth_world, tmp_path / "out", 4)
    # Fewer samples than the trainer's early check needs (200): the end of the run must see them.
    pairs = json.loads((synth_world / "pretrain.json").read_text())[:40]
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    r["data"][0].update(path=str(tmp_path / "pairs.json"), image_root=str(tmp_path / "not-the-images"))
    r["train"]["epochs"] = 1
    config = tmp_path / "r.yaml"
    config.write_text(json.dumps(r))
    assert main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "samples were unusable (" in err and "missing" in err and "no training step ran" in err
    assert "\n" not in err and not (tmp_path / "out" / "model").exists()


def test_training_on_mostly_missing_images_exits_non_zero_saying_so(tmp_path, synth_world, capsys):
    r = recipe(synth_world, tmp_path / "out", 2)
    pairs = json.loads((synth_world / "pretrain.json").read_text())[:40]
    for p in pairs[:30]:
        p["image"] = "images/not-there.jpg"
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    r["data"][0]["path"] = str(tmp_path / "pairs.json")
    r["train"]["epochs"] = 1
    config = tmp_path / "r.yaml"
    config.write_text(json.dumps(r))
    assert main(["pretrain", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "samples were unusable" in err and "missing" in err and "was written" in err
    # A pretraining checkpoint (momentum copies, queues) loads for inference with the run's tokenizer beside it.
    import blip

    ckpt = max((tmp_path / "out").glob("checkpoint-*.pt"))
    model = blip.load(ckpt)
    final = blip.load(tmp_path / "out" / "model")
    assert model.cfg.parts == final.cfg.parts and len(model.tokenizer) == len(final.tokenizer)
    got, want = model.model.state_dict(), final.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
