"""Checkpoint files: where a source lives (path, URL, Hub id) and reading and writing its tensors.

Nothing is unpickled beyond tensors: safetensors, or torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from blip.errors import CheckpointError

WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")


def resolve(source: str | Path) -> Path:
    """A local path, or a download of a URL or a Hugging Face Hub id with a clear error when offline."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.startswith(("http://", "https://")):
        target = Path(torch.hub.get_dir()) / "blip" / text.rsplit("/", 1)[-1]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(text, str(target), progress=True)
            except Exception as e:  # noqa: BLE001 - any network failure is one message for the user
                raise CheckpointError(f"{text}: download failed ({type(e).__name__}: {e})") from None
        return target
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise CheckpointError(f"{text}: no such path; install huggingface_hub to download Hub models") from None
        try:
            return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{text}: no such path, and downloading it from the Hugging Face Hub failed "
                f"({type(e).__name__}); download it where there is internet and pass the folder"
            ) from None
    raise CheckpointError(f"{source}: no such file or folder")


def weights_file(folder: Path) -> Path:
    """The tensors file of a checkpoint folder."""
    weights = next((folder / n for n in WEIGHTS_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: folder has no model.safetensors or pytorch_model.bin")
    return weights


def read_source(path: Path) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """A folder's config.json and tensors, or a single file's tensors with no config (None)."""
    if not path.is_dir():
        return None, read_state_dict(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: folder has no config.json")
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not a JSON file ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg_file}: not a JSON object")
    return meta, read_state_dict(weights_file(path))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt/.bin (weights only, reference {'model': ...} unwrapped) or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            sd: Any = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - weights_only refuses pickled code with an UnpicklingError subclass
        raise CheckpointError(f"{path}: not a tensors-only checkpoint ({type(e).__name__}: {e})") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if sd and all(k.startswith("model.") for k in sd):  # a fine-tuning run's checkpoint: its loss module wraps it
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    return sd


def _dedupe(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tensors safetensors can write: the LM head's tied aliases are dropped (loading re-ties them), any other
    shared tensor (the pretraining encoder/decoder sharing) is stored under each name."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            if k.endswith(("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")):
                continue
            v = v.clone()
        seen.add(key)
        out[k] = v.detach().contiguous()
    return out


def save_tensors(sd: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, with the permissions every other output gets (it writes 0600 whatever the umask)."""
    save_file(_dedupe(sd), str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
