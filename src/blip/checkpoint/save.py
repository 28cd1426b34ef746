"""Writing a model in a checkpoint format: the format's adapter gives the tensors' names and the config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from blip.checkpoint.adapters import OWN_FORMAT, adapter_named
from blip.checkpoint.files import save_tensors
from blip.model.blip import BlipModel
from blip.tokenizer import Tokenizer


def export(
    model: BlipModel, tokenizer: Tokenizer | None, folder: str | Path, fmt: str, task: str | None = None
) -> dict[str, Any]:
    """Write a folder of format `fmt` (config.json, model.safetensors, the tokenizer); returns its config.json."""
    adapter = adapter_named(fmt)
    sd, meta = adapter.from_ours(model.state_dict(), model.cfg, task)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(meta, indent=2))
    save_tensors(sd, folder / "model.safetensors")
    if tokenizer is not None:
        tokenizer.save(folder)
        for name, content in adapter.tokenizer_files(model.cfg).items():
            (folder / name).write_text(json.dumps(content, indent=2))
    return meta


def save_pretrained(model: BlipModel, tokenizer: Tokenizer | None, folder: str | Path) -> None:
    """Write the project's own format: config.json, model.safetensors and the tokenizer."""
    export(model, tokenizer, folder, OWN_FORMAT)


def export_transformers(
    model: BlipModel, tokenizer: Tokenizer | None, folder: str | Path, task: str | None = None
) -> str:
    """Write a folder transformers' BLIP classes load; returns the architecture name written."""
    return export(model, tokenizer, folder, "transformers", task)["architectures"][0]
