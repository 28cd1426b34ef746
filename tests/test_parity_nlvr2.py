"""NLVR2 merge layers as the reference's nlvr_encoder builds them: concatenate-and-merge from text layer 6 (whatever
the depth), average below; a checkpoint's merge_layer keys say where merging starts."""

from __future__ import annotations

import pytest
import torch

from blip.checkpoint import load_checkpoint
from blip.model.blip import BlipModel
from blip.model.config import preset


def tiny_nlvr(layers: int, merge_from: int = 6) -> BlipModel:
    cfg = preset("tiny", task="nlvr2").replace(**{"text.layers": layers, "nlvr_merge_from": merge_from})
    torch.manual_seed(0)
    return BlipModel(cfg).eval()


def merging(model: BlipModel) -> list[bool]:
    return [hasattr(layer.crossattention.output, "merge_layer") for layer in model.text_encoder.encoder.layer]


@pytest.mark.parametrize("layers", [4, 8])
def test_reference_nlvr2_checkpoint_of_any_depth_loads(tmp_path, layers):
    # The reference's BertAttention(merge=layer_num >= 6): an 8-layer model merges in layers 6 and 7, a 4-layer one
    # nowhere. Written under the reference's names in its {"model": ...} .pth layout.
    sd = tiny_nlvr(layers).state_dict()
    assert sum(".merge_layer.weight" in k for k in sd) == max(0, layers - 6)
    torch.save({"model": sd}, tmp_path / "model_nlvr.pth")
    model, _, report = load_checkpoint(tmp_path / "model_nlvr.pth")
    assert model.cfg.nlvr and report.format == "reference"
    assert merging(model) == [i >= 6 for i in range(layers)]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_merge_layers_inferred_from_keys_not_from_depth(tmp_path):
    torch.save({"model": tiny_nlvr(4, merge_from=1).state_dict()}, tmp_path / "m.pth")
    model, _, _ = load_checkpoint(tmp_path / "m.pth")
    assert model.cfg.nlvr_merge_from == 1 and merging(model) == [False, True, True, True]


def attend(q_proj, k_proj, v_proj, x, image, heads):
    """Multi-head softmax(QK^T / sqrt(d)) V written out, as BertSelfAttention computes it (no mask)."""
    b, t, d = x.shape

    def split(y):
        return y.view(b, -1, heads, d // heads).transpose(1, 2)

    q, k, v = split(q_proj(x)), split(k_proj(image)), split(v_proj(image))
    probs = (q @ k.transpose(-1, -2) / (d // heads) ** 0.5).softmax(-1)
    return (probs @ v).transpose(1, 2).reshape(b, t, d)


def test_twin_cross_attention_averages_below_and_merges_from_the_first_merge_layer():
    model = tiny_nlvr(3, merge_from=2)
    torch.manual_seed(1)
    x = torch.randn(2, 5, model.cfg.text.hidden)
    images = (torch.randn(2, 7, model.cfg.vision.width), torch.randn(2, 7, model.cfg.vision.width))
    heads = model.cfg.text.heads
    for i, layer in enumerate(model.text_encoder.encoder.layer):
        ca = layer.crossattention
        out = ca.output
        h0 = out.dense0(attend(ca.self0.query, ca.self0.key, ca.self0.value, x, images[0], heads))
        h1 = out.dense1(attend(ca.self1.query, ca.self1.key, ca.self1.value, x, images[1], heads))
        # Reference BertSelfOutput (twin): merge_layer(cat(h0, h1)) when merging, (h0 + h1) / 2 otherwise.
        merged = out.merge_layer(torch.cat([h0, h1], dim=-1)) if i >= 2 else (h0 + h1) / 2
        expected = out.LayerNorm(merged + x)
        with torch.no_grad():
            got = ca.cross(x, ca.kv(images), None)
        assert (got - expected).abs().max() <= 1e-5
