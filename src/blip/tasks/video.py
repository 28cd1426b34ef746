"""Zero-shot video tasks: text-video retrieval and video QA with image models, frames concatenated as one image.

As in the reference's eval_retrieval_video.py: frames are sampled uniformly and encoded as images; for ITC each
frame's projected [CLS] feature is averaged over the frames and the mean is L2-normalised; for cross-attention
(ITM, the VQA question encoder) the frames' token sequences, [CLS] included, are concatenated frame after frame
into one sequence of T x (1 + patches) tokens, all attended to. Nothing is trained on video. Video QA
(MSRVTT-QA, MSVD-QA) ranks an answer list with the VQA model and scores top-1 accuracy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from blip.api import Answer, Blip
from blip.data.readers import read_answer_list, read_msrvtt, read_video_qa
from blip.data.text import pre_caption
from blip.data.video import load_frames
from blip.errors import BlipError
from blip.evaluation.retrieval import positive_ranks, retrieval_metrics
from blip.evaluation.vqa import normalize_answer, write_vqa_results
from blip.tasks.retrieval import two_stage_retrieval

# The reference's video dataset cleans captions to at most 40 words (the image datasets use 30).
VIDEO_MAX_WORDS = 40


def _frame_batches(
    model: Blip, videos: Sequence[str | os.PathLike], num_frames: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """(B, num_frames, 3, S, S) pixel tensors on the model's device, `batch_size` videos at a time."""
    if num_frames < 1:
        raise BlipError(f"num_frames must be at least 1, got {num_frames}")
    for s in range(0, len(videos), batch_size):
        yield torch.stack(
            [torch.stack([model.transform(f) for f in load_frames(v, num_frames)]) for v in videos[s : s + batch_size]]
        ).to(model.device)


def _encode_frames(model: Blip, pixels: torch.Tensor) -> torch.Tensor:
    """(B, T, L, width) ViT tokens of (B, T, 3, S, S) frames, all frames through the ViT as one batch."""
    b, t = pixels.shape[:2]
    tokens = model.model.encode_image(pixels.flatten(0, 1))
    return tokens.view(b, t, *tokens.shape[1:])


@torch.no_grad()
def video_retrieval_scores(
    model: Blip,
    videos: Sequence[str | os.PathLike],
    texts: Sequence[str],
    num_frames: int = 8,
    k_test: int = 128,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(video->text, text->video) score matrices of the two-stage protocol (ITM + ITC on each query's ITC top k)."""
    model._need("itc", "video retrieval")
    model._need("itm", "video retrieval")
    m = model.model
    tokens, video_feats = [], []
    for pixels in _frame_batches(model, videos, num_frames, batch_size):
        with model.autocast():
            frames = _encode_frames(model, pixels)
            # Mean of the per-frame projections, normalised after averaging (not a mean of unit vectors).
            video_feats.append(F.normalize(m.vision_proj(frames[:, :, 0]).float().mean(dim=1), dim=-1))
        # Frame tokens of a whole test set (1k x 8 x 577 x 768 for MSRVTT) outgrow a GPU: keep them in host memory.
        tokens.append(frames.flatten(1, 2).cpu())
    texts = [pre_caption(t, VIDEO_MAX_WORDS) for t in texts]
    return two_stage_retrieval(model, torch.cat(video_feats), torch.cat(tokens), texts, k_test, batch_size)


def evaluate_video_retrieval(
    model: Blip,
    annotation: str,
    video_root: str = "",
    split: str | None = "test",
    num_frames: int = 8,
    k_test: int = 128,
    batch_size: int = 8,
) -> dict[str, float]:
    """Zero-shot text-video recalls (txt_r*, vid_r*, r_mean, vid_mdR) on an MSRVTT annotation (JSONL or official)."""
    records = read_msrvtt(annotation, video_root=video_root, split=split)
    if not records:
        raise BlipError(f"{annotation}: no captioned videos" + (f" in split {split!r}" if split else ""))
    texts, txt2vid, vid2txt = [], [], []
    for v, rec in enumerate(records):
        vid2txt.append(list(range(len(texts), len(texts) + len(rec.captions))))
        texts += rec.captions
        txt2vid += [v] * len(rec.captions)
    v2t, t2v = video_retrieval_scores(
        model, [r.video for r in records], texts, num_frames=num_frames, k_test=k_test, batch_size=batch_size
    )
    result = {k.replace("img_", "vid_"): v for k, v in retrieval_metrics(v2t, t2v, vid2txt, txt2vid).items()}
    # The reference also reports the median 1-based rank of each caption's video.
    result["vid_mdR"] = float(np.median(positive_ranks(t2v, [[v] for v in txt2vid]).numpy() + 1))
    return result


@torch.no_grad()
def answer_video_questions(
    model: Blip,
    videos: Sequence[str | os.PathLike],
    questions: Sequence[str],
    answers: Sequence[str] | None = None,
    num_frames: int = 8,
    k_test: int = 128,
    num_beams: int = 3,
    max_length: int = 10,
    batch_size: int = 8,
) -> list[Answer]:
    """Answer questions about videos with a VQA model: generate (beam search), or rank an answer list (k_test)."""
    model._need_vqa("video QA")
    videos, questions = [str(v) for v in videos], list(questions)
    if len(videos) == 1:  # one video, many questions
        videos = videos * len(questions)
    if len(videos) != len(questions):
        raise BlipError(f"got {len(videos)} videos and {len(questions)} questions; give equal numbers, or one video")
    # Each distinct video is decoded and encoded once, however many questions it is asked (MSRVTT-QA: ~24).
    asked: dict[str, list[int]] = {}
    for q, v in enumerate(videos):
        asked.setdefault(v, []).append(q)
    distinct = list(asked)
    out: list[Answer | None] = [None] * len(questions)
    for s, pixels in zip(range(0, len(distinct), batch_size), _frame_batches(model, distinct, num_frames, batch_size)):
        with model.autocast():
            tokens = _encode_frames(model, pixels).flatten(1, 2)
        pairs = [(j, q) for j, v in enumerate(distinct[s : s + batch_size]) for q in asked[v]]
        for p in range(0, len(pairs), batch_size):
            chunk = pairs[p : p + batch_size]
            embeds = tokens[torch.tensor([j for j, _ in chunk], device=tokens.device)]
            got = model.ask_embeds(embeds, [questions[q] for _, q in chunk], answers, num_beams, max_length, k_test)
            for (_, q), answer in zip(chunk, got):
                out[q] = answer
    return out


def qa_accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Percentage of predictions equal to one of their question's answers, both normalised as VQA answers are."""
    if len(predictions) != len(references) or not predictions:
        raise BlipError(
            f"need as many reference answer sets as predictions (> 0), got {len(references)} and {len(predictions)}"
        )
    # MSRVTT-QA and MSVD-QA score plain top-1 accuracy (one answer per question), not VQA accuracy's
    # min(#annotators / 3, 1); the normalisation only keeps "Two." and "2" from counting as different answers.
    hits = sum(normalize_answer(p) in {normalize_answer(a) for a in refs} for p, refs in zip(predictions, references))
    return 100.0 * hits / len(predictions)


def evaluate_video_qa(
    model: Blip,
    annotation: str,
    video_root: str = "",
    answer_list: str | None = None,
    num_frames: int = 8,
    k_test: int = 128,
    out: str | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Zero-shot MSRVTT-QA / MSVD-QA top-1 accuracy, ranking `answer_list` (default: the annotation's answers)."""
    # `out` receives the answers in the VQA submission format and the metrics beside it, as evaluate_vqa does.
    records = read_video_qa(annotation, video_root=video_root)
    if not records:
        raise BlipError(f"{annotation}: no video questions")
    candidates = (
        read_answer_list(answer_list) if answer_list else list(dict.fromkeys(a for rec in records for a in rec.answers))
    )
    if not candidates:
        raise BlipError(f"{annotation}: no answers to rank; give an answer list")
    answers = answer_video_questions(
        model,
        [rec.image for rec in records],
        [rec.question for rec in records],
        answers=candidates,
        num_frames=num_frames,
        k_test=k_test,
        batch_size=batch_size,
    )
    metrics = {"questions": float(len(records))}
    answered = [(a.text, rec.answers) for a, rec in zip(answers, records) if rec.answers]
    if answered:
        metrics["accuracy"] = qa_accuracy([p for p, _ in answered], [refs for _, refs in answered])
    if out:
        # Integer ids as the source files number questions (the readers keep ids as strings).
        write_vqa_results(
            out,
            {
                int(rec.question_id) if rec.question_id.isdigit() else rec.question_id: a.text
                for rec, a in zip(records, answers)
            },
        )
        Path(out).with_suffix(".metrics.json").write_text(json.dumps(metrics))
    return metrics
