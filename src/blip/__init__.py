"""BLIP in plain PyTorch: `blip.load(source)` gives a model that captions, answers and matches."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blip.errors import BlipError, CheckpointError, ImageError

if TYPE_CHECKING:
    from blip.api import Answer, Blip, Caption
    from blip.checkpoint import LoadReport, export_transformers, load_checkpoint, save_pretrained
    from blip.index import Index, SearchHit
    from blip.model.blip import BlipModel
    from blip.model.config import BlipConfig, preset
    from blip.tokenizer import Tokenizer

__all__ = [
    "Answer",
    "Blip",
    "BlipConfig",
    "BlipError",
    "BlipModel",
    "Caption",
    "CheckpointError",
    "ImageError",
    "Index",
    "LoadReport",
    "SearchHit",
    "Tokenizer",
    "export_transformers",
    "load",
    "load_checkpoint",
    "preset",
    "save_pretrained",
]

# Imported on first use (PEP 562), so `blip --help` and argument errors answer before torch is loaded.
_LAZY = {
    "Answer": "blip.api",
    "Blip": "blip.api",
    "Caption": "blip.api",
    "LoadReport": "blip.checkpoint",
    "export_transformers": "blip.checkpoint",
    "load_checkpoint": "blip.checkpoint",
    "save_pretrained": "blip.checkpoint",
    "BlipModel": "blip.model.blip",
    "BlipConfig": "blip.model.config",
    "preset": "blip.model.config",
    "Tokenizer": "blip.tokenizer",
    "Index": "blip.index",
    "SearchHit": "blip.index",
}

BERT_VOCAB_REPO = "bert-base-uncased"


def __getattr__(name: str) -> Any:
    """The public classes and functions, imported when first asked for."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'blip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load(
    source: str | Path,
    task: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    image_size: int | None = None,
    tokenizer: str | Path | Tokenizer | None = None,
    allow_missing: bool | list[str] = False,
    **overrides: Any,
) -> Blip:
    """Load a reference .pth, a transformers folder or Hub id, a project folder or a trainer checkpoint-*.pt.

    `task` (caption, retrieval, vqa, pretrain) restricts or checks the parts; `image_size` resamples position
    embeddings; `overrides` set config fields by dotted name, e.g. **{"vision.heads": 4}.
    """
    from blip.api import Blip
    from blip.checkpoint import load_checkpoint

    model, tok, report = load_checkpoint(
        source,
        task=task,
        image_size=image_size,
        overrides=overrides or None,
        allow_missing=allow_missing,
        tokenizer=tokenizer,
    )
    if tok is None:  # reference .pth files carry no tokenizer; their special ids are bert-base-uncased's + 2
        tok = _bert_tokenizer()
        model.cfg = model.cfg.replace(
            **{
                "text.pad_id": tok.pad_id,
                "text.cls_id": tok.cls_id,
                "text.sep_id": tok.sep_id,
                "text.dec_id": tok.dec_id,
                "text.enc_id": tok.enc_id,
            }
        )
    return Blip(model, tok, device=device, dtype=dtype, report=report)


def _bert_tokenizer() -> Tokenizer:
    """bert-base-uncased's vocabulary (what the reference checkpoints use): from the Hub cache, or downloaded."""
    from blip.tokenizer import Tokenizer

    hint = "pass --tokenizer PATH (tokenizer=PATH in Python), a vocab.txt or tokenizer.json"
    try:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise BlipError(f"this checkpoint has no tokenizer and huggingface_hub is not installed; {hint}") from None
    cached = try_to_load_from_cache(BERT_VOCAB_REPO, "vocab.txt")
    if isinstance(cached, str):
        return Tokenizer.from_vocab(cached)
    # The Hub client retries a dead network for about 30 s; find out at once instead.
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise BlipError(
            f"this checkpoint has no tokenizer, {BERT_VOCAB_REPO}'s vocab.txt is not in the Hugging "
            f"Face cache and the Hub cannot be reached; {hint}"
        )
    try:
        return Tokenizer.from_vocab(hf_hub_download(BERT_VOCAB_REPO, "vocab.txt"))
    except Exception as e:  # noqa: BLE001 - any download failure is one message for the user
        raise BlipError(
            f"this checkpoint has no tokenizer and {BERT_VOCAB_REPO}'s vocab.txt could not be "
            f"fetched ({type(e).__name__}); {hint}"
        ) from None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the URL's host opens (always assumed through a configured proxy)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
        ).close()
        return True
    except OSError:
        return False
