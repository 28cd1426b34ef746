"""The user-facing object: caption, ask (generate and rank), match and features, checked against transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.errors import BlipError
from conftest import CLS, DEC, ENC, SEP


def image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_caption_text_and_confidence(hf_models):
    hf, folder = hf_models["caption"]
    model = blip.load(folder)
    images = [image(0), image(1)]
    caps = model.caption(images, prompt="a picture of", length_norm="transformers")
    pixels = model.pixels(images)
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=pixels,
            input_ids=torch.tensor([[CLS, 5, 6, 7, SEP]] * 2),
            num_beams=3,
            max_length=20,
            min_length=5,
        )
    for cap, ids in zip(caps, ref.tolist()):
        gen = ids[4 : ids.index(SEP) if SEP in ids else None]
        assert cap.text == " ".join(model.tokenizer.tok.id_to_token(i) for i in gen)
        # The confidence is the sum of the model's log-probabilities of the generated tokens, end token included.
        full = ids[: ids.index(SEP) + 1] if SEP in ids else ids
        with torch.no_grad():
            image_embeds = hf.vision_model(pixel_values=pixels[caps.index(cap)][None])[0]
            logits = hf.text_decoder(input_ids=torch.tensor([full]), encoder_hidden_states=image_embeds).logits
        lp = logits[0, 3:-1].log_softmax(-1).gather(1, torch.tensor(full[4:])[:, None]).sum()
        assert cap.logprob == pytest.approx(float(lp), abs=1e-3)
        assert cap.itm is None  # a captioning checkpoint has no ITM head


def hf_caption_logprob(hf, pixels: torch.Tensor, ids: list[int]) -> float:
    """transformers' log-probability of a caption's generated ids ([DEC] + 3 prompt tokens first) given one image."""
    with torch.no_grad():
        image_embeds = hf.vision_model(pixel_values=pixels[None])[0]
        logits = hf.text_decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=image_embeds).logits
    return float(logits[0, 3:-1].log_softmax(-1).gather(1, torch.tensor(ids[4:])[:, None]).sum())


def test_nucleus_sampling_is_seeded_and_batched(hf_models):
    hf, folder = hf_models["caption"]
    model = blip.load(folder)
    images = [image(0), image(1), image(2)]
    pixels = model.pixels(images)
    a = model.caption(images, strategy="nucleus", num_captions=3, generator=torch.Generator().manual_seed(0))
    b = model.caption(images, strategy="nucleus", num_captions=3, generator=torch.Generator().manual_seed(0))
    assert len(a) == 9 and [c.text for c in a] == [c.text for c in b]
    # Batched 3 images at once or one at a time, each caption (image-major, 3 per image) is scored against its own
    # image: its confidence is transformers' log-probability of that caption given that image.
    for batch_size in (3, 1):
        caps = model.caption(
            images,
            strategy="nucleus",
            num_captions=3,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(1),
        )
        assert len(caps) == 9
        for k, cap in enumerate(caps):
            tokens = round(cap.logprob / cap.mean_logprob)  # generated tokens, the end token when it came
            assert cap.ids[:4] == [DEC, 5, 6, 7] and len(cap.ids) == 4 + tokens
            assert cap.text == model.tokenizer.decode(cap.ids[4:])
            want = hf_caption_logprob(hf, pixels[k // 3], cap.ids)
            assert cap.logprob == pytest.approx(want, abs=1e-3), (batch_size, k, cap.text)
    # With a vanishing top_p only the most likely token survives, so sampling is greedy decoding (same repetition
    # penalty and min length) for any batch size, and equal to transformers' greedy search.
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=pixels,
            input_ids=torch.tensor([[CLS, 5, 6, 7, SEP]] * 3),
            num_beams=1,
            do_sample=False,
            max_length=20,
            min_length=5,
            repetition_penalty=1.1,
        )
    want = [
        " ".join(model.tokenizer.tok.id_to_token(i) for i in row[4 : row.index(SEP) if SEP in row else None])
        for row in ref.tolist()
    ]
    for batch_size in (3, 2, 1):
        got = model.caption(
            images,
            strategy="nucleus",
            top_p=1e-9,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(batch_size),
        )
        assert [c.text for c in got] == want


def test_match_gives_itm_probability_and_itc_cosine(hf_models):
    hf, folder = hf_models["retrieval"]
    model = blip.load(folder)
    texts = ["a red square", "two blue circles on the left"]
    scores = model.match([image(0)], texts)
    ids, mask = model.tokenizer(texts, max_length=35)
    enc = ids.clone()
    enc[:, 0] = ENC
    px = model.pixels([image(0), image(0)])
    with torch.no_grad():
        itm = hf(input_ids=enc, pixel_values=px, attention_mask=mask).itm_score.softmax(-1)[:, 1]
        itc = hf(input_ids=ids, pixel_values=px, attention_mask=mask, use_itm_head=False).itm_score[0]
    assert [s["itm"] for s in scores] == pytest.approx(itm.tolist(), abs=1e-5)
    assert [s["itc"] for s in scores] == pytest.approx(itc.tolist(), abs=1e-5)
    feats = model.image_features([image(0)]) @ model.text_features(texts).t()
    assert feats[0].tolist() == pytest.approx(itc.tolist(), abs=1e-5)
    # one image object given twice among others is encoded once: its pairs still score as transformers scores them
    a, b = image(0), image(1)
    mixed = model.match([a, b, a], texts + ["a red square"])
    ids, mask = model.tokenizer(texts + ["a red square"], max_length=35)
    enc = ids.clone()
    enc[:, 0] = ENC
    with torch.no_grad():
        itm = hf(input_ids=enc, pixel_values=model.pixels([a, b, a]), attention_mask=mask).itm_score.softmax(-1)
    assert [s["itm"] for s in mixed] == pytest.approx(itm[:, 1].tolist(), abs=1e-5)


def test_ask_ranks_answers_by_smoothed_lm_loss(hf_models):
    hf, folder = hf_models["vqa"]
    model = blip.load(folder)
    answers = ["yes", "no", "two", "red square", "blue"]
    got = model.ask([image(3)], ["What colour is the square"], answers=answers, k_test=len(answers))
    # Independent reference: transformers' decoder loss with label smoothing 0.1, per answer, best one wins.
    q_ids, q_mask = model.tokenizer(["what colour is the square"], max_length=35)
    q_ids[:, 0] = ENC
    a_ids, a_mask = model.tokenizer(answers)
    a_ids[:, 0] = DEC
    with torch.no_grad():
        image_embeds = hf.vision_model(pixel_values=model.pixels([image(3)]))[0]
        q = hf.text_encoder(input_ids=q_ids, attention_mask=q_mask, encoder_hidden_states=image_embeds)[0]
        hf.text_decoder.label_smoothing = 0.1
        losses = hf.text_decoder(
            input_ids=a_ids,
            attention_mask=a_mask,
            encoder_hidden_states=q.expand(5, -1, -1),
            labels=a_ids.masked_fill(a_mask == 0, -100),
            reduction="none",
        ).loss
    assert got[0].text == answers[int(losses.argmin())]
    assert got[0].logprob == pytest.approx(-float(losses.min()), abs=1e-3)


def test_ask_generates_without_an_answer_list(hf_models):
    model = blip.load(hf_models["vqa"][1])
    out = model.ask([image(0), image(1)], ["is there a dog?"])
    assert len(out) == 2 and all(isinstance(a.text, str) for a in out)


def test_wrong_model_for_the_job_is_a_clear_error(hf_models):
    model = blip.load(hf_models["caption"][1])
    with pytest.raises(BlipError, match="needs a model with a text_encoder"):
        model.ask([image(0)], ["what?"])
    with pytest.raises(BlipError, match="2 images and 3 texts"):
        blip.load(hf_models["retrieval"][1]).match([image(0), image(1)], ["a", "b", "c"])
