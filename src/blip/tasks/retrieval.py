"""Image-text retrieval evaluation: ITC over everything, then ITM re-ranking of each query's top k_test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from blip.api import Blip
from blip.checkpoint import LoadReport, carry_training_state, load_checkpoint
from blip.data import PairDataset
from blip.data.readers import read_karpathy_eval
from blip.data.robust import SkipCounter
from blip.data.samples import RetrievalSet
from blip.data.text import pre_caption
from blip.distributed import rank
from blip.evaluation.retrieval import retrieval_metrics, two_stage_scores
from blip.images import load_image
from blip.model.config import for_task
from blip.progress import Progress
from blip.tasks.common import image_transform, read_sources, tokenizer_or_bert, train_and_save
from blip.tokenizer import Tokenizer
from blip.training.retrieval import BlipRetrievalTrain
from blip.training.trainer import StepInfo, TrainConfig


@torch.no_grad()
def retrieval_scores(
    model: Blip, rs: RetrievalSet, k_test: int = 256, batch_size: int = 64, max_words: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text, text->image) score matrices of the reference's two-stage protocol."""
    m, device = model.model, model.device
    texts = [pre_caption(t, max_words) for t in rs.texts]
    ids, mask = model.tokenizer(texts, max_length=35)
    ids, mask = ids.to(device), mask.to(device)
    with model.autocast():  # a bf16 model's weights are bf16: its text features too must run under autocast
        text_feats = torch.cat(
            [m.text_embed(ids[s : s + 256], mask[s : s + 256]).float() for s in range(0, len(ids), 256)]
        )
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
    image_embeds, image_feats = torch.cat(embeds), torch.cat(image_feats)
    sims = image_feats @ text_feats.t()

    def itm(images: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(images), batch_size):
            i, t = images[s : s + batch_size].to(device), text_idx[s : s + batch_size].to(device)
            with model.autocast():
                out.append(m.itm_logits(image_embeds[i], ids[t], mask[t])[:, 1].float())
        return torch.cat(out)

    return two_stage_scores(sims, k_test, itm, rows_per_call=max(1, batch_size // max(1, min(k_test, len(texts)))))


def evaluate_retrieval(
    model: Blip, annotation: str, image_root: str = "", k_test: int = 256, batch_size: int = 64
) -> dict[str, Any]:
    """Karpathy-protocol recalls (txt_r1 ... r_mean) of a model on a val/test annotation file."""
    rs = read_karpathy_eval(annotation, image_root=image_root)
    i2t, t2i = retrieval_scores(model, rs, k_test=k_test, batch_size=batch_size)
    return retrieval_metrics(i2t, t2i, rs.img2txt, rs.txt2img)


def retrieval_init(recipe: dict[str, Any]) -> tuple[BlipRetrievalTrain, Tokenizer, LoadReport]:
    """The training model from `recipe['init']`: its weights, and its momentum encoders and queues where it has
    them (as the reference's strict=False load); momentum encoders it lacks start as copies of the online ones."""
    init, tok, report = load_checkpoint(
        recipe["init"], task="retrieval", image_size=recipe.get("image_size"), tokenizer=recipe.get("tokenizer")
    )
    model = BlipRetrievalTrain(
        for_task(init.cfg, "retrieval"),
        queue_size=recipe.get("queue_size", 57600),
        momentum=recipe.get("momentum", 0.995),
    )
    model.load_state_dict(init.state_dict(), strict=False)
    model.reset_momentum()
    carry_training_state(model, recipe["init"], report)
    return model, tokenizer_or_bert(tok), report


def finetune_retrieval(recipe: dict[str, Any], resume: bool = False) -> Path:
    """Fine-tune ITC + ITM on image-caption pairs (positives by image id); returns the final model folder."""
    train = TrainConfig(**{"schedule": "cosine", "min_lr": 0.0, **recipe.get("train", {})})
    model, tok, report = retrieval_init(recipe)
    if report.carried and rank() == 0:
        kept = ", ".join(dict.fromkeys(name.split(".")[0] for name in report.carried))
        print(f"init: kept the checkpoint's {kept}", file=sys.stderr)
    counter = SkipCounter()
    records = read_sources(recipe["data"], counter)
    # Pairs of one image are positives of each other: number the images (the reference's img_id).
    numbers = {image_id: i for i, image_id in enumerate(dict.fromkeys(r.image_id for r in records))}
    dataset = PairDataset(
        records,
        image_transform(recipe, model.cfg.vision.image_size, 0.5),
        max_words=recipe.get("max_words", 30),
        mirror=recipe.get("mirror", False),
    )
    alpha, max_tokens = recipe.get("alpha", 0.4), recipe.get("max_tokens", 35)

    def loss_fn(m: torch.nn.Module, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["caption"], max_length=max_tokens)
        device = batch["image"].device
        image_ids = torch.tensor([numbers[i] for i in batch["image_id"]], device=device)
        a = alpha * min(1.0, info.epoch_progress)  # ramped over the first epoch, as the reference
        losses = m(batch["image"], ids.to(device), mask.to(device), image_ids, alpha=a)
        return {"loss": losses["itc"] + losses["itm"], **losses}

    return train_and_save(train, model, model, tok, dataset, loss_fn, counter, resume)
