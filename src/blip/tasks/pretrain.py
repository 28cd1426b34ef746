"""Pretraining: build the model, tokenizer and image-text data from a recipe, and train with ITC + ITM + LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset

from blip.checkpoint import load_checkpoint, save_pretrained
from blip.data import PairDataset, read_karpathy_train, read_pretrain_json, read_table, train_transform
from blip.data.robust import SkipCounter
from blip.errors import BlipError
from blip.model.config import preset
from blip.tokenizer import Tokenizer
from blip.training.pretrain import BlipPretrain
from blip.training.distributed import rank
from blip.training.trainer import StepInfo, TrainConfig, Trainer

READERS = {"pretrain_json": read_pretrain_json, "karpathy": read_karpathy_train, "table": read_table}


def read_sources(sources: list[dict[str, Any]], counter: SkipCounter) -> list:
    """Records of every data source of a recipe: {reader: pretrain_json|karpathy|table, path, image_root}."""
    records = []
    for src in sources:
        reader = READERS.get(src.get("reader", "pretrain_json"))
        if reader is None:
            raise BlipError(f"unknown reader {src.get('reader')!r}; known: {', '.join(READERS)}")
        records += reader(src["path"], image_root=src.get("image_root", ""), counter=counter)
    if not records:
        raise BlipError("the recipe's data sources hold no usable image-text pairs")
    return records


def image_transform(recipe: dict[str, Any], size: int, min_scale: float):
    """The training transform of a recipe: crop scale, RandAugment, and no blind flip when the dataset mirrors
    pairs itself (a flip must swap "left" and "right" in the caption too)."""
    return train_transform(size, min_scale=recipe.get("crop_scale_min", min_scale), flip=not recipe.get("mirror"),
                           randaug=recipe.get("randaug", True))


def build_tokenizer(recipe: dict[str, Any], records: list) -> Tokenizer:
    """The recipe's tokenizer file, or a whole-word vocabulary of the training texts (synthetic world)."""
    spec = recipe.get("tokenizer", "bert-base-uncased")
    if spec == "from_data":
        return Tokenizer.from_texts(t for r in records for t in r.texts)
    if spec == "bert-base-uncased":
        from blip import _bert_tokenizer

        return _bert_tokenizer()
    return Tokenizer.from_pretrained(spec)


def build_model(recipe: dict[str, Any], tok: Tokenizer) -> BlipPretrain:
    """A fresh model of the recipe's preset sized to the tokenizer, optionally initialised from a checkpoint."""
    m = recipe.get("model", {})
    overrides = {"text.vocab_size": len(tok), "text.pad_id": tok.pad_id, "text.cls_id": tok.cls_id,
                 "text.sep_id": tok.sep_id, "text.dec_id": tok.dec_id, "text.enc_id": tok.enc_id,
                 **m.get("overrides", {})}
    if "image_size" in m:
        overrides["vision.image_size"] = m["image_size"]
    cfg = preset(m.get("preset", "base"), **overrides)
    torch.manual_seed(recipe.get("train", {}).get("seed", 42))
    model = BlipPretrain(cfg, queue_size=recipe.get("queue_size", 57600), momentum=recipe.get("momentum", 0.995))
    if m.get("init"):
        init, _, _ = load_checkpoint(m["init"], image_size=cfg.vision.image_size, allow_missing=True)
        model.load_state_dict(init.state_dict(), strict=False)
        for online, ema in (("visual_encoder", "visual_encoder_m"), ("text_encoder", "text_encoder_m")):
            getattr(model, ema).load_state_dict(getattr(model, online).state_dict())
    return model


def pretrain(recipe: dict[str, Any], resume: bool = False) -> Path:
    """Run a pretraining recipe; returns the folder of the final model (loadable with blip.load)."""
    train = TrainConfig(**recipe.get("train", {}))
    out = Path(train.out)
    if not resume and any(out.glob("checkpoint-*.pt")):
        raise BlipError(f"{out} already holds checkpoints: pass --resume to continue, or choose another out folder")
    counter = SkipCounter()
    records = read_sources(recipe["data"], counter)
    tok_dir = out / "tokenizer"
    tok = Tokenizer.from_pretrained(tok_dir) if resume and tok_dir.exists() else build_tokenizer(recipe, records)
    model = build_model(recipe, tok)
    size = model.cfg.vision.image_size
    dataset = PairDataset(records, image_transform(recipe, size, 0.2), max_words=recipe.get("max_words", 30),
                          mirror=recipe.get("mirror", False))
    alpha, ramp = recipe.get("alpha", 0.4), recipe.get("alpha_ramp_epochs", 2)
    max_tokens = recipe.get("max_tokens", 30)

    def loss_fn(m, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["caption"], max_length=max_tokens)
        device = batch["image"].device
        a = alpha * min(1.0, info.epoch_progress / ramp) if ramp else alpha
        losses = m(batch["image"], ids.to(device), mask.to(device), alpha=a)
        return {"loss": losses.total, "itc": losses.itc, "itm": losses.itm, "lm": losses.lm}

    trainer = Trainer(train, model, dataset, loss_fn)
    trainer.skips.merge(counter)
    if rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        tok.save(tok_dir)
        (out / "recipe.json").write_text(json.dumps(recipe, indent=2))
    trainer.fit(resume=resume)
    final = out / "model"
    if rank() == 0:
        save_pretrained(model, tok, final)
    return final
