"""NLVR2: is a statement true of an ordered pair of images? The twin-branch encoder plus a classifier head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blip.api import Blip
from blip.checkpoint import load_checkpoint
from blip.data import NLVR2Dataset, collate, eval_transform, read_nlvr2
from blip.data.robust import SkipCounter
from blip.errors import BlipError
from blip.model.blip import BlipModel
from blip.tasks.common import image_transform, report_skips, tokenizer_or_bert, train_and_save
from blip.training.trainer import StepInfo, TrainConfig

# New parameters when starting from a pretrained (single cross-attention) model.
NEW_PARAMETERS = ["cls_head.", ".merge_layer."]


class NLVR2Training(nn.Module):
    """Cross-entropy of the classifier over (image0, image1, statement); both images go through the ViT at once."""

    def __init__(self, model: BlipModel):
        super().__init__()
        self.model = model

    def forward(
        self, image0: torch.Tensor, image1: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        embeds0, embeds1 = self.model.encode_image(torch.cat([image0, image1])).chunk(2)
        return F.cross_entropy(self.model.nlvr_logits(embeds0, embeds1, ids, mask), labels)


def finetune_nlvr2(recipe: dict[str, Any], resume: bool = False) -> Path:
    """Fine-tune NLVR2 from a pretrained model (branches copied from its cross-attention) or an NLVR2 checkpoint."""
    train = TrainConfig(**{"schedule": "cosine", "min_lr": 0.0, **recipe.get("train", {})})
    # The branches merge from text layer 6 as in the reference, or where an NLVR2 init checkpoint's merge layers
    # start; a recipe's nlvr_merge_from overrides both (shallow models merge nowhere otherwise).
    overrides = {"nlvr_merge_from": recipe["nlvr_merge_from"]} if "nlvr_merge_from" in recipe else None
    model, tok, _ = load_checkpoint(
        recipe["init"],
        task="nlvr2",
        image_size=recipe.get("image_size"),
        tokenizer=recipe.get("tokenizer"),
        allow_missing=NEW_PARAMETERS,
        overrides=overrides,
    )
    tok = tokenizer_or_bert(tok)
    counter = SkipCounter()
    records = []
    for src in recipe["data"]:
        records += read_nlvr2(src["path"], image_root=src.get("image_root", ""), counter=counter)
    if not records:
        raise BlipError("the recipe's NLVR2 data holds no usable statements")
    dataset = NLVR2Dataset(
        records,
        image_transform(recipe, model.cfg.vision.image_size, 0.5),
        max_words=recipe.get("max_words", 40),
        train=True,
    )

    def loss_fn(m: nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["statement"], max_length=recipe.get("max_tokens", 40))
        device = batch["image0"].device
        return {"loss": m(batch["image0"], batch["image1"], ids.to(device), mask.to(device), batch["label"])}

    return train_and_save(train, NLVR2Training(model), model, tok, dataset, loss_fn, counter, resume)


@torch.no_grad()
def evaluate_nlvr2(model: Blip, annotation: str, image_root: str = "", batch_size: int = 16) -> dict[str, float]:
    """Accuracy (percent) on an NLVR2 split."""
    counter = SkipCounter()
    records = read_nlvr2(annotation, image_root=image_root, counter=counter)
    dataset = NLVR2Dataset(records, eval_transform(model.cfg.vision.image_size), train=False)
    correct = total = 0
    failures: list[str] = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
        failures += [message for _, message in batch["skipped"]]
        if not batch["size"]:
            continue
        ids, mask = model.tokenizer(batch["statement"], max_length=40)
        with model.autocast():
            e0, e1 = model.model.encode_image(torch.cat([batch["image0"], batch["image1"]]).to(model.device)).chunk(2)
            pred = model.model.nlvr_logits(e0, e1, ids.to(model.device), mask.to(model.device)).argmax(-1).cpu()
        correct += int((pred == batch["label"]).sum())
        total += batch["size"]
    report_skips(failures, len(dataset), annotation, unit="image pairs")
    if total == 0:
        raise BlipError(f"{annotation}: no usable NLVR2 pairs")
    return {"accuracy": 100.0 * correct / total, "pairs": total}
