"""VQA: fine-tune the question encoder and answer decoder with the reference's weighted answer loss; evaluate by
generating answers or by ranking an answer list, scored with the official VQA accuracy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blip.api import Blip
from blip.checkpoint import LoadReport
from blip.data import VQADataset, read_answer_list, read_vqa, read_vqa_official
from blip.data.robust import SkipCounter
from blip.data.samples import VQARecord
from blip.errors import BlipError, ImageError
from blip.evaluation.vqa import vqa_score, write_vqa_results
from blip.images import load_image
from blip.model.blip import BlipModel
from blip.model.losses import lm_loss
from blip.progress import Progress
from blip.recipes import TEXT_TOKENS, Source, VQARecipe
from blip.tasks.common import FinetuneTask, Parts, image_transform, report_skips
from blip.tokenizer import Tokenizer
from blip.training.trainer import StepInfo


class VQATraining(nn.Module):
    """Sum over a question's answers of weight * answer LM loss, averaged over questions (reference BLIP_VQA)."""

    def __init__(self, model: BlipModel):
        super().__init__()
        self.model = model

    def forward(
        self,
        pixels: torch.Tensor,
        q_ids: torch.Tensor,
        q_mask: torch.Tensor,
        a_ids: torch.Tensor,
        a_mask: torch.Tensor,
        owner: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Answers are flat rows; `owner[j]` is the batch row of answer j's question, `weights[j]` its weight."""
        states = self.model.encode_grounded(q_ids, q_mask, self.model.encode_image(pixels))
        a_ids = a_ids.clone()
        a_ids[:, 0] = self.model.cfg.text.dec_id
        # Questions have different numbers of answers, so each answer row gets its question's states by index.
        logits = self.model.text_decoder(a_ids, a_mask, states.index_select(0, owner), q_mask.index_select(0, owner))
        per_answer = lm_loss(logits, a_ids, a_mask, self.model.cfg.label_smoothing)
        return (weights * per_answer).sum() / len(pixels)


def answer_batch(
    tok: Tokenizer, answers: Sequence[Sequence[str]], weights: Sequence[Sequence[float]], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten per-question answers: (ids, mask, owner question index, weight) with one row per answer."""
    flat = [a for per_question in answers for a in per_question]
    ids, mask = tok(flat, max_length=max_tokens)
    owner = torch.tensor([q for q, per_question in enumerate(answers) for _ in per_question], dtype=torch.long)
    w = torch.tensor([x for per_question in weights for x in per_question], dtype=torch.float)
    return ids, mask, owner, w


def read_vqa_sources(sources: list[Source], counter: SkipCounter) -> list[VQARecord]:
    """Training records of every source: {reader: vqa, path, image_root} (BLIP JSON: VQA v2 and VG QA) or
    {reader: vqa_official, questions, annotations, image_root}; questions without answers are skipped."""
    records: list[VQARecord] = []
    for src in sources:
        reader = src.reader or "vqa"
        if reader == "vqa":
            src.needs("path")
            records += read_vqa(src.path, image_root=src.image_root or "", counter=counter)
        elif reader == "vqa_official":
            src.needs("questions", "annotations")
            records += read_vqa_official(
                src.questions, src.annotations, image_root=src.image_root or "", counter=counter
            )
        else:
            raise BlipError(f"unknown VQA reader {reader!r}; known: vqa, vqa_official")
    answered = []
    for rec in records:
        if rec.answers:
            answered.append(rec)
        else:
            counter.skip("no_answer", f"question {rec.question_id} has no answers to train on")
    if not answered:
        raise BlipError("the recipe's data sources hold no answered questions")
    return answered


def vqa_parts(recipe: VQARecipe, model: BlipModel, tok: Tokenizer, report: LoadReport, counter: SkipCounter) -> Parts:
    """The VQA part of a fine-tune: the weighted answer loss over the recipe's answered questions."""
    records = read_vqa_sources(recipe.data, counter)
    dataset = VQADataset(records, image_transform(recipe, model.cfg.vision.image_size), max_words=recipe.max_words)
    positions = model.cfg.text.max_positions
    answer_tokens = positions if recipe.max_answer_tokens is None else min(recipe.max_answer_tokens, positions)

    def loss_fn(m: nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        device = batch["image"].device
        q_ids, q_mask = tok(batch["question"], max_length=TEXT_TOKENS)
        a_ids, a_mask, owner, weights = answer_batch(tok, batch["answers"], batch["weights"], answer_tokens)
        tensors = (q_ids, q_mask, a_ids, a_mask, owner, weights)
        return {"loss": m(batch["image"], *(t.to(device) for t in tensors))}

    return Parts(VQATraining(model), model, dataset, loss_fn)


TASK = FinetuneTask(vqa_parts, load_options=lambda recipe: {"overrides": {"vision.drop_path": recipe.drop_path}})


def _ground_truth(annotation: str) -> dict[str, list[str]]:
    """Raw annotator answers by question id (read_vqa keeps distinct answers only; accuracy needs every one)."""
    entries = json.loads(Path(annotation).read_text(encoding="utf-8"))
    out = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        raw = entry.get("answer", [])
        given = [a for a in (raw if isinstance(raw, list) else [raw]) if isinstance(a, str) and a.strip()]
        out[str(entry.get("question_id", f"{Path(annotation).stem}-{i}"))] = given
    return out


def _submission_id(question_id: str) -> int | str:
    """Question ids as the VQA server wants them: integers (read_vqa keeps them as strings)."""
    return int(question_id) if question_id.isdigit() else question_id


def evaluate_vqa(
    model: Blip,
    annotation: str,
    image_root: str = "",
    answer_list: str | None = None,
    k_test: int = 128,
    out: str | None = None,
    batch_size: int = 32,
) -> dict[str, float]:
    """Answer every question of a BLIP VQA JSON file (generate, or rank `answer_list`) and score it when it has
    answers; `out` receives the answers in the VQA submission format."""
    records = read_vqa(annotation, image_root=image_root)
    candidates = read_answer_list(answer_list) if answer_list else None
    predictions: dict[str, str] = {}
    failures: list[str] = []
    progress = Progress(len(records), "answering", unit="question")
    for start in range(0, len(records), batch_size):
        chunk, images = [], []
        for rec in records[start : start + batch_size]:
            try:
                images.append(load_image(rec.image))
                chunk.append(rec)
            except ImageError as e:
                failures.append(str(e))
        progress.update(len(records[start : start + batch_size]) - len(chunk))
        if not chunk:
            continue
        answers = model.ask(
            images,
            [rec.question for rec in chunk],
            answers=candidates,
            k_test=k_test,
            batch_size=batch_size,
            progress=progress,
        )
        predictions.update((rec.question_id, a.text) for rec, a in zip(chunk, answers))
    progress.close()
    report_skips(failures, len(records), annotation, unit="questions")
    metrics: dict[str, float] = {"questions": float(len(predictions)), "skipped_images": float(len(failures))}
    truth = _ground_truth(annotation)
    if predictions and all(truth.get(q) for q in predictions):
        metrics["vqa_accuracy"] = vqa_score(predictions, {q: truth[q] for q in predictions})
    if out:
        write_vqa_results(out, {_submission_id(q): a for q, a in predictions.items()})
        Path(out).with_suffix(".metrics.json").write_text(json.dumps(metrics))
    return metrics
