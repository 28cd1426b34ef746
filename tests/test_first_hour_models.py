"""A new user's first hour with a model: answer lists, trainer checkpoints, missing tokenizers, one image or
many, file permissions, and the synthetic world's output folder."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.cli import main
from blip.errors import BlipError
from conftest import DEC, SEP


def image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def blip_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "blip", *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        check=False,
    )


def test_ask_answers_takes_the_synthetic_worlds_json_list_and_plain_lines(hf_models, synth_world, tmp_path):
    img = tmp_path / "x.png"
    image(0).save(img)
    answers = json.loads((synth_world / "vqa" / "answer_list.json").read_text())
    model = blip.load(hf_models["vqa"][1])
    want = model.ask([str(img)], ["what colour is the square?"], answers=answers, k_test=len(answers))[0]
    r = blip_cli(
        "ask",
        img,
        "-q",
        "what colour is the square?",
        "--model",
        hf_models["vqa"][1],
        "--json",
        "--answers",
        synth_world / "vqa" / "answer_list.json",
        "--k-test",
        len(answers),
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["answer"] in answers and got["answer"] == want.text
    (tmp_path / "answers.txt").write_text("\n".join(answers) + "\n\n")
    r = blip_cli(
        "ask",
        img,
        "-q",
        "what colour is the square?",
        "--model",
        hf_models["vqa"][1],
        "--json",
        "--answers",
        tmp_path / "answers.txt",
        "--k-test",
        len(answers),
    )
    assert r.returncode == 0 and json.loads(r.stdout)["answer"] == want.text
    # An answer longer than the model's positions (the tiny model has 40) is cut, not an IndexError.
    long = ["yes", " ".join(["red"] * 60)]
    assert model.ask([str(img)], ["what?"], answers=long)[0].text in long
    (tmp_path / "bad.json").write_text('["yes", "no"')
    r = blip_cli("ask", img, "-q", "what?", "--model", hf_models["vqa"][1], "--answers", tmp_path / "bad.json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr and r.stderr.count("\n") == 1


def _trained_captioner(hf_models, out):
    """One real optimiser step of the trainer on a fine-tuning loss module (it wraps the model as `model.`)."""
    from blip.checkpoint import load_checkpoint
    from blip.tasks.caption import CaptionTraining
    from blip.training.trainer import TrainConfig, Trainer

    model, tok, _ = load_checkpoint(hf_models["caption"][1])
    torch.manual_seed(0)
    data = [(torch.randn(3, 32, 32), torch.tensor([DEC, 20, 21, SEP])) for _ in range(4)]

    def collate(items):
        return {
            "image": torch.stack([i for i, _ in items]),
            "ids": torch.stack([t for _, t in items]),
            "size": len(items),
            "skipped": [],
        }

    def loss_fn(m, batch, info):
        return {"loss": m(batch["image"], batch["ids"], torch.ones_like(batch["ids"]))}

    cfg = TrainConfig(out=str(out), batch_size=2, max_steps=1, num_workers=0, warmup_steps=0, lr=1e-2, progress=False)
    Trainer(cfg, CaptionTraining(model, prompt_tokens=1), data, loss_fn, collate).fit()
    return model.eval(), tok


def test_trainer_checkpoint_loads_for_inference(hf_models, tmp_path):
    trained, tok = _trained_captioner(hf_models, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint-00000001.pt"
    assert any(k.startswith("model.") for k in torch.load(ckpt, weights_only=True)["model"])
    loaded = blip.load(ckpt, tokenizer=hf_models["caption"][1] / "vocab.txt")
    want = trained.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() <= want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    untrained = blip.load(hf_models["caption"][1]).model.state_dict()
    assert not all(torch.equal(got[k], untrained[k]) for k in got)  # the step changed the weights we read back
    # The run's tokenizer beside the checkpoints is found without --tokenizer.
    tok.save(tmp_path / "run" / "tokenizer")
    caps = blip.load(ckpt).caption(image(1), max_length=8)
    assert caps[0].text == blip.Blip(trained, tok).caption(image(1), max_length=8)[0].text


def test_checkpoint_without_tokenizer_fails_at_once_offline(hf_models, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    _trained_captioner(hf_models, tmp_path / "run")

    def no_download(*args, **kwargs):
        raise AssertionError("the Hub was asked although it is offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BlipError, match="--tokenizer") as e:
        blip.load(tmp_path / "run" / "checkpoint-00000001.pt")
    assert "\n" not in str(e.value)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "blip",
            "caption",
            str(tmp_path / "x.png"),
            "--model",
            str(tmp_path / "run" / "checkpoint-00000001.pt"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache")),
        check=False,
    )
    assert r.returncode == 2 and "--tokenizer" in r.stderr and r.stderr.count("\n") == 1


def test_api_takes_one_image_or_many(hf_models, tmp_path):
    model = blip.load(hf_models["caption"][1])
    path = tmp_path / "x.png"
    image(2).save(path)
    many = model.caption([str(path), image(3)], max_length=8)
    # A path, a pathlib path and a PIL image alone are one image each, never iterated.
    for one in (str(path), path, image(2)):
        got = model.caption(one, max_length=8)
        assert len(got) == 1 and got[0].text == many[0].text
    assert model.caption(path.read_bytes(), max_length=8)[0].text == many[0].text
    retrieval = blip.load(hf_models["retrieval"][1])
    assert retrieval.match(str(path), "a red square") == retrieval.match([str(path)], ["a red square"])
    assert retrieval.image_features(str(path)).shape[0] == 1 and retrieval.text_features("a dog").shape[0] == 1
    vqa = blip.load(hf_models["vqa"][1])
    assert len(vqa.ask(str(path), "is there a dog?")) == 1


def test_api_reports_a_bad_file_per_item(hf_models, tmp_path):
    model = blip.load(hf_models["caption"][1])
    good = tmp_path / "good.png"
    image(4).save(good)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(BlipError, match="bad.jpg"):
        model.caption([good, tmp_path / "bad.jpg"], max_length=8)
    got = model.caption(
        [tmp_path / "bad.jpg", good, tmp_path / "gone.png"],
        max_length=8,
        on_error="report",
        strategy="nucleus",
        num_captions=2,
        generator=torch.Generator().manual_seed(0),
    )
    alone = model.caption(
        good, max_length=8, strategy="nucleus", num_captions=2, generator=torch.Generator().manual_seed(0)
    )
    assert [c.error is None for c in got] == [False, False, True, True, False, False]
    assert "not an image" in got[0].error and "no such file" in got[4].error and math.isinf(got[0].logprob)
    assert [c.text for c in got[2:4]] == [c.text for c in alone]
    vqa = blip.load(hf_models["vqa"][1])
    answers = vqa.ask([good, tmp_path / "bad.jpg"], "is there a dog?", on_error="report")
    assert answers[0].error is None and answers[0].text == vqa.ask(good, "is there a dog?")[0].text
    assert "not an image" in answers[1].error
    ranked = vqa.ask([tmp_path / "bad.jpg", good], "is there a dog?", answers=["yes", "no"], top=2, on_error="report")
    assert len(ranked[0]) == 1 and "not an image" in ranked[0][0].error
    assert [a.text for a in ranked[1]] == [
        a.text for a in vqa.ask(good, "is there a dog?", answers=["yes", "no"], top=2)[0]
    ]
    scores = blip.load(hf_models["retrieval"][1]).match([tmp_path / "gone.png", good], "a dog", on_error="report")
    assert "no such file" in scores[0]["error"] and set(scores[1]) == {"itm", "itc"}
    with pytest.raises(BlipError, match="on_error"):
        model.caption(good, on_error="ignore")


def test_model_files_get_the_same_permissions_as_other_outputs(hf_models, tmp_path):
    old = os.umask(0o027)
    try:
        assert main(["convert", str(hf_models["caption"][1]), str(tmp_path / "own")]) == 0
        assert main(["convert", str(hf_models["caption"][1]), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    finally:
        os.umask(old)
    for folder in ("own", "hf"):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / folder).iterdir()}
        assert modes["model.safetensors"] == modes["config.json"] == 0o640, modes


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "world"
    out.mkdir()
    (out / "images").mkdir()
    assert main(["data", "synth", "--out", str(out), "--images", "8"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["images"]  # nothing written or deleted
    (tmp_path / "empty").mkdir()
    assert (
        main(["data", "synth", "--out", str(tmp_path / "empty"), "--images", "8", "--videos", "0", "--workers", "1"])
        == 0
    )
    assert main(["data", "synth", "--out", str(tmp_path / "empty"), "--images", "8", "--videos", "0"]) == 2
