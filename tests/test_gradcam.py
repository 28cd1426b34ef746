"""ITM Grad-CAM against transformers' BLIP on the same weights and pixels, and `blip gradcam` end to end."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.cli import main
from blip.gradcam import jet, upsample
from conftest import ENC

TEXTS = ["a red square on the left", "two dog", "the blue circle above a green triangle"]


def image(seed: int = 0, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))


def reference_gradcam(hf, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, layer: int):
    """LAVIS's compute_gradcam on transformers' BLIP: probabilities and gradients from its own attention outputs."""
    enc_ids = ids.clone()
    enc_ids[:, 0] = ENC  # the reference's [ENC] (transformers would keep [CLS])
    image_embeds = hf.vision_model(pixel_values=pixels).last_hidden_state
    out = hf.text_encoder(
        input_ids=enc_ids, attention_mask=mask, encoder_hidden_states=image_embeds, output_attentions=True
    )
    probs = out.cross_attentions[layer]
    probs.retain_grad()
    logits = hf.itm_head(out.last_hidden_state[:, 0])
    logits[:, 1].sum().backward()
    b, heads, t, n = probs.shape
    side = round((n - 1) ** 0.5)
    m = mask.view(b, 1, t, 1, 1).float()
    cams = probs[:, :, :, 1:].reshape(b, heads, t, side, side) * m
    grads = probs.grad[:, :, :, 1:].clamp(0).reshape(b, heads, t, side, side) * m
    gradcam = (cams * grads).mean(1)
    lengths = mask.sum(-1) - 2
    result = []
    for i in range(b):
        g = gradcam[i].detach()
        n_tok = int(lengths[i])
        result.append((g[0], g[1 : n_tok + 1].sum(0) / n_tok, g[1 : n_tok + 1]))
    return result, logits.detach().softmax(-1)[:, 1]


@pytest.mark.parametrize("layer", [0, 1])
def test_gradcam_equals_transformers(hf_models, layer):
    hf, folder = hf_models["retrieval"]
    model = blip.load(folder)
    img = image()
    ours = model.gradcam(img, TEXTS, layer=layer)
    ids, mask = model.tokenizer(TEXTS, max_length=35)
    pixels = model.pixels([img]).expand(len(TEXTS), -1, -1, -1)
    ref, itm = reference_gradcam(hf, pixels, ids, mask, layer)
    assert len(ours) == len(TEXTS)
    for cam, (enc, mean, per_token), p, text, length in zip(ours, ref, itm, TEXTS, mask.sum(-1).tolist()):
        assert cam.layer == layer and len(cam.tokens) == length - 2 == len(per_token)
        assert " ".join(cam.tokens) == text  # the tiny vocabulary holds every word whole
        assert cam.mean.shape == (2, 2)  # 32-px images, 16-px patches
        assert float(enc.abs().max()) > 0  # a real comparison, not of two zero maps
        if layer == 0:
            assert float(mean.abs().max()) > 0
        else:  # in the last layer only [ENC]'s output reaches the ITM head: the tokens' maps must be zero
            assert float(per_token.abs().max()) == 0
        torch.testing.assert_close(cam.enc, enc, atol=1e-5, rtol=0)
        torch.testing.assert_close(cam.mean, mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(cam.per_token, per_token, atol=1e-5, rtol=0)
        assert abs(cam.itm - float(p)) <= 1e-5
    # The match probability is the one match() reports, and Grad-CAM leaves no gradients on the weights.
    assert [c.itm for c in ours] == pytest.approx([s["itm"] for s in model.match([img], TEXTS)], abs=1e-6)
    assert all(p.grad is None for p in model.model.parameters())


def test_gradcam_default_layer_is_the_middle_one_and_bad_layers_are_refused(hf_models):
    model = blip.load(hf_models["retrieval"][1])
    assert model.gradcam(image(), "a dog").layer == 0  # LAVIS: 6 of 12; never the last layer (index 1 here)
    with pytest.raises(blip.BlipError, match="layer 2 does not exist"):
        model.gradcam(image(), "a dog", layer=2)
    with pytest.raises(blip.BlipError, match="needs a model with a itm"):
        blip.load(hf_models["caption"][1]).gradcam(image(), "a dog")


def test_upsample_and_colour_map():
    grid = torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    heat = upsample(grid, (40, 30), blur=False)
    assert heat.shape == (30, 40) and heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    assert heat[-1, -1] > heat[0, 0]  # the hot cell stays in its corner
    x = np.linspace(0, 1, 1001)  # matplotlib's own jet (a 256-entry table, hence the tolerance)
    np.testing.assert_allclose(jet(x), matplotlib.colormaps["jet"](x)[:, :3], atol=0.02)


def test_gradcam_cli_writes_an_overlay(hf_models, tmp_path, capsys):
    path = tmp_path / "in.png"
    image().save(path)
    out = tmp_path / "heat.png"
    code = main(
        [
            "gradcam",
            str(path),
            "--text",
            "a red square",
            "--model",
            str(hf_models["retrieval"][1]),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    assert Image.open(out).size == Image.open(path).size
    record = capsys.readouterr().out
    assert '"itm"' in record and '"tokens": ["a", "red", "square"]' in record
    assert (
        main(
            [
                "gradcam",
                str(tmp_path / "missing.png"),
                "--text",
                "x",
                "--model",
                str(hf_models["retrieval"][1]),
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_separable_blur_equals_torchvision():
    from torchvision.transforms.functional import gaussian_blur

    from blip.gradcam import _gaussian_blur

    torch.manual_seed(0)
    x = torch.rand(1, 1, 50, 70)
    sigma = 3.2
    radius = int(3 * sigma)
    want = gaussian_blur(x, [2 * radius + 1] * 2, [sigma] * 2)
    torch.testing.assert_close(_gaussian_blur(x, sigma), want, atol=1e-5, rtol=0)
