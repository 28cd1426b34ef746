"""CapFilt: caption every web image with the captioner (nucleus sampling), keep the web and synthetic texts the
filter's ITM head judges matching, and write the bootstrapped dataset with a provenance record for every text.

Work is cut into units (a chunk of a JSON list, or one tar shard), units are dealt to torchrun ranks, and each
finished unit is written at once, atomically; a killed run skips finished units when restarted. Sampling is
seeded per unit, so an interrupted and resumed run writes exactly what an uninterrupted one writes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from blip.api import Blip
from blip.data.readers import read_pretrain_json, read_table
from blip.data.robust import SkipCounter
from blip.data.text import pre_caption
from blip.data.webdata import expand_shards, truncated_tar
from blip.errors import BlipError, ImageError
from blip.images import load_image
from blip.training.distributed import is_distributed, rank, world_size

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class CapFiltConfig:
    """What to bootstrap and how (defaults: the paper's nucleus sampling and the maintainers' 0.5 threshold)."""

    out: str
    web: list[str]  # JSON lists / CSV / JSONL of {image, caption}, or tar shards (img2dataset layout)
    image_root: str = ""
    human: list[str] = field(default_factory=list)  # clean annotated pairs, copied into the result as they are
    captions_per_image: int = 1
    top_p: float = 0.9
    repetition_penalty: float = 1.1
    max_length: int = 30
    min_length: int = 5
    prompt: str = "a picture of "
    threshold: float = 0.5
    max_words: int = 30
    unit_size: int = 512
    batch_size: int = 32
    seed: int = 0
    shard_size: int = 10000
    progress: bool = True


@dataclass
class Item:
    """One web pair: where the image is (path, or bytes from a shard), its text, and a stable name."""

    name: str
    text: str
    image: str | bytes


def _units(cfg: CapFiltConfig, counter: SkipCounter) -> Iterator[tuple[str, list[Item] | str]]:
    """(unit name, items) for JSON/table sources in chunks; (unit name, shard path) for each tar shard."""
    for source in cfg.web:
        path = Path(source)
        if path.suffix == ".tar" or path.is_dir() or any(c in source for c in "*{"):
            for shard in expand_shards(source):
                yield f"shard-{Path(shard).stem}", shard
            continue
        reader = read_pretrain_json if path.suffix == ".json" else read_table
        records = reader(source, image_root=cfg.image_root, counter=counter)
        items = [Item(r.image if isinstance(r.image, str) else str(r.image), r.texts[0], r.image)
                 for r in records]
        for start in range(0, len(items), cfg.unit_size):
            yield f"{path.stem}-{start // cfg.unit_size:06d}", items[start : start + cfg.unit_size]


def _shard_items(shard: str) -> tuple[list[Item], list[tuple[str, str]]]:
    """The (image, text) samples of a tar shard, and the bad ones as (name, reason)."""
    bad: list[tuple[str, str]] = []
    reason = truncated_tar(shard)
    if reason:
        bad.append((shard, "bad_shard"))  # samples before the cut are still used
    groups: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.isfile():
                    key, _, ext = member.name.partition(".")
                    groups.setdefault(key, {})[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError):
        bad.append((shard, "bad_shard"))
    items = []
    for key, files in groups.items():
        image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
        try:
            text = files["txt"].decode("utf-8") if "txt" in files else json.loads(files.get("json", b"{}"))["caption"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            text = None
        if image is None or not text:
            bad.append((f"{shard}:{key}", "incomplete_sample"))
            continue
        items.append(Item(f"{Path(shard).name}:{key}", text, image))
    return items, bad


@torch.no_grad()
def _process_unit(cfg: CapFiltConfig, captioner: Blip, filt: Blip, unit: str, items: list[Item],
                  bad: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Provenance records of one unit: every web and synthetic text with its ITM score and verdict."""
    images, kept_items, records = [], [], []
    for name, reason in bad:
        records.append({"image": name, "skipped": reason})
    for item in items:
        try:
            images.append(load_image(item.image))
            kept_items.append(item)
        except ImageError as e:
            records.append({"image": item.name, "skipped": e.reason})
    if not images:
        return records
    generator = torch.Generator(device=captioner.device).manual_seed(cfg.seed * 1_000_003 + _stable(unit))
    captions = captioner.caption(images, prompt=cfg.prompt, strategy="nucleus", top_p=cfg.top_p,
                                 repetition_penalty=cfg.repetition_penalty, max_length=cfg.max_length,
                                 min_length=cfg.min_length, num_captions=cfg.captions_per_image,
                                 batch_size=cfg.batch_size, generator=generator)
    k = cfg.captions_per_image
    texts, sources, owners = [], [], []
    for i, item in enumerate(kept_items):
        texts.append(pre_caption(item.text, cfg.max_words))
        sources.append("web")
        owners.append(i)
        for c in captions[i * k : (i + 1) * k]:
            texts.append(pre_caption(c.text, cfg.max_words))
            sources.append("synthetic")
            owners.append(i)
    scores = filt.match([images[o] for o in owners], texts, batch_size=cfg.batch_size)
    for text, source, owner, score in zip(texts, sources, owners, scores):
        item = kept_items[owner]
        record = {"image": item.name, "text": text, "source": source, "itm": round(score["itm"], 6),
                  "kept": bool(text) and score["itm"] >= cfg.threshold}
        if isinstance(item.image, str):
            record["path"] = item.image
        records.append(record)
    return records


def _stable(name: str) -> int:
    """A process-independent integer of a unit name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_capfilt(cfg: CapFiltConfig, captioner: Blip, filt: Blip) -> dict[str, Any]:
    """Bootstrap the web data; returns the summary (also written to OUT/summary.json by rank 0)."""
    if not filt.model.has("itm"):
        raise BlipError("the filter needs an ITM head (a retrieval-finetuned or pretrained checkpoint)")
    out = Path(cfg.out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    counter = SkipCounter()
    units = list(_units(cfg, counter))
    mine = [u for i, u in enumerate(units) if i % world_size() == rank()]
    todo = [u for u in mine if not (parts / f"{u[0]}.jsonl").exists()]
    start, done_images = time.perf_counter(), 0
    bar = None
    if cfg.progress and rank() == 0 and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="unit", file=sys.stderr)
    for name, payload in todo:
        items, bad = _shard_items(payload) if isinstance(payload, str) else (payload, [])
        records = _process_unit(cfg, captioner, filt, name, items, bad)
        _write_atomic(parts / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        done_images += len(items)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(img_s=f"{done_images / (time.perf_counter() - start):.1f}")
    if bar is not None:
        bar.close()
    if is_distributed():
        torch.distributed.barrier()
    if rank() != 0:
        return {}
    return _merge(cfg, [u[0] for u in units], counter, done_images, time.perf_counter() - start)


def _merge(cfg: CapFiltConfig, unit_names: list[str], counter: SkipCounter, images: int,
           seconds: float) -> dict[str, Any]:
    """Join the units in order into provenance.jsonl, bootstrapped.json and webdataset shards; summarise."""
    out = Path(cfg.out)
    provenance = []
    for name in unit_names:
        provenance += [json.loads(line) for line in (out / "parts" / f"{name}.jsonl").read_text().splitlines()]
    human = []
    for source in cfg.human:
        reader = read_pretrain_json if source.endswith(".json") else read_table
        human += [{"image": str(r.image), "caption": t} for r in reader(source, image_root=cfg.image_root)
                  for t in r.texts]
    kept = [r for r in provenance if r.get("kept")]
    boot = human + [{"image": r.get("path", r["image"]), "caption": r["text"]} for r in kept]
    _write_atomic(out / "provenance.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in provenance))
    _write_atomic(out / "bootstrapped.json", json.dumps(boot, ensure_ascii=False))
    _write_shards(out / "shards", boot, cfg.shard_size)
    for r in provenance:
        if "skipped" in r:
            counter.skip(r["skipped"], r["image"])
    summary: dict[str, Any] = {"human_pairs": len(human), "texts_out": len(boot)}
    for source in ("web", "synthetic"):
        rows = [r for r in provenance if r.get("source") == source]
        summary[f"{source}_total"] = len(rows)
        summary[f"{source}_kept"] = sum(r["kept"] for r in rows)
    summary["texts_in"] = len(human) + summary["web_total"]
    summary["skipped"] = counter.as_dict()["skipped"]
    if images:
        summary["images_per_second_this_run"] = round(images / seconds, 2)
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _write_shards(folder: Path, pairs: list[dict[str, str]], shard_size: int) -> None:
    """The bootstrapped pairs as img2dataset-style tar shards (image, .txt, .json), for webdataset training."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tar"):
        old.unlink()
    for s in range(0, len(pairs), shard_size):
        tmp = folder / f"{s // shard_size:05d}.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for i, pair in enumerate(pairs[s : s + shard_size], start=s):
                image = Path(pair["image"])
                files = {"txt": pair["caption"].encode(), "json": json.dumps(pair).encode()}
                if image.is_file():
                    files[image.suffix.lstrip(".").lower() or "jpg"] = image.read_bytes()
                for ext, data in files.items():
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, folder / f"{s // shard_size:05d}.tar")
