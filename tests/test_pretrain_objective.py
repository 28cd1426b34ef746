"""The pretraining objective against the paper's definitions, computed independently on the same features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blip.model.config import preset
from blip.training.pretrain import BlipPretrain


def tiny_pretrain(queue: int = 8) -> BlipPretrain:
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
    return BlipPretrain(cfg, queue_size=queue)


def batch(b: int = 4, t: int = 7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 58, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return torch.randn(b, 3, 32, 32, generator=g), ids, torch.ones_like(ids)


def test_decoder_shares_all_but_self_attention():
    m = tiny_pretrain()
    enc, dec = m.text_encoder, m.text_decoder.bert
    assert dec.embeddings is enc.embeddings
    assert m.text_decoder.cls.predictions.decoder.weight is enc.embeddings.word_embeddings.weight
    for le, ld in zip(enc.encoder.layer, dec.encoder.layer):
        assert ld.crossattention is le.crossattention and ld.intermediate is le.intermediate
        assert ld.output is le.output and ld.attention is not le.attention


def test_losses_follow_the_definitions():
    m = tiny_pretrain().eval()  # no dropout, so an independent recomputation sees the same features
    pixels, ids, mask = batch()
    image_queue, text_queue = m.image_queue.clone(), m.text_queue.clone()
    ema_before = [p.clone() for p in m.visual_encoder_m.parameters()]
    losses = m(pixels, ids, mask, alpha=0.0, generator=torch.Generator().manual_seed(0))

    # momentum: q <- 0.995 q + 0.005 p
    for q0, q, p in zip(ema_before, m.visual_encoder_m.parameters(), m.visual_encoder.parameters()):
        assert torch.allclose(q, 0.995 * q0 + 0.005 * p, atol=1e-6)
    # ITC with alpha = 0: cross-entropy of online features against [momentum batch features, queue], diagonal positive
    with torch.no_grad():
        img = F.normalize(m.vision_proj(m.visual_encoder(pixels)[:, 0]), dim=-1)
        txt = F.normalize(m.text_proj(m.text_encoder(ids, mask)[:, 0]), dim=-1)
        img_m = F.normalize(m.vision_proj_m(m.visual_encoder_m(pixels)[:, 0]), dim=-1)
        txt_m = F.normalize(m.text_proj_m(m.text_encoder_m(ids, mask)[:, 0]), dim=-1)
        i2t = img @ torch.cat([txt_m.t(), text_queue], 1) / m.temp
        t2i = txt @ torch.cat([img_m.t(), image_queue], 1) / m.temp
        target = torch.arange(4)
        itc = (F.cross_entropy(i2t, target) + F.cross_entropy(t2i, target)) / 2
    assert torch.allclose(losses.itc, itc, atol=1e-5)
    # the queue received the momentum features at its pointer
    assert torch.allclose(m.image_queue[:, :4], img_m.t(), atol=1e-6) and int(m.queue_ptr) == 4
    # LM: [DEC] first, mean smoothed cross-entropy over the next tokens
    dec = ids.clone()
    dec[:, 0] = 58
    with torch.no_grad():
        logits = m.text_decoder(dec, mask, m.visual_encoder(pixels))
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 60), dec[:, 1:].reshape(-1), label_smoothing=0.1)
    assert torch.allclose(losses.lm, lm, atol=1e-5)
    assert torch.isfinite(losses.itm) and losses.itm > 0


def test_backward_reaches_every_trainable_part():
    m = tiny_pretrain().train()
    losses = m(*batch())
    losses.total.backward()
    for name in (
        "visual_encoder.blocks.0.attn.qkv.weight",
        "text_encoder.encoder.layer.0.crossattention.self.key.weight",
        "text_decoder.bert.encoder.layer.0.attention.self.query.weight",
        "itm_head.weight",
        "temp",
    ):
        assert m.get_parameter(name).grad is not None and m.get_parameter(name).grad.abs().sum() > 0, name
    assert all(p.grad is None for p in m.visual_encoder_m.parameters())


def test_queue_wraps_around():
    m = tiny_pretrain(queue=6)
    m.enqueue(torch.ones(4, 64), torch.ones(4, 64))
    m.enqueue(torch.full((4, 64), 2.0), torch.full((4, 64), 2.0))
    assert m.image_queue[0].tolist() == [2.0, 2.0, 1.0, 1.0, 2.0, 2.0] and int(m.queue_ptr) == 2
