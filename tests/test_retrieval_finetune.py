"""Retrieval fine-tuning: image-id positives in ITC (paper definition), and an end-to-end run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import blip
from blip.cli.common import load_recipe
from blip.data import read_karpathy_eval
from blip.model.config import preset
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import evaluate_retrieval, finetune_retrieval, retrieval_scores
from blip.training.retrieval import BlipRetrievalTrain
from test_trainer import ROOT, recipe


def test_itc_targets_spread_over_every_caption_of_the_same_image():
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        **{
            "text.vocab_size": 60,
            "text.dec_id": 58,
            "text.enc_id": 59,
            "text.cls_id": 2,
            "text.sep_id": 3,
            "vision.image_size": 32,
            "vision.patch_size": 16,
        },
    )
    m = BlipRetrievalTrain(cfg, queue_size=8).eval()
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32, generator=g)
    ids = torch.randint(5, 58, (4, 6), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    image_ids = torch.tensor([7, 7, 3, 5])  # the first two pairs show the same image
    text_queue, image_queue = m.text_queue.clone(), m.image_queue.clone()
    losses = m(pixels, ids, mask, image_ids, alpha=0.0)
    with torch.no_grad():
        img = F.normalize(m.vision_proj(m.visual_encoder(pixels)[:, 0]), dim=-1)
        txt = F.normalize(m.text_proj(m.text_encoder(ids, mask)[:, 0]), dim=-1)
        img_m = F.normalize(m.vision_proj_m(m.visual_encoder_m(pixels)[:, 0]), dim=-1)
        txt_m = F.normalize(m.text_proj_m(m.text_encoder_m(ids, mask)[:, 0]), dim=-1)
        targets = torch.zeros(4, 12)
        targets[0, :2] = targets[1, :2] = 0.5  # queue ids start at -100, never equal to an image id
        targets[2, 2] = targets[3, 3] = 1
        i2t = (img @ torch.cat([txt_m.t(), text_queue], 1) / m.temp).log_softmax(1)
        t2i = (txt @ torch.cat([img_m.t(), image_queue], 1) / m.temp).log_softmax(1)
        expected = (-(i2t * targets).sum(1).mean() - (t2i * targets).sum(1).mean()) / 2
    assert torch.allclose(losses["itc"], expected, atol=1e-5)
    assert m.idx_queue[0, :4].tolist() == [7, 7, 3, 5] and int(m.ptr_queue) == 4


def test_finetune_and_evaluate_on_synthetic_world(tmp_path, synth_world):
    pretrained = pretrain(recipe(synth_world, tmp_path / "pre", 1))
    r = load_recipe(str(ROOT / "configs/retrieval_tiny_synth.yaml"), [])
    r.update(init=str(pretrained), queue_size=32)
    r["data"] = [
        {"reader": "karpathy", "path": str(synth_world / "coco_karpathy_train.json"), "image_root": str(synth_world)}
    ]
    r["train"].update(out=str(tmp_path / "ret"), max_steps=2, batch_size=8, num_workers=0)
    model = blip.load(finetune_retrieval(r))
    assert set(model.cfg.parts) == {"text_encoder", "itc", "itm"}
    # The two steps trained the weights that were loaded from the pretrained model.
    start = blip.load(pretrained, task="retrieval").model.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in model.model.state_dict().items() if k.startswith("text_"))
    test = str(synth_world / "coco_karpathy_test.json")
    # k_test covers every candidate, so no score is left at the floor value, where ties would decide ranks.
    metrics = evaluate_retrieval(model, test, str(synth_world), k_test=64)
    # The recalls, from the fine-tuned model's scores, by hand: a query's rank is how many candidates score above
    # its best correct one.
    rs = read_karpathy_eval(test, image_root=str(synth_world))
    i2t, t2i = retrieval_scores(model, rs, k_test=64, batch_size=3)
    assert (i2t > -100).all() and (t2i > -100).all()
    txt_ranks = [int((i2t[i] > i2t[i, texts].max()).sum()) for i, texts in enumerate(rs.img2txt)]
    img_ranks = [int((t2i[t] > t2i[t, rs.txt2img[t]]).sum()) for t in range(len(rs.texts))]
    for k in (1, 5, 10):
        assert metrics[f"txt_r{k}"] == pytest.approx(100 * sum(r < k for r in txt_ranks) / len(txt_ranks))
        assert metrics[f"img_r{k}"] == pytest.approx(100 * sum(r < k for r in img_ranks) / len(img_ranks))
    assert metrics["r_mean"] == pytest.approx(sum(metrics[f"{m}_r{k}"] for m in ("txt", "img") for k in (1, 5, 10)) / 6)
