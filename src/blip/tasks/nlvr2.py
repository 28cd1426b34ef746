"""NLVR2: is a statement true of an ordered pair of images? The twin-branch encoder plus a classifier head."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blip.api import Blip
from blip.checkpoint import LoadReport
from blip.data import NLVR2Dataset, collate, eval_transform, read_nlvr2
from blip.data.robust import SkipCounter
from blip.errors import BlipError
from blip.model.blip import BlipModel
from blip.recipes import NLVR2Recipe
from blip.tasks.common import FinetuneTask, Parts, image_transform, report_skips
from blip.tokenizer import Tokenizer
from blip.training.trainer import StepInfo

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


def nlvr2_parts(
    recipe: NLVR2Recipe, model: BlipModel, tok: Tokenizer, report: LoadReport, counter: SkipCounter
) -> Parts:
    """The NLVR2 part of a fine-tune: the classifier's cross-entropy over the recipe's statements."""
    records = []
    for src in recipe.data:
        src.needs("path")
        records += read_nlvr2(src.path, image_root=src.image_root or "", counter=counter)
    if not records:
        raise BlipError("the recipe's NLVR2 data holds no usable statements")
    dataset = NLVR2Dataset(
        records, image_transform(recipe, model.cfg.vision.image_size), max_words=recipe.max_words, train=True
    )

    def loss_fn(m: nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["statement"], max_length=recipe.max_tokens)
        device = batch["image0"].device
        return {"loss": m(batch["image0"], batch["image1"], ids.to(device), mask.to(device), batch["label"])}

    return Parts(NLVR2Training(model), model, dataset, loss_fn)


def _load_options(recipe: NLVR2Recipe) -> dict[str, Any]:
    """New parameters may be missing from a pretrained init; the recipe may say where the branches merge."""
    merge = recipe.nlvr_merge_from
    return {"allow_missing": NEW_PARAMETERS, "overrides": None if merge is None else {"nlvr_merge_from": merge}}


TASK = FinetuneTask(nlvr2_parts, load_options=_load_options)


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
        ids, mask = model.tokenizer(batch["statement"], max_length=NLVR2Recipe.max_tokens)
        with model.autocast():
            e0, e1 = model.model.encode_image(torch.cat([batch["image0"], batch["image1"]]).to(model.device)).chunk(2)
            pred = model.model.nlvr_logits(e0, e1, ids.to(model.device), mask.to(model.device)).argmax(-1).cpu()
        correct += int((pred == batch["label"]).sum())
        total += batch["size"]
    report_skips(failures, len(dataset), annotation, unit="image pairs")
    if total == 0:
        raise BlipError(f"{annotation}: no usable NLVR2 pairs")
    return {"accuracy": 100.0 * correct / total, "pairs": total}
