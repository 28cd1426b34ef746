"""The demo's pretrained vision tower (tasks/vision_pretrain.py, blip/assets): its labels, loading, what it sees."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from blip.data.synth import SHAPES, encode_jpeg, make_scene, render_scene
from blip.data.synth.vocabulary import STREAM_IMAGE
from blip.data.transforms import MEAN, STD
from blip.errors import BlipError
from blip.tasks.ablation import AblationConfig, _model
from blip.tasks.pretrain import build_model
from blip.tasks.vision_pretrain import NC, NS, batch_tensors, new_tower, scene_targets, tower_config, train
from blip.tokenizer import Tokenizer


def _one_circle() -> dict:
    # Cell (0, 2) of a 64-px image, no jitter: centre (53.3, 10.7), radius 0.28 * 64 / 3 = 5.97, so of the patch
    # centres (4, 12, ..., 60) only x = 52, y = 12 lies in its box: patch row 1, column 6.
    obj = {"shape": "circle", "colour": "red", "size": "small", "row": 0, "col": 2, "jitter": [0.0, 0.0]}
    obj["bbox"] = [53.33 - 5.97, 10.67 - 5.97, 53.33 + 5.97, 10.67 + 5.97]
    return {"objects": [obj]}


def test_scene_targets_by_hand():
    t = scene_targets(_one_circle())
    red, circle = 0, SHAPES.index("circle")
    assert np.flatnonzero(t["multi"]).tolist() == [red, NC + circle, NC + NS + red * NS + circle]
    assert t["cell_shape"].tolist() == [NS, NS, circle] + [NS] * 6
    assert t["cell_colour"].tolist() == [NC, NC, red] + [NC] * 6
    assert t["count"] == 0
    assert np.flatnonzero(t["patch_shape"] != NS).tolist() == [1 * 8 + 6]
    assert t["patch_colour"][14] == red


def test_mirror_flips_image_and_position_labels():
    t = scene_targets(_one_circle())
    data = {"pixels": np.arange(2 * 64 * 64 * 3, dtype=np.uint8).reshape(2, 64, 64, 3)}
    data |= {k: np.stack([v, v]) for k, v in t.items()}
    plain = batch_tensors(data, np.array([0, 1]))
    flipped = batch_tensors(data, np.array([0, 1]), np.array([False, True]))
    assert torch.equal(flipped["pixels"][0], plain["pixels"][0])
    assert torch.equal(flipped["pixels"][1], plain["pixels"][1].flip(-1))
    # The circle moves from cell (0, 2) to (0, 0), and from patch (1, 6) to (1, 1); what is present does not change.
    assert flipped["cell_shape"][1].tolist() == [SHAPES.index("circle")] + [NS] * 8
    assert np.flatnonzero(flipped["patch_shape"][1].numpy() != NS).tolist() == [1 * 8 + 1]
    assert torch.equal(flipped["multi"][1], plain["multi"][1])


def _demo_pretrain_model(**cfg):
    tok = Tokenizer.from_texts(["a red circle above a blue square"])
    return build_model({"model": _model(AblationConfig(**cfg)), "queue_size": 48, "train": {"seed": 0}}, tok)


def test_demo_pretraining_starts_from_the_shipped_tower():
    shipped = load_file(AblationConfig().vision_init)
    model = _demo_pretrain_model()
    for encoder in (model.visual_encoder, model.visual_encoder_m):
        own = encoder.state_dict()
        assert set(own) == set(shipped)
        for k, v in shipped.items():
            assert torch.equal(own[k], v), k
    scratch = _demo_pretrain_model(vision_init=None)
    assert not torch.equal(scratch.visual_encoder.pos_embed, shipped["pos_embed"])


def test_vision_init_of_another_shape_is_a_one_line_error(tmp_path):
    cfg = tower_config()
    cfg.patch_size = 16
    path = tmp_path / "vit16.safetensors"
    save_file(new_tower(cfg).state_dict(), str(path))
    with pytest.raises(BlipError, match="not a ViT of this model's shape"):
        _demo_pretrain_model(vision_init=str(path))


def _scenes_and_pixels(n: int) -> tuple[list[dict], torch.Tensor]:
    # The demo world of seed 0 draws its images from this stream: scenes the tower never saw (its own stream is
    # STREAM_TOWER), read through JPEG as the demo reads them.
    scenes, images = [], []
    for i in range(n):
        rng = np.random.default_rng([0, STREAM_IMAGE, i])
        scene = make_scene(rng)
        image = Image.open(io.BytesIO(encode_jpeg(render_scene(scene, 64, rng)))).convert("RGB")
        scenes.append(scene)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return scenes, (torch.stack(images) - mean) / std


def _shape_auc(vit: torch.nn.Module, pixels: torch.Tensor, y: torch.Tensor, train: int) -> float:
    """Ridge-regression probe on frozen class tokens: fitted on the first `train` scenes, AUC on the rest."""
    with torch.no_grad():
        x = vit.eval()(pixels)[:, 0].double()
    x = (x - x[:train].mean(0)) / (x[:train].std(0) + 1e-6)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    gram = x[:train].T @ x[:train] + 10.0 * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, x[:train].T @ y[:train])
    scores, truth = x[train:] @ w, y[train:]
    aucs = []
    for k in range(y.shape[1]):
        pos, neg = scores[truth[:, k] > 0, k], scores[truth[:, k] == 0, k]
        aucs.append(((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean())
    return float(torch.stack(aucs).mean())


def test_shipped_tower_sees_shapes_better_than_a_random_one():
    scenes, pixels = _scenes_and_pixels(400)
    # Labels straight from the scene graphs: which shapes the image holds.
    y = torch.tensor([[float(any(o["shape"] == s for o in sc["objects"])) for s in SHAPES] for sc in scenes]).double()
    shipped = new_tower(tower_config())
    shipped.load_state_dict(load_file(AblationConfig().vision_init))
    torch.manual_seed(0)
    random = new_tower(tower_config())
    auc_shipped, auc_random = _shape_auc(shipped, pixels, y, 352), _shape_auc(random, pixels, y, 352)
    assert auc_shipped > auc_random + 0.1, (auc_shipped, auc_random)


def _train_args(out, steps: int) -> argparse.Namespace:
    # Warm-up longer than the run: the lr of a step then does not depend on --steps, so 2 steps + resume to 4 and
    # 4 steps straight train on the same samples with the same lrs.
    return argparse.Namespace(
        out=str(out),
        seed=0,
        pool=64,
        heldout=16,
        steps=steps,
        batch=8,
        lr=1e-3,
        warmup=8,
        wd=0.05,
        dense=1,
        eval_every=2,
        threads=1,
        workers=1,
        probe_scenes=40,
    )


def test_training_resumes_without_losing_or_repeating_steps(tmp_path, capsys):
    straight = train(_train_args(tmp_path / "a", 4))
    train(_train_args(tmp_path / "b", 2))
    capsys.readouterr()
    resumed = train(_train_args(tmp_path / "b", 4))
    # The resumed run trains (and logs) step 4 only: steps 1-2 come from the checkpoint, not from training again.
    trained = [json.loads(line)["step"] for line in capsys.readouterr().out.splitlines() if '"loss"' in line]
    assert trained == [4]
    assert [r["step"] for r in resumed["log"]] == [r["step"] for r in straight["log"]] == [2, 4]
    a, b = load_file(str(tmp_path / "a" / "tower.safetensors")), load_file(str(tmp_path / "b" / "tower.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
