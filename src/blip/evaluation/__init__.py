"""Evaluation metrics: retrieval recall (`retrieval`), COCO caption scores (`captioning`), VQA accuracy (`vqa`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from blip.errors import BlipError


def _load_json(path: str | os.PathLike[str]) -> Any:
    # Shared by the result and annotation readers, so a bad file is always one clear BlipError line.
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise BlipError(f"cannot read {path}: {err.strerror}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BlipError(f"{path} is not valid JSON: {err}") from err


def _read_json_records(path: str | os.PathLike[str], keys: tuple[str, ...]) -> list[dict]:
    # A result file (captions or VQA answers) is a JSON list of flat objects with the given keys.
    records = _load_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in records):
        raise BlipError(f"{path} must hold a JSON list of objects with keys {', '.join(keys)}")
    return records
