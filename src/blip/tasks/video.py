"""Zero-shot video tasks: text-video retrieval and video QA with image models, frames concatenated as one image.

As in the reference's eval_retrieval_video.py: frames are sampled uniformly and encoded as images; for ITC each
frame's projected [CLS] feature is averaged over the frames and the mean is L2-normalised; for cross-attention
(ITM, the VQA question encoder) the frames' token sequences, [CLS] included, are concatenated frame after frame
into one sequence of T x (1 + patches) tokens, all attended to. Nothing is trained on video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blip.api import Answer, Blip
from blip.data.readers import read_msrvtt
from blip.data.text import pre_caption, pre_question
from blip.data.video import load_frames
from blip.errors import BlipError
from blip.evaluation.retrieval import positive_ranks, retrieval_metrics, two_stage_scores

# The reference's video dataset cleans captions to at most 40 words (the image datasets use 30).
VIDEO_MAX_WORDS = 40


def _frame_batches(model: Blip, videos: Sequence[str | os.PathLike], num_frames: int,
                   batch_size: int) -> Iterator[torch.Tensor]:
    """(B, num_frames, 3, S, S) pixel tensors on the model's device, `batch_size` videos at a time."""
    if num_frames < 1:
        raise BlipError(f"num_frames must be at least 1, got {num_frames}")
    for s in range(0, len(videos), batch_size):
        # Decode each distinct video of the batch once (one video asked many questions repeats its path).
        batch = [str(v) for v in videos[s : s + batch_size]]
        clips = {v: torch.stack([model.transform(f) for f in load_frames(v, num_frames)]) for v in dict.fromkeys(batch)}
        yield torch.stack([clips[v] for v in batch]).to(model.device)


def _encode_frames(model: Blip, pixels: torch.Tensor) -> torch.Tensor:
    """(B, T, L, width) ViT tokens of (B, T, 3, S, S) frames, all frames through the ViT as one batch."""
    b, t = pixels.shape[:2]
    tokens = model.model.encode_image(pixels.flatten(0, 1))
    return tokens.view(b, t, *tokens.shape[1:])


@torch.no_grad()
def video_retrieval_scores(model: Blip, videos: Sequence[str | os.PathLike], texts: Sequence[str],
                           num_frames: int = 8, k_test: int = 128,
                           batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(video->text, text->video) score matrices of the two-stage protocol (ITM + ITC on each query's ITC top k)."""
    model._need("itc", "video retrieval")
    model._need("itm", "video retrieval")
    m, device = model.model, model.device
    ids, mask = model._texts([pre_caption(t, VIDEO_MAX_WORDS) for t in texts], 35)
    with model.autocast():
        text_feats = torch.cat([m.text_embed(ids[s : s + 256], mask[s : s + 256]).float()
                                for s in range(0, len(ids), 256)])
    tokens, video_feats = [], []
    for pixels in _frame_batches(model, videos, num_frames, batch_size):
        with model.autocast():
            frames = _encode_frames(model, pixels)
            # Mean of the per-frame projections, normalised after averaging (not a mean of unit vectors).
            video_feats.append(F.normalize(m.vision_proj(frames[:, :, 0]).float().mean(dim=1), dim=-1))
        # Frame tokens of a whole test set (1k x 8 x 577 x 768 for MSRVTT) outgrow a GPU: keep them in host memory.
        tokens.append(frames.flatten(1, 2).cpu())
    video_tokens = torch.cat(tokens)
    sims = torch.cat(video_feats) @ text_feats.t()

    def itm(video_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(video_idx), batch_size):
            v, t = video_idx[s : s + batch_size].cpu(), text_idx[s : s + batch_size].to(device)
            with model.autocast():
                out.append(m.itm_logits(video_tokens[v].to(device), ids[t], mask[t])[:, 1].float())
        return torch.cat(out)

    rows_per_call = max(1, batch_size // max(1, min(k_test, len(texts))))
    return two_stage_scores(sims, k_test, itm, rows_per_call=rows_per_call)


def evaluate_video_retrieval(model: Blip, annotation: str, video_root: str = "", split: str | None = "test",
                             num_frames: int = 8, k_test: int = 128, batch_size: int = 8) -> dict[str, float]:
    """Zero-shot text-video recalls (txt_r*, vid_r*, r_mean, vid_mdR) on an MSRVTT annotation (JSONL or official)."""
    records = read_msrvtt(annotation, video_root=video_root, split=split)
    if not records:
        raise BlipError(f"{annotation}: no captioned videos" + (f" in split {split!r}" if split else ""))
    texts, txt2vid, vid2txt = [], [], []
    for v, rec in enumerate(records):
        vid2txt.append(list(range(len(texts), len(texts) + len(rec.captions))))
        texts += rec.captions
        txt2vid += [v] * len(rec.captions)
    v2t, t2v = video_retrieval_scores(model, [r.video for r in records], texts, num_frames=num_frames,
                                      k_test=k_test, batch_size=batch_size)
    result = {k.replace("img_", "vid_"): v for k, v in retrieval_metrics(v2t, t2v, vid2txt, txt2vid).items()}
    # The reference also reports the median 1-based rank of each caption's video.
    result["vid_mdR"] = float(np.median(positive_ranks(t2v, [[v] for v in txt2vid]).numpy() + 1))
    return result


@torch.no_grad()
def answer_video_questions(model: Blip, videos: Sequence[str | os.PathLike], questions: Sequence[str],
                           answers: Sequence[str] | None = None, num_frames: int = 8, k_test: int = 128,
                           num_beams: int = 3, max_length: int = 10, batch_size: int = 8) -> list[Answer]:
    """Answer questions about videos with a VQA model: generate (beam search), or rank an answer list (k_test)."""
    model._need("text_encoder", "video QA")
    model._need("text_decoder", "video QA")
    if model.cfg.decoder_input != "question":
        raise BlipError("this model's decoder reads images, not questions: load a VQA checkpoint for video QA")
    videos, questions = list(videos), list(questions)
    if len(videos) == 1:  # one video, many questions
        videos = videos * len(questions)
    if len(videos) != len(questions):
        raise BlipError(f"got {len(videos)} videos and {len(questions)} questions; give equal numbers, or one video")
    out: list[Answer] = []
    for s, pixels in zip(range(0, len(videos), batch_size), _frame_batches(model, videos, num_frames, batch_size)):
        ids, mask = model._texts([pre_question(q) for q in questions[s : s + batch_size]], 35)
        with model.autocast():
            states = model.model.encode_grounded(ids, mask, _encode_frames(model, pixels).flatten(1, 2))
            if answers is None:
                out += model._generate_answers(states, mask, num_beams, max_length)
            else:
                out += model._rank_answers(states, mask, answers, k_test)
    return out
