"""Validate a dataset: read every annotation with the real readers, decode every image / video, count by reason."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from blip.data.readers import (
    iter_jsonl,
    load_json,
    read_karpathy_eval,
    read_karpathy_train,
    read_msrvtt,
    read_nlvr2,
    read_pretrain_json,
    read_table,
    read_video_qa,
    read_vqa,
    read_vqa_official,
)
from blip.data.robust import SKIPPABLE, DataError, Skip, SkipCounter
from blip.data.video import load_frames
from blip.data.webdata import WebDatasetPairs
from blip.images import load_image

ANNOTATION_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")


@dataclass
class FileReport:
    """What checking one annotation file or shard set found."""

    path: str
    kind: str
    records: int = 0
    media: int = 0
    counter: SkipCounter = field(default_factory=SkipCounter)

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"{self.path} [{self.kind}]: {self.records} records, {self.media} files decoded; {self.counter.summary()}"
        )


def detect_kind(path: Path) -> str:
    """The format of an annotation file, from its suffix and first entry; 'unknown' if it is not one we read."""
    suffix = path.suffix.lower()
    if suffix == ".tar":
        return "webdataset"
    if suffix in (".csv", ".tsv"):
        return "table"
    if suffix == ".jsonl":
        first = next(iter_jsonl(path), {})
        return "msrvtt" if "clip_name" in first else "nlvr2" if "identifier" in first else "table"
    if suffix != ".json":
        return "unknown"
    try:
        data = load_json(path)
    except DataError:
        return "unknown"
    if isinstance(data, dict):
        return "vqa_official" if "questions" in data else "msrvtt" if "sentences" in data else "unknown"
    if data == []:
        return "empty"
    first = next((e for e in data if isinstance(e, dict)), {}) if isinstance(data, list) else {}
    if "images" in first and "sentence" in first:
        return "nlvr2"
    if "question" in first:
        return "video_qa" if "video" in first or "video_id" in first else "vqa"
    if "image" in first and isinstance(first.get("caption"), list):
        return "karpathy_eval"
    if "image" in first and "image_id" in first:
        return "karpathy_train"
    if "image" in first:
        return "pretrain"
    return "unknown"


def _decode_one(job: tuple[str, str]) -> tuple[str, str | None, str]:
    """Decode one image or video; (path, reason or None, message). Runs in a worker process."""
    kind, path = job
    try:
        if kind == "video":
            load_frames(path, 8)
        else:
            load_image(path)
    except SKIPPABLE as e:
        return path, getattr(e, "reason", "corrupt"), str(e)
    return path, None, ""


def _decode_all(jobs: list[tuple[str, str]], workers: int) -> Iterable[tuple[str, str | None, str]]:
    """Decode files, in parallel when worth it."""
    if workers <= 1 or len(jobs) < 32:
        return map(_decode_one, jobs)
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(pool.imap_unordered(_decode_one, jobs, chunksize=32))


def _records_media(kind: str, path: Path, root: str, counter: SkipCounter) -> tuple[int, list[tuple[str, str]]]:
    """Read an annotation file with its reader: the number of records and the (kind, path) of files to decode."""
    if kind == "empty":
        return 0, []
    if kind in ("pretrain", "karpathy_train", "table"):
        reader: Callable[..., Any] = {
            "pretrain": read_pretrain_json,
            "karpathy_train": read_karpathy_train,
            "table": read_table,
        }[kind]
        recs = reader(path, root, counter)
        return len(recs), [("image", r.image) for r in recs]
    if kind == "karpathy_eval":
        rset = read_karpathy_eval(path, root, counter)
        return len(rset.images), [("image", p) for p in rset.images]
    if kind == "vqa":
        recs = read_vqa(path, root, counter)
        return len(recs), [("image", r.image) for r in recs]
    if kind == "vqa_official":
        recs = read_vqa_official(path, None, root, counter)
        return len(recs), [("image", r.image) for r in recs]
    if kind == "nlvr2":
        recs = read_nlvr2(path, root, counter)
        return len(recs), [("image", p) for r in recs for p in r.images]
    if kind == "video_qa":
        recs = read_video_qa(path, root, counter)
        return len(recs), [("video", r.image) for r in recs]
    if kind == "msrvtt":
        recs = read_msrvtt(path, root, counter=counter)
        return len(recs), [("video", r.video) for r in recs]
    raise DataError("bad_json", f"{path}: not an annotation format blip reads")


def check_annotation(path: Path, root: str, workers: int = 1, limit: int | None = None) -> FileReport:
    """Check one annotation file: its entries with the reader, then each distinct image or video it names."""
    kind = detect_kind(path)
    report = FileReport(str(path), kind)
    report.records, media = _records_media(kind, path, root, report.counter)
    jobs = list(dict.fromkeys(media))[:limit]  # an image named by five captions is decoded once
    for _, reason, message in _decode_all(jobs, workers):
        if reason is None:
            report.counter.ok()
        else:
            report.counter.skip(reason, message)
    report.media = len(jobs)
    return report


def check_shards(urls: str | list[str], limit: int | None = None) -> FileReport:
    """Stream tar shards once, decoding every sample."""
    report = FileReport(str(urls), "webdataset")
    dataset = WebDatasetPairs(urls, transform=lambda image: torch.empty(0), shuffle_buffer=0)
    for item in dataset:
        if isinstance(item, Skip):
            report.counter.skip(item.reason, item.message)
        else:
            report.counter.ok()
            report.records += 1
        if limit is not None and report.records >= limit:
            break
    report.media = report.counter.used + report.counter.total_skipped
    return report


def check_path(
    path: str | os.PathLike, image_root: str | None = None, workers: int = 1, limit: int | None = None
) -> list[FileReport]:
    """Check a dataset: a synthetic-world folder (manifest.json), a folder of shards, a shard, or an annotation file."""
    p = Path(path)
    if not p.exists():
        raise DataError("missing", f"{p}: no such file or directory")
    if p.is_dir():
        if (p / "manifest.json").exists():
            manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
            names = [
                n
                for n in manifest.get("files", {})
                if Path(n).suffix in ANNOTATION_SUFFIXES
                and n not in ("scenes.json", "video_scenes.json", "web_noise_labels.json", "vqa/answer_list.json")
            ]
            root = image_root or str(p)
            video_root = str(p / manifest.get("video_root", ""))
            return [
                check_annotation(p / n, video_root if n.startswith("msrvtt/") else root, workers, limit) for n in names
            ]
        shards = sorted(str(s) for s in p.glob("*.tar"))
        if shards:
            return [check_shards(shards, limit)]
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in ANNOTATION_SUFFIXES)
        if not files:
            raise DataError("missing", f"{p}: no manifest.json, tar shards or annotation files")
        return [check_annotation(f, image_root or str(p), workers, limit) for f in files]
    if p.suffix.lower() == ".tar":
        return [check_shards([str(p)], limit)]
    return [check_annotation(p, image_root if image_root is not None else str(p.parent), workers, limit)]
