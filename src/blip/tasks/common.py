"""What every training task shares: reading a recipe's data sources, its image transform, the tokenizer fallback,
the fine-tunes' start from a checkpoint and their per-task part, and running the one trainer then saving the
final model."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset, IterableDataset

from blip.checkpoint import LoadReport, load_checkpoint, save_pretrained
from blip.data import read_karpathy_train, read_pretrain_json, read_table, train_transform
from blip.data.robust import SkipCounter
from blip.data.webdata import WebDatasetPairs, expand_shards
from blip.distributed import rank, setup_distributed, world_size
from blip.errors import BlipError
from blip.model.blip import BlipModel
from blip.recipes import FinetuneRecipe, ImageRecipe, Source
from blip.tokenizer import Tokenizer
from blip.training.trainer import LossFn, TrainConfig, Trainer

READERS = {"pretrain_json": read_pretrain_json, "karpathy": read_karpathy_train, "table": read_table}


def read_sources(sources: list[Source], counter: SkipCounter) -> list:
    """Records of every data source of a recipe: {reader: pretrain_json|karpathy|table, path, image_root}."""
    records = []
    for src in sources:
        reader = READERS.get(src.reader or "pretrain_json")
        if reader is None:
            raise BlipError(f"unknown reader {src.reader!r}; known: {', '.join(READERS)}")
        src.needs("path")
        records += reader(src.path, image_root=src.image_root or "", counter=counter)
    if not records:
        raise BlipError("the recipe's data sources hold no usable image-text pairs")
    return records


def read_webdataset(sources: list[Source], transform: Callable, max_words: int, train: TrainConfig) -> WebDatasetPairs:
    """One stream over the tar shards of every {reader: webdataset, urls} source of a recipe (img2dataset layout).

    An epoch is `train.steps_per_epoch` optimiser steps: each rank and loader worker yields its share of the
    batches those steps take (whole batches: a worker batches only its own samples), cycling over its shards, so
    every rank has the same number of batches.
    """
    if any(src.reader != "webdataset" for src in sources):
        raise BlipError("webdataset sources cannot be mixed with other readers in one recipe")
    if not train.steps_per_epoch:
        raise BlipError("webdataset sources have no length: set train.steps_per_epoch")
    for src in sources:
        src.needs("urls")
    urls = [url for src in sources for url in expand_shards(src.urls)]
    setup_distributed()  # the stream's length depends on the number of ranks
    workers = max(1, train.num_workers)
    per_worker = -(-train.steps_per_epoch * train.grad_accum // workers) * train.batch_size
    return WebDatasetPairs(
        urls, transform, max_words=max_words, seed=train.seed, epoch_samples=per_worker * workers * world_size()
    )


def image_transform(recipe: ImageRecipe, size: int):
    """The training transform of a recipe: crop scale, RandAugment and flip (the reference's by default)."""
    return train_transform(size, min_scale=recipe.crop_scale_min, flip=recipe.blind_flip(), randaug=recipe.randaug)


def report_skips(failures: list[str], total: int, source: str, unit: str = "images") -> None:
    """Say which inputs an evaluation could not use; when most could not, fail (its metric would mean nothing)."""
    if not failures:
        return
    shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
    if 2 * len(failures) > total:
        raise BlipError(
            f"{source}: {len(failures)} of {total} {unit} could not be used ({shown}); check the "
            f"image root the annotation's paths are relative to"
        )
    print(f"blip: {len(failures)} of {total} {unit} skipped ({shown})", file=sys.stderr)


def tokenizer_or_bert(tok: Tokenizer | None) -> Tokenizer:
    """The checkpoint's tokenizer; a reference .pth has none, and BLIP's is bert-base-uncased's vocabulary."""
    if tok is not None:
        return tok
    from blip import _bert_tokenizer

    return _bert_tokenizer()


def load_init(recipe: FinetuneRecipe, **options: Any) -> tuple[BlipModel, Tokenizer, LoadReport]:
    """The model a fine-tune starts from (`recipe.init`, for the recipe's task) and its tokenizer."""
    if not recipe.init:
        raise BlipError(f"the {recipe.TASK} recipe lacks init (the checkpoint to fine-tune)")
    model, tok, report = load_checkpoint(
        recipe.init, task=recipe.TASK, image_size=recipe.image_size, tokenizer=recipe.tokenizer, **options
    )
    return model, tokenizer_or_bert(tok), report


@dataclass
class Parts:
    """What a task adds to the one fine-tune path: the module whose forward is the loss, the model saved at the
    end, the dataset and the loss function."""

    module: nn.Module
    model: BlipModel
    dataset: Dataset | IterableDataset
    loss_fn: LossFn


@dataclass(frozen=True)
class FinetuneTask:
    """A fine-tuning task: how its checkpoint loads (extra load_checkpoint options) and its parts."""

    build: Callable[[Any, BlipModel, Tokenizer, LoadReport, SkipCounter], Parts]
    load_options: Callable[[Any], dict[str, Any]] = lambda recipe: {}


def train_and_save(
    train: TrainConfig,
    module: nn.Module,
    model: BlipModel,
    tok: Tokenizer,
    dataset: Dataset | IterableDataset,
    loss_fn: LossFn,
    counter: SkipCounter,
    resume: bool,
    before_fit: Callable[[], None] | None = None,
) -> Path:
    """Train `module` (whose forward is the loss) with the one trainer; save `model` as OUT/model (rank 0)."""
    trainer = Trainer(train, module, dataset, loss_fn)
    trainer.skips.merge(counter)
    if rank() == 0:  # beside the checkpoints, so that a checkpoint-*.pt loads for inference with its tokenizer
        tok.save(Path(train.out) / "tokenizer")
    if before_fit is not None and rank() == 0:
        before_fit()
    trainer.fit(resume=resume)
    final = Path(train.out) / "model"
    if rank() == 0:
        save_pretrained(model, tok, final)
    skips = trainer.skips
    if 2 * skips.total_skipped > skips.used + skips.total_skipped:  # the trainer stops such runs only past 200
        raise BlipError(
            f"{final} was written, but {skips.total_skipped} of {skips.used + skips.total_skipped} "
            f"samples were unusable ({skips.summary()}); check the data paths and image_root"
        )
    return final
