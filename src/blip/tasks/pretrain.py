"""Pretraining: build the model, tokenizer and image-text data from a recipe, and train with ITC + ITM + LM."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from blip.checkpoint import carry_training_state, load_checkpoint, read_state_dict
from blip.data import PairDataset
from blip.data.robust import SkipCounter
from blip.errors import BlipError
from blip.model.config import preset
from blip.model.vision import resample_pos_embed
from blip.recipes import PretrainRecipe, to_dict
from blip.tasks.common import image_transform, read_sources, read_webdataset, tokenizer_or_bert, train_and_save
from blip.tokenizer import Tokenizer
from blip.training.pretrain import BlipPretrain
from blip.training.trainer import StepInfo


def build_tokenizer(recipe: PretrainRecipe, records: list) -> Tokenizer:
    """The recipe's tokenizer file, or a whole-word vocabulary of the training texts (synthetic world)."""
    spec = recipe.tokenizer
    if spec == "from_data" and not records:
        raise BlipError("tokenizer: from_data needs annotation files; give a tokenizer with webdataset sources")
    if spec == "from_data":
        return Tokenizer.from_texts(t for r in records for t in r.texts)
    if spec == "bert-base-uncased":
        return tokenizer_or_bert(None)
    return Tokenizer.from_pretrained(spec)


def build_model(recipe: Mapping | PretrainRecipe, tok: Tokenizer) -> BlipPretrain:
    """A fresh model of the recipe's preset sized to the tokenizer, optionally initialised from a checkpoint."""
    recipe = PretrainRecipe.parse(recipe)
    m = recipe.model
    overrides = {
        "text.vocab_size": len(tok),
        "text.pad_id": tok.pad_id,
        "text.cls_id": tok.cls_id,
        "text.sep_id": tok.sep_id,
        "text.dec_id": tok.dec_id,
        "text.enc_id": tok.enc_id,
        **m.overrides,
    }
    if m.image_size is not None:
        overrides["vision.image_size"] = m.image_size
    cfg = preset(m.preset, **overrides)
    torch.manual_seed(recipe.train.seed)
    model = BlipPretrain(
        cfg, queue_size=recipe.queue_size, momentum=recipe.momentum, itm_negatives=recipe.itm_negatives
    )
    if m.vision_init:
        load_vision_init(model, m.vision_init)
    if m.init:
        init, _, _ = load_checkpoint(m.init, image_size=cfg.vision.image_size, allow_missing=True)
        model.load_state_dict(init.state_dict(), strict=False)
        model.reset_momentum()
        carry_training_state(model, m.init)  # its momentum encoders and queues, as the reference's load does
    return model


def load_vision_init(model: BlipPretrain, path: str | Path) -> None:
    """Start the ViT and its momentum copy from image-only weights, as the reference's init_deit loads DeiT's."""
    sd = {k.removeprefix("visual_encoder."): v for k, v in read_state_dict(path).items()}
    own = model.visual_encoder.state_dict()
    if "pos_embed" in sd:
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], model.cfg.vision.image_size, model.cfg.vision.patch_size)
    wrong = [k for k in own if k not in sd or sd[k].shape != own[k].shape]
    if wrong:
        raise BlipError(f"vision_init {path}: not a ViT of this model's shape ({wrong[0]} missing or of another shape)")
    # A classifier head beside the ViT (DeiT's) is left out, as the reference's strict=False load leaves it.
    model.visual_encoder.load_state_dict({k: sd[k] for k in own})
    model.reset_momentum()


def pretrain(recipe: Mapping | PretrainRecipe, resume: bool = False) -> Path:
    """Run a pretraining recipe; returns the folder of the final model (loadable with blip.load)."""
    recipe = PretrainRecipe.parse(recipe)
    train = recipe.train
    out = Path(train.out)
    if not resume and any(out.glob("checkpoint-*.pt")):
        raise BlipError(f"{out} already holds checkpoints: pass --resume to continue, or choose another out folder")
    counter = SkipCounter()
    # Tar shards stream (`read_webdataset`); every other reader lists records up front.
    streamed = any(src.reader == "webdataset" for src in recipe.data)
    records = [] if streamed else read_sources(recipe.data, counter)
    tok_dir = out / "tokenizer"
    tok = Tokenizer.from_pretrained(tok_dir) if resume and tok_dir.exists() else build_tokenizer(recipe, records)
    model = build_model(recipe, tok)
    size = model.cfg.vision.image_size
    transform = image_transform(recipe, size)
    if streamed:
        if recipe.mirror:
            raise BlipError(
                "mirror needs annotation files (it swaps left/right in captions); turn it off for webdataset sources"
            )
        dataset = read_webdataset(recipe.data, transform, recipe.max_words, train)
    else:
        dataset = PairDataset(records, transform, max_words=recipe.max_words, mirror=recipe.mirror)
    alpha, ramp = recipe.alpha, recipe.alpha_ramp_epochs

    def loss_fn(m, batch: dict[str, Any], info: StepInfo) -> dict[str, torch.Tensor]:
        ids, mask = tok(batch["caption"], max_length=recipe.max_tokens)
        device = batch["image"].device
        a = alpha * min(1.0, info.epoch_progress / ramp) if ramp else alpha
        losses = m(batch["image"], ids.to(device), mask.to(device), alpha=a)
        return {"loss": losses.total, "itc": losses.itc, "itm": losses.itm, "lm": losses.lm}

    def keep_recipe() -> None:
        out.mkdir(parents=True, exist_ok=True)
        tok.save(tok_dir)
        (out / "recipe.json").write_text(json.dumps(to_dict(recipe), indent=2))

    return train_and_save(train, model, model, tok, dataset, loss_fn, counter, resume, before_fit=keep_recipe)
