"""Training does what the paper and the reference code say: losses fall, the schedules follow their formulas,
accumulation and gradient checkpointing change nothing, bf16 runs on CPU, and ITC (alpha > 0), ITM and NLVR2's
twin cross-attention equal hand computations of their definitions."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import blip
from blip.model.blip import BlipModel
from blip.model.config import for_task, preset
from blip.model.vision import VisionEncoder
from blip.tasks.caption import CaptionTraining
from blip.training.pretrain import BlipPretrain
from blip.training.trainer import TrainConfig, Trainer, lr_at

VOCAB, CLS, SEP, DEC, ENC = 60, 2, 3, 58, 59


def tiny_cfg(**overrides):
    return preset(
        "tiny",
        **{
            "text.vocab_size": VOCAB,
            "text.dec_id": DEC,
            "text.enc_id": ENC,
            "text.cls_id": CLS,
            "text.sep_id": SEP,
            "vision.image_size": 32,
            "vision.patch_size": 16,
            **overrides,
        },
    )


def fixed_batch(b: int = 4, t: int = 7, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, DEC, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    return torch.randn(b, 3, 32, 32, generator=g), ids, torch.ones_like(ids)


# ---------------------------------------------------------------------------------------------- losses fall
def test_pretraining_losses_fall_on_a_fixed_batch():
    torch.manual_seed(0)
    model = BlipPretrain(tiny_cfg(), queue_size=8).train()
    pixels, ids, mask = fixed_batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        losses = model(pixels, ids, mask, alpha=0.4, generator=g)
        history.append({k: float(getattr(losses, k).detach()) for k in ("itc", "itm", "lm")})
        opt.zero_grad()
        losses.total.backward()
        opt.step()
    first, last = history[0], history[-1]
    # Memorising 4 captions: the LM loss collapses.
    assert last["lm"] < 0.3 * first["lm"], history
    # ITC ranks each pair among 4 batch + 8 queue candidates, uniform being log(12); the queue holds earlier copies
    # of the same 4 pairs, so it cannot go near 0, but it must fall well below chance.
    assert last["itc"] < 0.8 * first["itc"] and last["itc"] < math.log(12) - 0.3, history
    # ITM: 1 positive per 2 negatives; the best constant guess scores H(1/3) = 0.6365, learning must beat it
    # (averaged over the last 5 steps: the negatives are sampled).
    itm = sum(h["itm"] for h in history[-5:]) / 5
    assert itm < 0.8 * first["itm"] and itm < 0.6365 - 0.03, history


# ---------------------------------------------------------------------------------------------- schedules
def test_step_schedule_warms_up_then_decays_per_epoch():
    cfg = TrainConfig(lr=3e-4, warmup_lr=1e-6, warmup_steps=3000, lr_decay=0.9, min_lr=1e-6, schedule="step", epochs=20)
    # Warmup: warmup_lr + (lr - warmup_lr) * step / warmup_steps in epoch 0 (reference warmup_lr_schedule).
    assert lr_at(cfg, 0, 0, 10_000) == pytest.approx(1e-6)
    assert lr_at(cfg, 0, 1500, 10_000) == pytest.approx(1e-6 + 299e-6 * 0.5)
    assert lr_at(cfg, 0, 2999, 10_000) == pytest.approx(1e-6 + 299e-6 * 2999 / 3000)
    assert lr_at(cfg, 0, 3000, 10_000) == pytest.approx(3e-4)
    assert lr_at(cfg, 0, 9000, 10_000) == pytest.approx(3e-4)
    # Then max(min_lr, lr * 0.9^epoch) at every step of the epoch (reference step_lr_schedule).
    assert lr_at(cfg, 1, 0, 10_000) == pytest.approx(2.7e-4)
    assert lr_at(cfg, 5, 500, 10_000) == pytest.approx(3e-4 * 0.59049)
    assert lr_at(cfg, 19, 0, 10_000) == pytest.approx(3e-4 * 0.9**19)
    floor = TrainConfig(lr=1e-5, min_lr=1e-6, lr_decay=0.9, schedule="step", epochs=40)
    assert lr_at(floor, 30, 0, 100) == pytest.approx(1e-6)  # 1e-5 * 0.9^30 = 4.2e-7 is below the floor
    # The warmup counts optimiser steps: with 2 micro-batches a step, micro-batch 3000 is step 1500.
    accum = TrainConfig(lr=3e-4, warmup_lr=1e-6, warmup_steps=3000, grad_accum=2)
    assert lr_at(accum, 0, 3000, 10_000) == pytest.approx(1e-6 + 299e-6 * 0.5)


def test_cosine_schedule_per_epoch():
    cfg = TrainConfig(lr=1e-5, min_lr=0.0, schedule="cosine", epochs=6)
    # (lr - min_lr) * 0.5 * (1 + cos(pi * epoch / epochs)) + min_lr, constant within an epoch (reference
    # cosine_lr_schedule); epoch 2 of 6 is cos(pi/3) = 0.5, epoch 3 is cos(pi/2) = 0.
    assert [lr_at(cfg, e, 7, 100) for e in range(6)] == pytest.approx(
        [1e-5, 1e-5 * 0.5 * (1 + math.sqrt(3) / 2), 7.5e-6, 5e-6, 2.5e-6, 1e-5 * 0.5 * (1 - math.sqrt(3) / 2)]
    )
    assert lr_at(cfg, 4, 0, 100) == lr_at(cfg, 4, 99, 100)
    with_floor = TrainConfig(lr=1e-4, min_lr=1e-6, schedule="cosine", epochs=4)
    assert lr_at(with_floor, 2, 0, 10) == pytest.approx(1e-6 + 99e-6 * 0.5)


# ---------------------------------------------------------------------------------------------- accumulation
@dataclass
class Pair:
    pixels: torch.Tensor
    ids: torch.Tensor


class Pairs(torch.utils.data.Dataset):
    """8 fixed image-caption pairs, every caption 7 tokens (no padding, so per-batch token means compose)."""

    def __init__(self):
        self.pixels, self.ids, _ = fixed_batch(8)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return Pair(self.pixels[i], self.ids[i])


def caption_loss(m, batch, info):
    return {"loss": m(batch["pixels"], batch["ids"], torch.ones_like(batch["ids"]))}


def one_step(model: BlipModel, out, batch_size: int, grad_accum: int) -> tuple[Trainer, list]:
    cfg = TrainConfig(
        out=str(out),
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=1e-3,
        warmup_steps=0,
        max_steps=1,
        num_workers=0,
        progress=False,
        checkpoint_every=100,
        bf16=False,
    )
    trainer = Trainer(cfg, CaptionTraining(model, prompt_tokens=1), Pairs(), caption_loss)
    return trainer, trainer.fit(resume=False)


def test_two_micro_batches_of_four_equal_one_batch_of_eight(tmp_path):
    torch.manual_seed(0)
    model = BlipModel(for_task(tiny_cfg(), "caption"))
    start = copy.deepcopy(model)
    whole, _ = one_step(copy.deepcopy(start), tmp_path / "whole", 8, 1)
    accum, logged = one_step(copy.deepcopy(start), tmp_path / "accum", 4, 2)
    assert len(logged) == 1 and logged[0]["lr"] == pytest.approx(1e-3)
    # Independently: the gradient of the mean loss over all 8 pairs at the starting weights.
    ref = CaptionTraining(copy.deepcopy(start), prompt_tokens=1).train()
    pixels, ids, _ = fixed_batch(8)
    ref(pixels, ids, torch.ones_like(ids)).backward()
    grads = dict(ref.named_parameters())
    # AdamW's first moment after one step is (1 - beta1) * gradient: it shows the gradient each trainer applied.
    for trainer in (whole, accum):
        for name, p in trainer.model.named_parameters():
            g = trainer.optimizer.state[p]["exp_avg"] / 0.1
            assert torch.allclose(g, grads[name].grad, atol=1e-6, rtol=1e-4), name
    for (name, a), b in zip(whole.model.named_parameters(), accum.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert any(not torch.equal(a, b) for a, b in zip(whole.model.parameters(), start.parameters()))


# ---------------------------------------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("drop_path", [0.0, 0.2])
def test_vit_gradient_checkpointing_equals_none(drop_path):
    torch.manual_seed(0)
    plain = VisionEncoder(tiny_cfg(**{"vision.drop_path": drop_path}).vision).train()
    ckpt = copy.deepcopy(plain)
    ckpt.cfg = dataclasses.replace(plain.cfg, grad_ckpt_from=1)
    calls = [0] * len(ckpt.blocks)
    for i, block in enumerate(ckpt.blocks):
        # A pre-hook: the recomputation stops as soon as it has what backward needs, before forward hooks.
        block.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    pixels = torch.randn(2, 3, 32, 32)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(7)  # the same drop-path draws; checkpointing replays them in the recomputation
        out = model(pixels)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    # Blocks from index 1 on really were checkpointed: run again during backward.
    assert calls == [1] + [2] * (len(calls) - 1)


# ---------------------------------------------------------------------------------------------- bf16
def test_bf16_autocast_pretraining_step_runs_on_cpu():
    torch.manual_seed(0)
    model = BlipPretrain(tiny_cfg(), queue_size=8).train()
    twin = copy.deepcopy(model)
    pixels, ids, mask = fixed_batch()
    fp32 = twin(pixels, ids, mask, alpha=0.4, hardest_negatives=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(pixels, ids, mask, alpha=0.4, hardest_negatives=True)
        # The matmuls really ran in bf16.
        assert model.text_decoder.cls.predictions(torch.randn(1, 96)).dtype == torch.bfloat16
    losses.total.backward()
    for name in ("itc", "itm", "lm"):
        low, full = float(getattr(losses, name).detach()), float(getattr(fp32, name).detach())
        assert abs(low - full) < 0.05 * full, name
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 (autocast, not casting)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@dataclass
class Caption:
    pixels: torch.Tensor
    ids: torch.Tensor


class Captions(Pairs):
    def __getitem__(self, i):
        return Caption(self.pixels[i], self.ids[i])


def test_trainer_bf16_pretraining_steps_on_cpu(tmp_path):
    torch.manual_seed(0)
    model = BlipPretrain(tiny_cfg(), queue_size=8)
    cfg = TrainConfig(
        out=str(tmp_path),
        batch_size=4,
        lr=1e-3,
        warmup_steps=0,
        max_steps=2,
        num_workers=0,
        progress=False,
        checkpoint_every=100,
        bf16=True,
    )

    def loss_fn(m, batch, info):
        losses = m(batch["pixels"], batch["ids"], torch.ones_like(batch["ids"]), alpha=0.4)
        return {"loss": losses.total, "lm": losses.lm}

    before = copy.deepcopy(model.state_dict())
    history = Trainer(cfg, model, Captions(), loss_fn).fit(resume=False)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert not torch.equal(model.itm_head.weight, before["itm_head.weight"])
    assert model.image_queue.dtype == torch.float32 and int(model.queue_ptr) == 0  # 2 steps x 4 wrap a queue of 8


def test_bf16_inference_on_cpu_is_close_to_fp32(hf_models):
    images = [Image.new("RGB", (40, 40), c) for c in ((200, 30, 30), (20, 40, 220))]
    texts = ["a red square", "two blue circles"]
    fp32 = blip.load(hf_models["retrieval"][1])
    bf16 = blip.load(hf_models["retrieval"][1], dtype="bfloat16")
    a, b = fp32.match(images, texts), bf16.match(images, texts)
    assert [x["itm"] for x in b] == pytest.approx([x["itm"] for x in a], abs=0.03)
    assert [x["itc"] for x in b] == pytest.approx([x["itc"] for x in a], abs=0.03)
    caps = blip.load(hf_models["caption"][1], dtype="bfloat16").caption(images, max_length=12)
    assert len(caps) == 2 and all(math.isfinite(c.logprob) for c in caps)


# ---------------------------------------------------------------------------------------------- ITC / ITM
def perturbed_pretrain() -> BlipPretrain:
    """A tiny pretraining model whose momentum encoders differ from the online ones (as after some training)."""
    torch.manual_seed(0)
    model = BlipPretrain(tiny_cfg(), queue_size=8).eval()
    with torch.no_grad():
        for name in ("visual_encoder_m", "vision_proj_m", "text_encoder_m", "text_proj_m"):
            for p in getattr(model, name).parameters():
                p.add_(torch.randn_like(p) * 0.05)
        model.temp.fill_(0.1)
    return model


def test_itc_with_momentum_distillation_follows_the_paper():
    model = perturbed_pretrain()
    pixels, ids, mask = fixed_batch()
    alpha, m = 0.4, model.momentum
    # The momentum encoders are first moved towards the online ones: theta_m <- m theta_m + (1 - m) theta.
    ema = {}
    for online in ("visual_encoder", "vision_proj", "text_encoder", "text_proj"):
        ema[online] = copy.deepcopy(getattr(model, online + "_m"))
        with torch.no_grad():
            for q, p in zip(ema[online].parameters(), getattr(model, online).parameters()):
                q.copy_(m * q + (1 - m) * p)
    image_queue, text_queue = model.image_queue.clone(), model.text_queue.clone()
    with torch.no_grad():
        loss, _, _ = model.itc(
            pixels, ids, mask, model.image_embed(model.encode_image(pixels)), model.text_embed(ids, mask), alpha
        )
        img = F.normalize(model.vision_proj(model.visual_encoder(pixels)[:, 0]), dim=-1)
        txt = F.normalize(model.text_proj(model.text_encoder(ids, mask)[:, 0]), dim=-1)
        img_m = F.normalize(ema["vision_proj"](ema["visual_encoder"](pixels)[:, 0]), dim=-1)
        txt_m = F.normalize(ema["text_proj"](ema["text_encoder"](ids, mask)[:, 0]), dim=-1)
    temp, b = 0.1, 4
    texts_all, images_all = torch.cat([txt_m, text_queue.t()]), torch.cat([img_m, image_queue.t()])
    loss_i2t = loss_t2i = 0.0
    for i in range(b):  # one row at a time, as the paper writes it
        p_i2t = F.softmax(img[i] @ texts_all.t() / temp, dim=0)
        p_t2i = F.softmax(txt[i] @ images_all.t() / temp, dim=0)
        q_i2t = F.softmax(img_m[i] @ texts_all.t() / temp, dim=0)  # momentum similarities, pseudo-targets
        q_t2i = F.softmax(txt_m[i] @ images_all.t() / temp, dim=0)
        y = F.one_hot(torch.tensor(i), b + 8).float()
        loss_i2t -= ((alpha * q_i2t + (1 - alpha) * y) * p_i2t.log()).sum() / b
        loss_t2i -= ((alpha * q_t2i + (1 - alpha) * y) * p_t2i.log()).sum() / b
    assert torch.allclose(loss, (loss_i2t + loss_t2i) / 2, atol=1e-5)
    # Distillation changes the loss: alpha = 0 would give another value on these features.
    hard = (
        -(
            sum(
                F.log_softmax(img[i] @ texts_all.t() / temp, 0)[i] + F.log_softmax(txt[i] @ images_all.t() / temp, 0)[i]
                for i in range(b)
            )
            / b
        )
        / 2
    )
    assert abs(float(loss) - float(hard)) > 1e-3
    for online, module in ema.items():
        for q, q_model in zip(module.parameters(), getattr(model, online + "_m").parameters()):
            assert torch.allclose(q, q_model, atol=1e-6)
    assert torch.allclose(model.text_queue[:, :4], txt_m.t(), atol=1e-6) and int(model.queue_ptr) == 4


@pytest.mark.parametrize("negatives", ["hardest", "similarity", "uniform"])
def test_itm_with_hard_negatives_follows_the_paper(negatives):
    hardest = negatives == "hardest"
    model = perturbed_pretrain()
    model.itm_negatives = "uniform" if negatives == "uniform" else "similarity"
    pixels, ids, mask = fixed_batch()
    ids[1, 4:] = 0  # one padded caption, so a negative text brings its own mask
    mask = (ids != 0).long()
    ids[1, 3] = SEP
    mask[1, 3] = 1
    b = 4
    with torch.no_grad():
        embeds = model.encode_image(pixels)
        img, txt = model.image_embed(embeds), model.text_embed(ids, mask)
        _, sim_i2t, sim_t2i = model.itc(pixels, ids, mask, img, txt, 0.4)
        # Negatives: per image a text, per text an image, drawn with probability softmax(similarity) over the
        # batch, the positive excluded (reference: +1e-4, diagonal zeroed).
        w_i2t = F.softmax(sim_i2t[:, :b], dim=1) + 1e-4
        w_t2i = F.softmax(sim_t2i[:, :b], dim=1) + 1e-4
        w_i2t.fill_diagonal_(0)
        w_t2i.fill_diagonal_(0)
        g = torch.Generator().manual_seed(3)
        got = model.itm(embeds, ids, mask, w_i2t, w_t2i, generator=g, hardest=hardest)
        if hardest:
            neg_text, neg_image = w_i2t.argmax(1), w_t2i.argmax(1)
        elif negatives == "uniform":
            # Any other pair of the batch with the same chance, whatever its similarity.
            g = torch.Generator().manual_seed(3)
            others = 1.0 - torch.eye(b)
            neg_text = torch.multinomial(others, 1, generator=g)[:, 0]
            neg_image = torch.multinomial(others, 1, generator=g)[:, 0]
        else:
            g = torch.Generator().manual_seed(3)
            neg_text = torch.multinomial(w_i2t, 1, generator=g)[:, 0]
            neg_image = torch.multinomial(w_t2i, 1, generator=g)[:, 0]
        assert (neg_text != torch.arange(b)).all() and (neg_image != torch.arange(b)).all()
        enc = ids.clone()
        enc[:, 0] = ENC
        terms = []
        for i in range(b):
            pairs = [(i, i, 1), (int(neg_image[i]), i, 0), (i, int(neg_text[i]), 0)]
            for image, text, label in pairs:
                n = int(mask[text].sum())
                states = model.text_encoder(
                    enc[text : text + 1, :n], mask[text : text + 1, :n], embeds[image : image + 1]
                )
                terms.append(-F.log_softmax(model.itm_head(states[0, 0]), dim=0)[label])
    assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-5)


# ---------------------------------------------------------------------------------------------- NLVR2
def _attend(q, k, v, heads, mask=None):
    """Multi-head softmax(q k^T / sqrt(d)) v, written out."""
    t, d = q.shape
    hd = d // heads
    q, k, v = (x.view(-1, heads, hd).transpose(0, 1) for x in (q, k, v))
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[None, None, :], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(0, 1).reshape(t, d)


def ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def hand_nlvr(
    model: BlipModel, ids: torch.Tensor, mask: torch.Tensor, image0: torch.Tensor, image1: torch.Tensor
) -> torch.Tensor:
    """NLVR2 logits of one statement, the MED encoder written out layer by layer (reference nlvr_encoder)."""
    enc = model.text_encoder
    heads = model.cfg.text.heads
    word = enc.embeddings.word_embeddings.weight[ids] + enc.embeddings.position_embeddings.weight[: len(ids)]
    x = ln(word, enc.embeddings.LayerNorm)
    for layer in enc.encoder.layer:
        sa = layer.attention.self
        ctx = _attend(sa.query(x), sa.key(x), sa.value(x), heads, mask)
        x = ln(x + layer.attention.output.dense(ctx), layer.attention.output.LayerNorm)
        ca = layer.crossattention
        branches = []
        for proj, dense, image in ((ca.self0, ca.output.dense0, image0), (ca.self1, ca.output.dense1, image1)):
            branches.append(dense(_attend(proj.query(x), proj.key(image), proj.value(image), heads)))
        if hasattr(ca.output, "merge_layer"):  # the upper layers: concatenate, then merge_layer
            merged = ca.output.merge_layer(torch.cat(branches, dim=-1))
        else:  # the lower layers: the average of the two branches
            merged = (branches[0] + branches[1]) / 2
        x = ln(x + merged, ca.output.LayerNorm)
        ffn = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
        x = ln(x + ffn, layer.output.LayerNorm)
    return model.cls_head(x[0])


def test_nlvr2_two_images_against_a_hand_computation():
    torch.manual_seed(0)
    # Eight text layers, so that both kinds of layer (averaging below the merge layers, merging above) exist.
    cfg = for_task(
        tiny_cfg(**{"text.layers": 8, "text.hidden": 64, "text.heads": 2, "text.intermediate": 128}), "nlvr2"
    )
    model = BlipModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    kinds = [hasattr(layer.crossattention.output, "merge_layer") for layer in model.text_encoder.encoder.layer]
    assert kinds[0] is False and kinds[-1] is True and kinds == sorted(kinds)
    pixels0, pixels1 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[ENC, 5, 6, 7, 8, SEP], [ENC, 9, 10, SEP, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        e0, e1 = model.encode_image(pixels0), model.encode_image(pixels1)
        got = model.nlvr_logits(e0, e1, ids, mask)
        swapped = model.nlvr_logits(e1, e0, ids, mask)
        for i in range(2):
            n = int(mask[i].sum())
            want = hand_nlvr(model, ids[i, :n], mask[i, :n], e0[i], e1[i])
            assert torch.allclose(got[i], want, atol=1e-5), (got[i], want)
    # The branches are not interchangeable: image 0 goes through self0/dense0, image 1 through self1/dense1.
    assert (got - swapped).abs().max() > 1e-3
