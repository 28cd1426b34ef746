"""Same weights, same outputs as transformers' BLIP: ITM, ITC, LM logits, greedy and beam-3 ids, export round trip."""

from __future__ import annotations

import pytest
import torch

from blip.checkpoint import export_transformers, load_checkpoint
from blip.generation import GenerationConfig, generate
from conftest import CLS, DEC, ENC, PAD, SEP

TOL = 1e-4


def trim(seqs: torch.Tensor) -> list[list[int]]:
    """Each sequence up to its first [SEP]: transformers pads finished beams with [SEP] when [PAD] is id 0."""
    out = []
    for row in seqs.tolist():
        out.append(row[: row.index(SEP) + 1] if SEP in row else [t for t in row if t != PAD])
    return out


def texts_ids():
    ids = torch.tensor(
        [[CLS, 5, 6, 7, 8, 9, 10, SEP], [CLS, 11, 12, 13, SEP, PAD, PAD, PAD], [CLS, 14, 15, 16, 17, 18, SEP, PAD]]
    )
    return ids, (ids != PAD).long()


def test_tokenizer_ids_come_from_the_folder(hf_models):
    _, tok, _ = load_checkpoint(hf_models["caption"][1])
    assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.dec_id, tok.enc_id) == (PAD, CLS, SEP, DEC, ENC)
    assert tok.encode("a picture of") == [CLS, 5, 6, 7, SEP]


def test_retrieval_itm_and_itc_match_transformers(hf_models, pixels):
    hf, folder = hf_models["retrieval"]
    model, _, report = load_checkpoint(folder)
    assert report.format == "transformers" and set(model.cfg.parts) == {"text_encoder", "itc", "itm"}
    ids, mask = texts_ids()
    enc_ids = ids.clone()
    enc_ids[:, 0] = ENC  # the reference's [ENC]; transformers would use [CLS], so give it the same ids
    with torch.no_grad():
        ref_itm = hf(input_ids=enc_ids, pixel_values=pixels, attention_mask=mask, use_itm_head=True).itm_score
        ref_itc = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        embeds = model.encode_image(pixels)
        itm = model.itm_logits(embeds, ids, mask)
        itc = model.image_embed(embeds) @ model.text_embed(ids, mask).t()
    assert (itm - ref_itm).abs().max() <= TOL
    assert (itc - ref_itc).abs().max() <= TOL


def test_caption_lm_logits_match_transformers(hf_models, pixels):
    hf, folder = hf_models["caption"]
    model, _, _ = load_checkpoint(folder)
    ids, mask = texts_ids()
    ids[:, 0] = DEC
    with torch.no_grad():
        image = hf.vision_model(pixel_values=pixels)[0]
        ref = hf.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).logits
        ours = model.text_decoder(ids, mask, model.encode_image(pixels))
    assert (model.encode_image(pixels) - image).abs().max() <= TOL
    assert (ours - ref).abs().max() <= TOL


def our_caption_ids(model, pixels, gen: GenerationConfig) -> torch.Tensor:
    prompt = torch.tensor([[DEC, 5, 6, 7]] * len(pixels))
    with torch.no_grad():
        kv = model.text_decoder.bert.cross_kv(model.encode_image(pixels))
        return generate(model.text_decoder, prompt, kv, None, gen, SEP, PAD).sequences


@pytest.mark.parametrize("num_beams", [1, 3])
def test_caption_generation_ids_match_transformers(hf_models, pixels, num_beams):
    hf, folder = hf_models["caption"]
    model, _, _ = load_checkpoint(folder)
    prompt = torch.tensor([[CLS, 5, 6, 7, SEP]] * len(pixels))
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=pixels, input_ids=prompt, num_beams=num_beams, max_length=20, min_length=5, do_sample=False
        )
    gen = GenerationConfig(
        strategy="beam" if num_beams > 1 else "greedy",
        num_beams=num_beams,
        max_length=20,
        min_length=5,
        length_norm="transformers",
    )
    ours = our_caption_ids(model, pixels, gen)
    assert trim(ours) == trim(ref)
    # The end token must really occur, or the test would not exercise how hypotheses finish.
    assert (ref == SEP).any()


def test_repetition_penalty_matches_transformers(hf_models, pixels):
    hf, folder = hf_models["caption"]
    model, _, _ = load_checkpoint(folder)
    prompt = torch.tensor([[CLS, 5, 6, 7, SEP]] * len(pixels))
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=pixels,
            input_ids=prompt,
            num_beams=3,
            max_length=15,
            min_length=5,
            repetition_penalty=1.5,
            do_sample=False,
        )
    gen = GenerationConfig(num_beams=3, max_length=15, min_length=5, repetition_penalty=1.5, length_norm="transformers")
    assert trim(our_caption_ids(model, pixels, gen)) == trim(ref)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_vqa_generation_ids_match_transformers(hf_models, pixels, num_beams):
    hf, folder = hf_models["vqa"]
    model, _, _ = load_checkpoint(folder)
    assert model.cfg.decoder_input == "question"
    # transformers ignores the question's padding when decoding, so the questions here have equal lengths.
    q = torch.tensor([[ENC, 30, 31, 8, 9, SEP], [ENC, 32, 33, 34, 12, SEP], [ENC, 35, 36, 10, 11, SEP]])
    mask = torch.ones_like(q)
    with torch.no_grad():
        ref = hf.generate(
            input_ids=q,
            pixel_values=pixels,
            attention_mask=mask,
            num_beams=num_beams,
            max_length=10,
            min_length=1,
            do_sample=False,
        )
        states = model.encode_grounded(q, mask, model.encode_image(pixels))
        gen = GenerationConfig(
            strategy="beam" if num_beams > 1 else "greedy",
            num_beams=num_beams,
            max_length=10,
            min_length=1,
            length_norm="transformers",
        )
        ours = generate(
            model.text_decoder, torch.full((3, 1), DEC), model.text_decoder.bert.cross_kv(states), mask, gen, SEP, PAD
        ).sequences
    assert trim(ours) == trim(ref)


@pytest.mark.parametrize("kind", ["caption", "retrieval", "vqa"])
def test_exported_folder_loads_in_transformers_with_same_outputs(hf_models, pixels, tmp_path, kind):
    import transformers

    hf, folder = hf_models[kind]
    model, tok, _ = load_checkpoint(folder)
    arch = export_transformers(model, tok, tmp_path / "out")
    back = getattr(transformers, arch).from_pretrained(tmp_path / "out").eval()
    ids, mask = texts_ids()
    with torch.no_grad():
        if kind == "retrieval":
            a = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask).itm_score
            b = back(input_ids=ids, pixel_values=pixels, attention_mask=mask).itm_score
        else:
            ids[:, 0] = DEC
            image = hf.vision_model(pixel_values=pixels)[0]
            a = hf.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).logits
            b = back.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).logits
    assert (a - b).abs().max() <= TOL
