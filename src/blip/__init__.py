"""BLIP in plain PyTorch: `blip.load(source)` gives a model that captions, answers and matches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from blip.api import Answer, Blip, Caption
from blip.checkpoint import LoadReport, export_transformers, load_checkpoint, save_pretrained
from blip.errors import BlipError, CheckpointError, ImageError
from blip.index import Index, SearchHit
from blip.model.blip import BlipModel
from blip.model.config import BlipConfig, preset
from blip.tokenizer import Tokenizer

__all__ = ["Answer", "Blip", "BlipConfig", "BlipError", "BlipModel", "Caption", "CheckpointError", "ImageError",
           "Index", "LoadReport", "SearchHit", "Tokenizer", "export_transformers", "load", "preset", "save_pretrained"]

BERT_VOCAB_REPO = "bert-base-uncased"


def load(source: str | Path, task: str | None = None, device: str = "cpu", dtype: str = "float32",
         image_size: int | None = None, tokenizer: str | Path | Tokenizer | None = None,
         allow_missing: bool | list[str] = False, **overrides: Any) -> Blip:
    """Load a reference .pth, a transformers folder or Hub id, or a project folder, ready for inference.

    `task` (caption, retrieval, vqa, pretrain) restricts or checks the parts; `image_size` resamples position
    embeddings; `overrides` set config fields by dotted name, e.g. **{"vision.heads": 4}.
    """
    model, tok, report = load_checkpoint(source, task=task, image_size=image_size, overrides=overrides or None,
                                         allow_missing=allow_missing, tokenizer=tokenizer)
    if tok is None:  # reference .pth files carry no tokenizer; their special ids are bert-base-uncased's + 2
        tok = _bert_tokenizer()
        model.cfg = model.cfg.replace(**{"text.pad_id": tok.pad_id, "text.cls_id": tok.cls_id,
                                         "text.sep_id": tok.sep_id, "text.dec_id": tok.dec_id,
                                         "text.enc_id": tok.enc_id})
    return Blip(model, tok, device=device, dtype=dtype, report=report)


def _bert_tokenizer() -> Tokenizer:
    """bert-base-uncased's vocabulary (what the reference checkpoints use), downloaded once when online."""
    try:
        from huggingface_hub import hf_hub_download

        return Tokenizer.from_vocab(hf_hub_download(BERT_VOCAB_REPO, "vocab.txt"))
    except Exception as e:  # noqa: BLE001 - offline, or huggingface_hub missing
        raise BlipError(
            f"this checkpoint has no tokenizer and {BERT_VOCAB_REPO}'s vocab.txt could not be fetched "
            f"({type(e).__name__}); pass tokenizer=PATH (a vocab.txt or tokenizer.json)"
        ) from None
