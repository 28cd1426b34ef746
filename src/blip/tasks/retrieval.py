"""Image-text retrieval evaluation: ITC over everything, then ITM re-ranking of each query's top k_test."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from blip.api import Blip
from blip.checkpoint import LoadReport, carry_training_state
from blip.data import PairDataset
from blip.data.readers import read_karpathy_eval
from blip.data.robust import SkipCounter
from blip.data.samples import RetrievalSet
from blip.data.text import pre_caption
from blip.distributed import rank
from blip.evaluation.retrieval import retrieval_metrics, two_stage_scores
from blip.images import load_image
from blip.model.blip import BlipModel
from blip.model.config import for_task
from blip.progress import Progress
from blip.recipes import CAPTION_WORDS, K_TEST, TEXT_TOKENS, RetrievalRecipe
from blip.tasks.common import FinetuneTask, Parts, image_transform, load_init, read_sources
from blip.tokenizer import Tokenizer
from blip.training.retrieval import BlipRetrievalTrain
from blip.training.trainer import StepInfo


@torch.no_grad()
def retrieval_scores(
    model: Blip, rs: RetrievalSet, k_test: int = K_TEST, batch_size: int = 64, max_words: int = CAPTION_WORDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text, text->image) score matrices of the reference's two-stage protocol."""
    m, device = model.model, model.device
    embeds, image_feats = [], []
    progress = Progress(len(rs.images), "encoding images")
    for s in range(0, len(rs.images), batch_size):
        pixels = torch.stack([model.transform(load_image(p)) for p in rs.images[s : s + batch_size]]).to(device)
        with model.autocast():
            e = m.encode_image(pixels)
            embeds.append(e)
            image_feats.append(m.image_embed(e).float())
        progress.update(len(pixels))
    progress.close()
    texts = [pre_caption(t, max_words) for t in rs.texts]
    return two_stage_retrieval(model, torch.cat(image_feats), torch.cat(embeds), texts, k_test, batch_size)


@torch.no_grad()
def two_stage_retrieval(
    model: Blip, feats: torch.Tensor, tokens: torch.Tensor, texts: list[str], k_test: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(visual->text, text->visual) scores of images or videos given as their ITC features (N, D) and the tokens
    their ITM cross-attends to (N, L, width; on any device), against already cleaned texts."""
    m, device = model.model, model.device
    ids, mask = model._texts(texts, TEXT_TOKENS)
    with model.autocast():  # a bf16 model's weights are bf16: its text features too must run under autocast
        text_feats = torch.cat(
            [m.text_embed(ids[s : s + 256], mask[s : s + 256]).float() for s in range(0, len(ids), 256)]
        )
    sims = feats @ text_feats.t()

    def itm(visual_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(visual_idx), batch_size):
            v, t = visual_idx[s : s + batch_size].to(tokens.device), text_idx[s : s + batch_size].to(device)
            with model.autocast():
                out.append(m.itm_logits(tokens[v].to(device), ids[t], mask[t])[:, 1].float())
        return torch.cat(out)

    return two_stage_scores(sims, k_test, itm, rows_per_call=max(1, batch_size // max(1, min(k_test, len(texts)))))


def evaluate_retrieval(
    model: Blip, annotation: str, image_root: str = "", k_test: int = K_TEST, batch_size: int = 64
) -> dict[str, Any]:
    """Karpathy-protocol recalls (txt_r1 ... r_mean) of a model on a val/test annotation file."""
    rs = read_karpathy_eval(annotation, image_root=image_root)
    i2t, t2i = retrieval_scores(model, rs, k_test=k_test, batch_size=batch_size)
    return retrieval_metrics(i2t, t2i, rs.img2txt, rs.txt2img)


def retrieval_init(recipe: Mapping | RetrievalRecipe) -> tuple[BlipRetrievalTrain, Tokenizer, LoadReport]:
    """The training model from `recipe.init`: its weights, and its momentum encoders and queues where it has
    them (as the reference's strict=False load); momentum encoders it lacks start as copies of the online ones."""
    recipe = RetrievalRecipe.parse(recipe)
    init, tok, report = load_init(recipe)
    return _training_model(recipe, init, report), tok, report


def _training_model(recipe: RetrievalRecipe, init: BlipModel, report: LoadReport) -> BlipRetrievalTrain:
    model = BlipRetrievalTrain(
        for_task(init.cfg, "retrieval"),
        queue_size=recipe.queue_size,
        momentum=recipe.momentum,
        itm_negatives=recipe.itm_negatives,
    )
    model.load_state_dict(init.state_dict(), strict=False)
    model.reset_momentum()
    carry_training_state(model, recipe.init, report)
    return model


def retrieval_parts(
    recipe: RetrievalRecipe, init: BlipModel, tok: Tokenizer, report: LoadReport, counter: SkipCounter
) -> Parts:
    """The filter's part of a fine-tune: ITC + ITM on image-caption pairs, positives by image id."""
    model = _training_model(recipe, init, report)
    if report.carried and rank() == 0:
        kept = ", ".join(dict.fromkeys(name.split(".")[0] for name in report.carried))
        print(f"init: kept the checkpoint's {kept}", file=sys.stderr)
    records = read_sources(recipe.data, counter)
    # Pairs of one image are positives of each other: number the images (the reference's img_id).
    numbers = {image_id: i for i, image_id in enumerate(dict.fromkeys(r.image_id for r in records))}
    dataset = PairDataset(
        records,
        image_transform(recipe, model.cfg.vision.image_size),
        max_words=recipe.max_words,
        mirror=recipe.mirror,
    )

    def loss_fn(m: torch.nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["caption"], max_length=recipe.max_tokens)
        device = batch["image"].device
        image_ids = torch.tensor([numbers[i] for i in batch["image_id"]], device=device)
        a = recipe.alpha * min(1.0, info.epoch_progress)  # ramped over the first epoch, as the reference
        losses = m(batch["image"], ids.to(device), mask.to(device), image_ids, alpha=a)
        return {"loss": losses["itc"] + losses["itm"], **losses}

    return Parts(model, model, dataset, loss_fn)


TASK = FinetuneTask(retrieval_parts)


def finetune_retrieval(recipe: Mapping | RetrievalRecipe, resume: bool = False) -> Path:
    """`finetune("retrieval", recipe, resume)` (tasks/finetune.py), under the name the retrieval tests use."""
    from blip.tasks.finetune import finetune

    return finetune("retrieval", recipe, resume)
