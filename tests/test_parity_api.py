"""Every output the reference exposes, reached through the public API and CLI, against transformers on the same
weights or the reference's own definitions (rank_answer, BLIP_VQA.generate's all-ones question mask)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import blip
from blip.api import Blip
from blip.checkpoint import load_checkpoint, save_pretrained
from blip.cli import main
from blip.errors import BlipError
from blip.tasks.nlvr2 import NEW_PARAMETERS
from conftest import CLS, DEC, ENC, PAD, SEP


def image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def trim(row: list[int]) -> list[int]:
    return row[: row.index(SEP) + 1] if SEP in row else [t for t in row if t != PAD]


def enc_ids(model: Blip, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids our API feeds the grounded encoder: [ENC] first (transformers would put [CLS])."""
    ids, mask = model.tokenizer(texts, max_length=35)
    ids[:, 0] = ENC
    return ids, mask


def test_caption_ids_equal_transformers_and_score_is_the_beam_score(hf_models, pixels):
    hf, folder = hf_models["caption"]
    model = blip.load(folder)
    caps = model.caption(list(pixels), prompt="a picture of", length_norm="transformers")
    with torch.no_grad():
        ref = hf.generate(
            pixel_values=pixels,
            input_ids=torch.tensor([[CLS, 5, 6, 7, SEP]] * 3),
            num_beams=3,
            max_length=20,
            min_length=5,
        )
    assert [c.ids for c in caps] == [trim(r) for r in ref.tolist()]
    # The reference scorer (4.15): sum of log-probabilities / tokens before the end token, prompt included.
    for cap in model.caption(list(pixels), prompt="a picture of"):
        ended = cap.ids[-1] == SEP
        assert cap.score == pytest.approx(cap.logprob / (len(cap.ids) - ended), abs=1e-5)
        assert model.tokenizer.decode(cap.ids[4:]) == cap.text


def test_itm_logits_equal_transformers(hf_models, pixels):
    hf, folder = hf_models["retrieval"]
    model = blip.load(folder)
    texts = ["a red square", "two dogs on the beach", "what"]
    ids, mask = enc_ids(model, texts)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, use_itm_head=True).itm_score
    got = model.itm_logits(list(pixels), texts)
    assert (got - ref).abs().max() <= 1e-4
    assert torch.allclose(
        got.softmax(-1)[:, 1], torch.tensor([m["itm"] for m in model.match(list(pixels), texts)]), atol=1e-5
    )


QUESTIONS = ["is there a dog", "what colour is the square on the left of the red circle"]


def test_vqa_generate_without_question_mask_is_the_reference_and_transformers(hf_models, pixels):
    hf, folder = hf_models["vqa"]
    model = blip.load(folder)
    images = list(pixels[:2])
    got = model.ask(images, QUESTIONS, mask_question_padding=False, length_norm="transformers")
    ids, mask = enc_ids(model, QUESTIONS)
    assert (mask == 0).any()  # the short question is padded
    with torch.no_grad():  # transformers' generate also decodes over an all-ones question mask
        ref = hf.generate(
            input_ids=ids, attention_mask=mask, pixel_values=pixels[:2], num_beams=3, max_length=10, min_length=1
        )
    assert [a.text for a in got] == [model.tokenizer.decode(trim(r)) for r in ref.tolist()]
    # Masked (the default), the short question's answer does not depend on the batch; unmasked it does.
    alone = model.ask(images[:1], QUESTIONS[:1])[0]
    assert model.ask(images, QUESTIONS)[0].logprob == pytest.approx(alone.logprob, abs=1e-4)
    unmasked_alone = model.ask(images[:1], QUESTIONS[:1], mask_question_padding=False)[0]
    assert unmasked_alone.logprob == pytest.approx(alone.logprob, abs=1e-4)  # no padding, nothing to attend
    assert abs(model.ask(images, QUESTIONS, mask_question_padding=False)[0].logprob - alone.logprob) > 1e-2


def test_ranked_answers_follow_rank_answer(hf_models, pixels):
    hf, folder = hf_models["vqa"]
    model = blip.load(folder)
    answers = ["yes", "no", "red", "blue square", "two"]
    k_test = 3
    got = model.ask(list(pixels[:1]), QUESTIONS[1:], answers=answers, k_test=k_test, top=k_test)[0]
    # Reference BLIP_VQA.rank_answer by hand, on transformers' modules: the k_test answers whose first token is
    # likeliest after [DEC], then each scored by minus its label-smoothed (0.1) LM loss summed over its tokens.
    ids, mask = enc_ids(model, QUESTIONS[1:])
    ans, ans_mask = model.tokenizer(answers, max_length=512)
    ans[:, 0] = DEC
    with torch.no_grad():
        states = hf.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=hf.vision_model(pixel_values=pixels[:1])[0]
        ).last_hidden_state
        first = (
            hf.text_decoder(input_ids=torch.tensor([[DEC]]), encoder_hidden_states=states, encoder_attention_mask=mask)
            .logits[0, -1]
            .softmax(-1)
        )
        candidates = first[ans[:, 1]].topk(k_test).indices.tolist()
        scores = {}
        for i in candidates:
            n = int(ans_mask[i].sum())
            logits = hf.text_decoder(
                input_ids=ans[i : i + 1, :n], encoder_hidden_states=states, encoder_attention_mask=mask
            ).logits[0, :-1]
            logp = logits.log_softmax(-1)
            nll = -logp.gather(1, ans[i, 1:n, None]).squeeze(1)
            scores[answers[i]] = float(-(0.9 * nll - 0.1 * logp.mean(-1)).sum())
    expected = sorted(scores, key=scores.get, reverse=True)
    assert [a.text for a in got] == expected
    assert [a.logprob for a in got] == pytest.approx([scores[t] for t in expected], abs=1e-4)
    assert model.ask(list(pixels[:1]), QUESTIONS[1:], answers=answers, k_test=k_test)[0].text == expected[0]


def test_token_states_of_a_model_without_itc_heads(hf_models, pixels):
    hf, folder = hf_models["vqa"]
    model = blip.load(folder)
    assert not model.model.has("itc")
    texts = ["a red square", "two dogs"]
    ids, mask = model.tokenizer(texts, max_length=35)
    with torch.no_grad():
        unimodal = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        ids[:, 0] = ENC
        grounded = hf.text_encoder(
            input_ids=ids, attention_mask=mask, encoder_hidden_states=hf.vision_model(pixel_values=pixels[:2])[0]
        ).last_hidden_state
    assert (model.text_states(texts) - unimodal).abs().max() <= 1e-4
    assert (model.multimodal_states(list(pixels[:2]), texts) - grounded).abs().max() <= 1e-4


def test_images_as_uint8_arrays_and_normalised_tensors(hf_models, pixels):
    model = blip.load(hf_models["caption"][1])
    array = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    from_pil = model.pixels([Image.fromarray(array)])
    assert torch.equal(model.pixels([array]), from_pil)
    assert torch.equal(model.pixels([torch.from_numpy(array).permute(2, 0, 1)]), from_pil)
    assert torch.equal(model.pixels(list(pixels)), pixels)  # already normalised: used as given
    with pytest.raises(BlipError, match="normalised pixels"):
        model.pixels([torch.zeros(3, 16, 16)])
    with pytest.raises(BlipError, match="uint8"):
        model.pixels([array.astype(np.float64)])


@pytest.fixture(scope="module")
def nlvr_folder(hf_models, tmp_path_factory):
    """An NLVR2 model from the retrieval checkpoint (branches copied), merging from layer 1, saved as a folder."""
    _, folder = hf_models["retrieval"]
    torch.manual_seed(0)
    model, tok, _ = load_checkpoint(
        folder, task="nlvr2", allow_missing=NEW_PARAMETERS, overrides={"nlvr_merge_from": 1}
    )
    out = tmp_path_factory.mktemp("nlvr")
    save_pretrained(model, tok, out / "model")
    image(3).save(out / "left.png")
    image(4).save(out / "right.png")
    return out


def test_nlvr_api_and_command(nlvr_folder, capsys):
    model = blip.load(nlvr_folder / "model")
    left, right = Image.open(nlvr_folder / "left.png"), Image.open(nlvr_folder / "right.png")
    statements = ["there are two dogs", "the square is red"]
    verdicts = model.nlvr([left], [right], statements)
    ids, mask = enc_ids(model, statements)
    with torch.no_grad():
        e0, e1 = model.model.encode_image(model.pixels([left, right])).chunk(2)
        states = model.model.text_encoder(ids, mask, (e0.expand(2, -1, -1), e1.expand(2, -1, -1)))
        probs = model.model.cls_head(states[:, 0]).softmax(-1)[:, 1]
    assert [v.probability for v in verdicts] == pytest.approx(probs.tolist(), abs=1e-5)
    assert [v.true for v in verdicts] == [p > 0.5 for p in probs.tolist()]
    assert model.nlvr([right], [left], statements)[0].probability != pytest.approx(verdicts[0].probability, abs=1e-6)
    assert (
        main(
            [
                "nlvr",
                str(nlvr_folder / "left.png"),
                str(nlvr_folder / "right.png"),
                "-s",
                statements[0],
                "-s",
                statements[1],
                "--model",
                str(nlvr_folder / "model"),
                "--json",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["probability"] for r in rows] == pytest.approx(probs.tolist(), abs=1e-5)
    with pytest.raises(BlipError, match="NLVR2"):
        blip.load(nlvr_folder / "model", task="retrieval", allow_missing=True).nlvr([left], [right], statements)


def test_cli_top_k_ranked_answers_and_reference_padding(hf_models, tmp_path, capsys):
    caption_folder, vqa_folder = hf_models["caption"][1], hf_models["vqa"][1]
    image(5).save(tmp_path / "a.png")
    # Sampling with top-k 1 keeps only the likeliest token after the processors: greedy decoding.
    assert (
        main(["caption", str(tmp_path / "a.png"), "--model", str(caption_folder), "--sample", "--top-k", "1", "--json"])
        == 0
    )
    sampled = json.loads(capsys.readouterr().out)["caption"]
    model = blip.load(caption_folder)
    assert sampled == model.caption([image(5)], strategy="greedy", repetition_penalty=1.1)[0].text
    (tmp_path / "answers.txt").write_text("yes\nno\nred\ntwo\n")
    assert (
        main(
            [
                "ask",
                str(tmp_path / "a.png"),
                "-q",
                QUESTIONS[1],
                "--model",
                str(vqa_folder),
                "--answers",
                str(tmp_path / "answers.txt"),
                "--top",
                "3",
                "--json",
            ]
        )
        == 0
    )
    ranked = json.loads(capsys.readouterr().out)["answers"]
    vqa = blip.load(vqa_folder)
    want = vqa.ask([image(5)], QUESTIONS[1:], answers=["yes", "no", "red", "two"], top=3)[0]
    assert [r["answer"] for r in ranked] == [a.text for a in want]
    assert (
        main(
            [
                "ask",
                str(tmp_path / "a.png"),
                "-q",
                QUESTIONS[0],
                "--model",
                str(vqa_folder),
                "--no-mask-question-padding",
                "--json",
            ]
        )
        == 0
    )
    answer = json.loads(capsys.readouterr().out)["answer"]
    assert answer == vqa.ask([image(5)], QUESTIONS[:1], mask_question_padding=False)[0].text
