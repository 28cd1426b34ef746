"""NLVR2: twin-branch cross-attention initialised from a pretrained model, reference checkpoint names, training."""

from __future__ import annotations

import pytest
import torch

from blip.checkpoint import load_checkpoint
from blip.cli.common import load_recipe
from blip.tasks.finetune import finetune
from blip.tasks.nlvr2 import NEW_PARAMETERS, evaluate_nlvr2
from blip.tasks.pretrain import pretrain
from conftest import ENC
from test_trainer import ROOT, recipe


def test_twin_branches_copied_from_pretrained_reduce_to_single_attention(hf_models, pixels):
    hf, folder = hf_models["retrieval"]
    model, _, report = load_checkpoint(
        folder, task="nlvr2", allow_missing=NEW_PARAMETERS, overrides={"nlvr_merge_from": 1}
    )
    assert any("self0/self1" in d for d in report.defaulted)
    layers = model.text_encoder.encoder.layer
    assert [hasattr(layer.crossattention.output, "merge_layer") for layer in layers] == [False, True]  # merges from 1
    with torch.no_grad():
        for layer in layers:  # merging two equal branches with [I/2, I/2] is their average
            if layer.crossattention.merge:
                eye = torch.eye(128) / 2
                layer.crossattention.output.merge_layer.weight.copy_(torch.cat([eye, eye], dim=1))
                layer.crossattention.output.merge_layer.bias.zero_()
        ids = torch.tensor([[ENC, 5, 6, 7, 3], [ENC, 8, 9, 3, 0]])
        mask = (ids != 0).long()
        embeds = model.encode_image(pixels[:2])
        ours = model.text_encoder(ids, mask, (embeds, embeds))
        # The same image on both branches must give transformers' single-image grounded encoder output.
        ref = hf.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=hf.vision_model(pixel_values=pixels[:2])[0]
        ).last_hidden_state
    assert (ours - ref).abs().max() <= 1e-4


def test_reference_nlvr2_names_round_trip(hf_models, tmp_path):
    _, folder = hf_models["retrieval"]
    model, _, _ = load_checkpoint(folder, task="nlvr2", allow_missing=NEW_PARAMETERS, overrides={"nlvr_merge_from": 1})
    names = set(model.state_dict())
    # The reference nlvr_encoder's names: two query/key/value branches and two output denses per layer.
    for expected in (
        "text_encoder.encoder.layer.0.crossattention.self0.query.weight",
        "text_encoder.encoder.layer.0.crossattention.self1.value.bias",
        "text_encoder.encoder.layer.0.crossattention.output.dense0.weight",
        "text_encoder.encoder.layer.1.crossattention.output.merge_layer.weight",
        "text_encoder.encoder.layer.1.crossattention.output.LayerNorm.weight",
        "cls_head.0.weight",
        "cls_head.2.bias",
    ):
        assert expected in names
    torch.save({"model": model.state_dict()}, tmp_path / "model_base_nlvr.pth")
    loaded, _, report = load_checkpoint(tmp_path / "model_base_nlvr.pth")
    assert loaded.cfg.nlvr and report.format == "reference" and not report.defaulted
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_finetune_and_evaluate_on_synthetic_world(tmp_path, synth_world):
    pretrained = pretrain(recipe(synth_world, tmp_path / "pre", 1))
    r = load_recipe(str(ROOT / "configs/nlvr2_tiny_synth.yaml"), [])
    r["init"] = str(pretrained)
    r["data"] = [{"path": str(synth_world / "nlvr2/nlvr_train.json"), "image_root": str(synth_world)}]
    r["train"].update(out=str(tmp_path / "nlvr"), max_steps=2, batch_size=4, num_workers=0)
    import json

    import blip
    from blip.data.text import pre_caption

    model = blip.load(finetune("nlvr2", r))
    start = blip.load(pretrained, task="nlvr2", allow_missing=NEW_PARAMETERS).model.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in model.model.state_dict().items() if k.startswith("text_"))
    dev = synth_world / "nlvr2/nlvr_dev.json"
    metrics = evaluate_nlvr2(model, str(dev), str(synth_world))
    # By hand, one statement at a time: the image pair through the ViT, the statement through the twin encoder,
    # the head's argmax against the label.
    records = json.loads(dev.read_text())
    correct = 0
    with torch.no_grad():
        for rec in records:
            embeds = model.model.encode_image(model.pixels([str(synth_world / p) for p in rec["images"]]))
            ids, mask = model.tokenizer([pre_caption(rec["sentence"], 40)], max_length=40)
            logits = model.model.nlvr_logits(embeds[:1], embeds[1:], ids, mask)
            correct += int(logits.argmax(-1)) == (rec["label"] == "True")
    assert metrics == {"accuracy": pytest.approx(100 * correct / len(records)), "pairs": len(records)}
