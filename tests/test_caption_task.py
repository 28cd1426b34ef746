"""Captioning fine-tuning: the loss is the reference's (prompt and padding not targets); end-to-end on the
synthetic world: pretrain a step, fine-tune, evaluate with the COCO toolkit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import blip
from blip.cli.common import load_recipe
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.tasks.caption import CaptionTraining, evaluate_caption
from blip.tasks.finetune import finetune
from blip.tasks.pretrain import pretrain
from test_trainer import ROOT, recipe


def test_prompt_and_padding_are_not_targets():
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        task="caption",
        **{"text.vocab_size": 50, "text.dec_id": 48, "vision.image_size": 32, "vision.patch_size": 16},
    )
    model = BlipModel(cfg).eval()
    ids = torch.randint(5, 48, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    pixels = torch.randn(3, 3, 32, 32)
    loss = CaptionTraining(model, prompt_tokens=4)(pixels, ids, mask)
    # The reference: targets = ids with [PAD] and the first prompt_length positions set to -100; mean over the rest.
    dec = ids.clone()
    dec[:, 0] = 48
    targets = dec.masked_fill(mask == 0, -100)
    targets[:, :4] = -100
    with torch.no_grad():
        logits = model.text_decoder(dec, mask, model.encode_image(pixels))
    ref = F.cross_entropy(
        logits[:, :-1].reshape(-1, 50), targets[:, 1:].reshape(-1), ignore_index=-100, label_smoothing=0.1
    )
    assert torch.allclose(loss, ref, atol=1e-5)


def test_finetune_and_evaluate_on_synthetic_world(tmp_path, synth_world):
    pretrained = pretrain(recipe(synth_world, tmp_path / "pre", 1))
    r = load_recipe(str(ROOT / "configs/caption_tiny_synth.yaml"), [])
    r["init"] = str(pretrained)
    r["data"] = [
        {"reader": "karpathy", "path": str(synth_world / "coco_karpathy_train.json"), "image_root": str(synth_world)}
    ]
    r["train"].update(out=str(tmp_path / "cap"), max_steps=2, batch_size=8, num_workers=0)
    final = finetune("caption", r)
    model = blip.load(final)
    assert model.cfg.parts == ("text_decoder",)
    metrics = evaluate_caption(
        model,
        str(synth_world / "coco_karpathy_test.json"),
        str(synth_world),
        meteor=False,
        max_length=8,
        min_length=5,
        out=str(tmp_path / "caps.json"),
    )
    assert {"Bleu_4", "ROUGE_L", "CIDEr"} <= metrics.keys()
    assert (tmp_path / "caps.json").exists()
