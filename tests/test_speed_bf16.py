"""The bf16 inference path: same captions as fp32 where margins are wide, and every entry point runs in bf16 on CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.model.losses import lm_loss
from blip.tasks.retrieval import retrieval_scores
from blip.tokenizer import Tokenizer
from conftest import CLS, DEC, ENC, PAD, SEP, VOCAB

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "white": (240, 240, 240)}
CAPTIONS = {
    "red": "the red square on the left",
    "blue": "the blue circle",
    "green": "two green triangle above",
    "white": "a cat sitting on the beach with her dog",
}


def colour_image(name: str, seed: int) -> Image.Image:
    rgb = np.array(COLOURS[name], dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0, 12, (32, 32, 3))
    return Image.fromarray(np.clip(rgb + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def trained_captioner():
    """A tiny captioner trained to write one caption per background colour: its top tokens win by wide margins."""
    torch.manual_seed(0)
    ids = {
        "text.vocab_size": len(VOCAB),
        "text.pad_id": PAD,
        "text.cls_id": CLS,
        "text.sep_id": SEP,
        "text.dec_id": DEC,
        "text.enc_id": ENC,
        "vision.image_size": 32,
        "vision.patch_size": 16,
    }
    model = BlipModel(preset("tiny", task="caption", **ids))
    tok = Tokenizer.from_vocab(VOCAB)
    wrapper = blip.Blip(model, tok)
    names = list(COLOURS)
    pixels = wrapper.pixels([colour_image(n, 0) for n in names])
    text_ids, mask = tok(["a picture of " + CAPTIONS[n] for n in names], max_length=20)
    text_ids[:, 0] = DEC
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        logits = model.text_decoder(text_ids, mask, model.encode_image(pixels))
        loss = lm_loss(logits, text_ids, mask, label_smoothing=0.0).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, tok


@pytest.mark.parametrize("strategy", ["beam", "greedy"])
def test_bf16_captions_equal_fp32_and_the_trained_captions(trained_captioner, strategy):
    model, tok = trained_captioner
    fp32 = blip.Blip(copy.deepcopy(model), tok)
    bf16 = blip.Blip(copy.deepcopy(model), tok, dtype="bfloat16")
    assert bf16.model.text_decoder.bert.encoder.layer[0].intermediate.dense.weight.dtype == torch.bfloat16
    # LayerNorm weights stay fp32: autocast runs LayerNorm in fp32.
    assert bf16.model.text_decoder.bert.embeddings.LayerNorm.weight.dtype == torch.float32
    images = [colour_image(n, seed) for seed in (1, 2) for n in COLOURS]  # unseen noise
    expected = [CAPTIONS[n] for _ in (1, 2) for n in COLOURS]
    ours32 = fp32.caption(images, prompt="a picture of ", strategy=strategy, max_length=20, min_length=3)
    ours16 = bf16.caption(images, prompt="a picture of ", strategy=strategy, max_length=20, min_length=3)
    assert [c.text for c in ours32] == expected  # the reference: the captions the model was trained to write
    assert [c.text for c in ours16] == expected
    for a, b in zip(ours32, ours16):
        assert b.mean_logprob == pytest.approx(a.mean_logprob, abs=0.05)


def image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8))


def test_every_entry_point_runs_in_bf16(hf_models):
    images, texts = [image(0), image(1)], ["a red square", "two dog on the beach"]
    cap32, cap16 = (blip.load(hf_models["caption"][1], dtype=d) for d in ("float32", "bfloat16"))
    for strategy in ("beam", "greedy", "nucleus"):
        caps = cap16.caption(images, strategy=strategy, generator=torch.Generator().manual_seed(0))
        assert len(caps) == 2 and all(np.isfinite(c.logprob) for c in caps)
    e32, e16 = cap32.image_embeds(images), cap16.image_embeds(images)
    assert e16.dtype == torch.float32 and torch.allclose(e16, e32, atol=0.1)

    ret32, ret16 = (blip.load(hf_models["retrieval"][1], dtype=d) for d in ("float32", "bfloat16"))
    for a, b in zip(ret32.match(images, texts), ret16.match(images, texts)):
        assert b["itm"] == pytest.approx(a["itm"], abs=0.03) and b["itc"] == pytest.approx(a["itc"], abs=0.03)
    for name in ("image_features", "text_features"):
        arg = images if name == "image_features" else texts
        f32, f16 = getattr(ret32, name)(arg), getattr(ret16, name)(arg)
        assert f16.dtype == torch.float32 and (f16 * f32).sum(-1).min() > 0.999  # cosine with the fp32 feature
    m32, m16 = ret32.multimodal_features(images, texts), ret16.multimodal_features(images, texts)
    assert torch.nn.functional.cosine_similarity(m32, m16).min() > 0.999

    vqa16 = blip.load(hf_models["vqa"][1], dtype="bfloat16")
    assert len(vqa16.ask(images, ["what colour is it"])) == 2
    ranked = vqa16.ask(images, ["what colour is it"], answers=["red", "blue", "yes"], k_test=2)
    assert all(a.text in ("red", "blue", "yes") and np.isfinite(a.logprob) for a in ranked)


def test_retrieval_scores_in_bf16_match_fp32(hf_models, tmp_path):
    from blip.data.samples import RetrievalSet

    paths = []
    for i in range(3):
        image(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    rs = RetrievalSet(
        images=paths,
        image_ids=["0", "1", "2"],
        texts=["a red square", "two dog", "the blue circle", "a cat"],
        img2txt=[[0], [1, 2], [3]],
        txt2img=[0, 1, 1, 2],
    )
    i2t32, _ = retrieval_scores(blip.load(hf_models["retrieval"][1]), rs, k_test=2)
    i2t16, _ = retrieval_scores(blip.load(hf_models["retrieval"][1], dtype="bfloat16"), rs, k_test=2)
    assert i2t16.dtype == torch.float32
    both = (i2t32 > -50) & (i2t16 > -50)  # pairs both re-ranked (the ITC top-k may differ where cosines tie)
    assert both.sum() >= 4 and torch.allclose(i2t16[both], i2t32[both], atol=0.05)
