"""Cross-attention with beams folded into the query length, against softmax(QK^T / sqrt(d)) V written out per row."""

import math

import pytest
import torch

from blip.model.config import TextConfig
from blip.model.text import Attention

HIDDEN, HEADS, WIDTH, TOKENS = 32, 4, 24, 7


def _attention(dropout: float = 0.1) -> Attention:
    torch.manual_seed(0)
    cfg = TextConfig(
        vocab_size=50, hidden=HIDDEN, layers=1, heads=HEADS, intermediate=64, dropout=dropout, attention_dropout=dropout
    )
    attn = Attention(cfg, WIDTH).eval()
    for p in attn.parameters():  # larger than BERT's init, so the softmax is far from uniform
        torch.nn.init.normal_(p, std=0.5)
    return attn


def _by_hand(attn: Attention, x: torch.Tensor, image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """One query row at a time against its own image: per head softmax(q k^T / sqrt(d)) over kept tokens, then v."""
    s = attn.self
    d = HIDDEN // HEADS
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        q = x[i] @ s.query.weight.T + s.query.bias  # (T, hidden)
        k = image[i] @ s.key.weight.T + s.key.bias  # (N, hidden)
        v = image[i] @ s.value.weight.T + s.value.bias
        ctx = []
        for h in range(HEADS):
            cols = slice(h * d, (h + 1) * d)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
            scores[:, ~keep[i]] = float("-inf")
            ctx.append(scores.softmax(-1) @ v[:, cols])
        dense = attn.output.dense
        out[i] = attn.output.LayerNorm(torch.cat(ctx, -1) @ dense.weight.T + dense.bias + x[i])
    return out


@pytest.mark.parametrize("beams,t", [(1, 5), (3, 1), (3, 4)])
def test_grouped_cross_attention_equals_softmax_by_hand(beams, t):
    attn = _attention()
    images, n = 2, TOKENS
    g = torch.Generator().manual_seed(beams * 10 + t)
    image = torch.randn(images, n, WIDTH, generator=g)
    keep = torch.ones(images, n, dtype=torch.bool)
    keep[1, -3:] = False  # padding of the second source (a question shorter than the first)
    x = torch.randn(images * beams, t, HIDDEN, generator=g)
    mask = keep[:, None, None, :]
    with torch.no_grad():
        grouped = attn.cross(x, attn.cross_kv(image), mask)
        repeated = image.repeat_interleave(beams, 0)
        # kv()'s layout (single passes) goes through scaled_dot_product_attention instead.
        per_beam = attn.cross(x, attn.kv(repeated), mask.repeat_interleave(beams, 0))
        expected = _by_hand(attn, x, repeated, keep.repeat_interleave(beams, 0))
    torch.testing.assert_close(grouped, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_beam, expected, atol=1e-5, rtol=1e-5)
    # The padded tokens really are ignored: changing them changes nothing.
    changed = image.clone()
    changed[1, -3:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(attn.cross(x, attn.cross_kv(changed), mask), grouped, atol=1e-5, rtol=1e-5)


def test_training_path_equals_inference_path_without_dropout():
    """Training (kv(), scaled_dot_product_attention) and decoding (cross_kv()) agree when dropout is off."""
    attn = _attention(dropout=0.0)
    g = torch.Generator().manual_seed(3)
    image, x = torch.randn(2, TOKENS, WIDTH, generator=g), torch.randn(6, 2, HIDDEN, generator=g)
    with torch.no_grad():
        inference = attn.cross(x, attn.cross_kv(image), None)
        attn.train()
        training = attn.cross(x, attn.kv(image), None)
    torch.testing.assert_close(training, inference, atol=1e-5, rtol=1e-5)


def test_recorded_probabilities_are_the_softmax_and_carry_gradients():
    attn = _attention()
    g = torch.Generator().manual_seed(4)
    image, x = torch.randn(2, TOKENS, WIDTH, generator=g), torch.randn(2, 3, HIDDEN, generator=g)
    attn.record_probs = []
    out = attn.cross(x, attn.cross_kv(image), None)
    (probs,) = attn.record_probs
    s = attn.self
    d = HIDDEN // HEADS
    q = (x @ s.query.weight.T + s.query.bias).view(2, 3, HEADS, d).transpose(1, 2)
    k = (image @ s.key.weight.T + s.key.bias).view(2, TOKENS, HEADS, d).transpose(1, 2)
    torch.testing.assert_close(probs, (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1), atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), probs)
    assert grad.shape == probs.shape and bool(grad.abs().sum() > 0)


def test_caption_itm_of_several_captions_per_image_equals_match():
    """caption() scores its num_captions per image against one copy of the image's tokens (folded rows);
    match() scores each (image, caption) pair with its own copy: the probabilities must be the same."""
    import numpy as np
    from PIL import Image

    from blip.api import Blip
    from blip.model.blip import BlipModel
    from blip.model.config import preset
    from blip.tokenizer import Tokenizer

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]", "a", "picture", "of"]
    vocab += [f"w{i}" for i in range(40)]
    cfg = preset("tiny", task="pretrain")
    cfg.text.vocab_size, cfg.text.cls_id, cfg.text.sep_id, cfg.text.dec_id, cfg.text.enc_id = len(vocab), 2, 3, 5, 6
    model = Blip(BlipModel(cfg).eval(), Tokenizer.from_vocab(vocab))
    assert model.model.has("itm") and model.model.has("text_decoder")
    rng = np.random.default_rng(0)
    size = cfg.vision.image_size
    images = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(2)]
    caps = model.caption(
        images, strategy="nucleus", num_captions=3, max_length=8, generator=torch.Generator().manual_seed(0)
    )
    assert len(caps) == 6 and len({c.text for c in caps}) > 1
    pairs = model.match([images[i // 3] for i in range(6)], [c.text for c in caps])
    assert [c.itm for c in caps] == pytest.approx([p["itm"] for p in pairs], abs=1e-5)
