"""Captioning: fine-tune the image-grounded decoder with the prompt excluded from the loss; evaluate with the
shared generation loop and the COCO caption toolkit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blip.api import Blip
from blip.checkpoint import LoadReport
from blip.data import PairDataset, read_karpathy_eval
from blip.data.robust import SkipCounter
from blip.errors import ImageError
from blip.evaluation.captioning import caption_metrics, write_caption_results
from blip.images import load_image
from blip.model.blip import BlipModel
from blip.model.losses import lm_loss
from blip.progress import Progress
from blip.recipes import CaptionRecipe
from blip.tasks.common import FinetuneTask, Parts, image_transform, read_sources, report_skips
from blip.tokenizer import Tokenizer
from blip.training.trainer import StepInfo


class CaptionTraining(nn.Module):
    """LM loss of prompt + caption given the image; prompt tokens are not targets (reference BLIP_Decoder)."""

    def __init__(self, model: BlipModel, prompt_tokens: int):
        super().__init__()
        self.model = model
        self.prompt_tokens = prompt_tokens

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids = ids.clone()
        ids[:, 0] = self.model.cfg.text.dec_id
        logits = self.model.text_decoder(ids, mask, self.model.encode_image(pixels))
        per_row = lm_loss(logits, ids, mask, self.model.cfg.label_smoothing, ignore_prefix=self.prompt_tokens)
        targets = mask[:, self.prompt_tokens :].sum().clamp_min(1)
        return per_row.sum() / targets


def caption_parts(
    recipe: CaptionRecipe, model: BlipModel, tok: Tokenizer, report: LoadReport, counter: SkipCounter
) -> Parts:
    """The captioner's part of a fine-tune: prompt-aware LM loss over the recipe's image-caption pairs."""
    prompt_tokens = len(tok.encode(recipe.prompt)) - 1  # [DEC] + the prompt's words, without [SEP]
    dataset = PairDataset(
        read_sources(recipe.data, counter),
        image_transform(recipe, model.cfg.vision.image_size),
        max_words=recipe.max_words,
        prompt=recipe.prompt,
        mirror=recipe.mirror,
    )

    def loss_fn(m: nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["caption"], max_length=recipe.max_tokens)
        device = batch["image"].device
        return {"loss": m(batch["image"], ids.to(device), mask.to(device))}

    return Parts(CaptionTraining(model, prompt_tokens), model, dataset, loss_fn)


TASK = FinetuneTask(caption_parts)


def evaluate_caption(
    model: Blip,
    annotation: str,
    image_root: str = "",
    out: str | None = None,
    meteor: bool = True,
    batch_size: int = 32,
    **generation: Any,
) -> dict[str, float]:
    """Caption every image of a Karpathy val/test file (beam 3, max 20, min 5 by default) and score it."""
    rs = read_karpathy_eval(annotation, image_root=image_root)
    images, ids, failures = [], [], []
    for path, image_id in zip(rs.images, rs.image_ids):
        try:
            images.append(load_image(path))
            ids.append(image_id)
        except ImageError as e:
            failures.append(str(e))
    report_skips(failures, len(rs.images), annotation)
    progress = Progress(len(images), "captioning")
    captions = model.caption(images, batch_size=batch_size, progress=progress, **generation)
    progress.close()
    candidates = {i: c.text for i, c in zip(ids, captions)}
    references = {rs.image_ids[i]: [rs.texts[t] for t in rs.img2txt[i]] for i in range(len(rs.images))}
    metrics = caption_metrics({i: references[i] for i in ids}, candidates, meteor=meteor)
    if out:
        write_caption_results(out, candidates)
        Path(out).with_suffix(".metrics.json").write_text(json.dumps({**metrics, "skipped_images": len(failures)}))
    return metrics
