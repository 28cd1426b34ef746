"""VQA fine-tuning: the loss is the reference's (weighted answer LM losses summed per question, over the batch size),
checked against a per-answer computation from the definition; end-to-end on the synthetic world: pretrain a step,
fine-tune, evaluate by generation and by ranking."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import blip
from blip.cli.common import load_recipe
from blip.model.blip import BlipModel
from blip.model.config import preset
from blip.tasks.finetune import finetune
from blip.tasks.pretrain import pretrain
from blip.tasks.vqa import VQATraining, evaluate_vqa
from test_trainer import ROOT, recipe

VOCAB, DEC, ENC, PAD = 50, 48, 49, 0


def _sequence(length: int, generator: torch.Generator) -> torch.Tensor:
    """[CLS] w... [SEP] as the tokenizer writes it (CLS 2, SEP 3), words from the ordinary ids."""
    words = torch.randint(5, 40, (length - 2,), generator=generator)
    return torch.cat([torch.tensor([2]), words, torch.tensor([3])])


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return ids, mask


def test_loss_is_weighted_answer_loss_summed_per_question():
    torch.manual_seed(0)
    cfg = preset(
        "tiny",
        task="vqa",
        **{
            "text.vocab_size": VOCAB,
            "text.dec_id": DEC,
            "text.enc_id": ENC,
            "vision.image_size": 32,
            "vision.patch_size": 16,
        },
    )
    model = BlipModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    questions = [_sequence(n, g) for n in (7, 4, 9)]
    answers = [[_sequence(n, g) for n in lengths] for lengths in ((3, 5, 4), (6,), (3, 4))]
    weights = [[0.6, 0.3, 0.1], [1.0], [0.2, 0.2]]
    pixels = torch.randn(3, 3, 32, 32, generator=g)

    q_ids, q_mask = _pad(questions)
    a_ids, a_mask = _pad([a for per_q in answers for a in per_q])
    owner = torch.tensor([q for q, per_q in enumerate(answers) for _ in per_q])
    w = torch.tensor([x for per_q in weights for x in per_q])
    loss = VQATraining(model)(pixels, q_ids, q_mask, a_ids, a_mask, owner, w)

    # From the definition, one question and one answer at a time, unpadded: the question encoded with [ENC]
    # over its image, the answer decoded from [DEC] against the question's states, summed label-smoothed CE.
    expected = torch.tensor(0.0)
    with torch.no_grad():
        for q, question in enumerate(questions):
            enc = question.clone()
            enc[0] = ENC
            image = model.visual_encoder(pixels[q : q + 1])
            states = model.text_encoder(enc[None], torch.ones(1, len(enc), dtype=torch.long), image)
            for answer, weight in zip(answers[q], weights[q]):
                dec = answer.clone()
                dec[0] = DEC
                logits = model.text_decoder(dec[None], torch.ones(1, len(dec), dtype=torch.long), states)[0]
                ce = F.cross_entropy(logits[:-1], dec[1:], label_smoothing=0.1, reduction="sum")
                expected += weight * ce
    expected /= len(questions)
    assert torch.allclose(loss, expected, atol=1e-5), (float(loss), float(expected))


def test_finetune_and_evaluate_on_synthetic_world(tmp_path, synth_world):
    pretrained = pretrain(recipe(synth_world, tmp_path / "pre", 1))
    r = load_recipe(str(ROOT / "configs/vqa_tiny_synth.yaml"), [])
    r["init"] = str(pretrained)
    r["data"] = [{"reader": "vqa", "path": str(synth_world / "vqa/vqa_train.json"), "image_root": str(synth_world)}]
    r["train"].update(out=str(tmp_path / "vqa"), max_steps=2, batch_size=8, num_workers=0)
    final = finetune("vqa", r)
    model = blip.load(final)
    assert model.cfg.decoder_input == "question"
    assert set(model.cfg.parts) == {"text_encoder", "text_decoder"}

    test = synth_world / "vqa/vqa_test.json"
    questions = json.loads(test.read_text())
    generated = evaluate_vqa(model, str(test), str(synth_world), out=str(tmp_path / "gen.json"), batch_size=4)
    ranked = evaluate_vqa(
        model,
        str(test),
        str(synth_world),
        answer_list=str(synth_world / "vqa/answer_list.json"),
        k_test=5,
        out=str(tmp_path / "rank.json"),
    )
    answer_list = json.loads((synth_world / "vqa/answer_list.json").read_text())
    images = [str(synth_world / q["image"]) for q in questions]
    texts = [q["question"] for q in questions]
    # The answers each way, asked directly one question at a time (evaluate batches them by 4 or 32).
    direct = {
        "gen.json": [model.ask([i], [t])[0].text for i, t in zip(images, texts)],
        "rank.json": [model.ask([i], [t], answers=answer_list, k_test=5)[0].text for i, t in zip(images, texts)],
    }
    for metrics, name in ((generated, "gen.json"), (ranked, "rank.json")):
        assert metrics["questions"] == len(questions) and metrics["skipped_images"] == 0
        results = {x["question_id"]: x["answer"] for x in json.loads((tmp_path / name).read_text())}
        assert sorted(results) == sorted(q["question_id"] for q in questions)
        assert [results[q["question_id"]] for q in questions] == direct[name]
        # VQA accuracy per question: min(1, matching annotators / 3), averaged over the 10 leave-one-out subsets.
        per_question = []
        for q in questions:
            hits = [
                sum(a == results[q["question_id"]] for j, a in enumerate(q["answer"]) if j != left)
                for left in range(len(q["answer"]))
            ]
            per_question.append(sum(min(1.0, h / 3) for h in hits) / len(hits))
        assert metrics["vqa_accuracy"] == pytest.approx(100 * sum(per_question) / len(questions))
    assert set(direct["rank.json"]) <= set(answer_list)
