"""CapFilt: caption every web image with the captioner (nucleus sampling), keep the web and synthetic texts the
filter's ITM head judges matching, and write the bootstrapped dataset with a provenance record for every text.

It runs on the streaming engine (blip.inference.engine): work is cut into units (a chunk of a JSON list or table,
or one tar shard), units are dealt to torchrun ranks, images are decoded in worker processes, and each finished
unit is written at once, atomically; a killed run skips finished units when restarted. Sampling is seeded per
batch of a unit (batches are cut at fixed positions), so an interrupted and resumed run, or one with other worker
or rank counts, writes exactly what an uninterrupted one writes.

Shard in, shard out: a tar shard's kept samples are written to OUT/shards/SHARD.tar with their image bytes, in the
input's order. File inputs' kept pairs (with usable image paths) and the human pairs go to bootstrapped.json and
OUT/shards/bootstrapped-*.tar.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from blip.api import Blip
from blip.data.readers import read_pretrain_json, read_table
from blip.data.robust import SkipCounter
from blip.data.text import pre_caption
from blip.distributed import rank
from blip.errors import BlipError
from blip.inference.engine import (
    Batch,
    Entry,
    Progress,
    Unit,
    UnitStore,
    UnitTracker,
    is_shard_source,
    my_units,
    stream_batches,
    wait_for_ranks,
    write_atomic,
)
from blip.recipes import CapFiltConfig


def _root(cfg: CapFiltConfig, annotation: str) -> str:
    """The folder an annotation file's image paths are relative to (as `blip data check` resolves them)."""
    return cfg.image_root if cfg.image_root is not None else str(Path(annotation).parent)


def _units(cfg: CapFiltConfig, counter: SkipCounter) -> Iterator[Unit]:
    """Chunks of unit_size entries for JSON/table sources; one unit per tar shard."""
    for source in cfg.web:
        path = Path(source)
        if is_shard_source(source) or path.is_dir():
            from blip.data.webdata import expand_shards

            for shard in expand_shards(source):
                yield Unit(f"shard-{Path(shard).stem}", shard=shard)
            continue
        reader = read_pretrain_json if path.suffix == ".json" else read_table
        records = reader(source, image_root=_root(cfg, source), counter=counter)
        entries = [Entry(str(r.image), str(r.image), {"text": r.texts[0]}) for r in records]
        for start in range(0, len(entries), cfg.unit_size):
            yield Unit(f"{path.stem}-{start // cfg.unit_size:06d}", entries=entries[start : start + cfg.unit_size])


def _web_text(meta: dict[str, Any]) -> str | None:
    """The web text of a sample: a list's caption, or a shard sample's .txt (else its .json caption)."""
    if "text" in meta:
        return meta["text"]
    if "txt" in meta:
        return meta["txt"]
    caption = meta.get("json", {}).get("caption") if isinstance(meta.get("json"), dict) else None
    return caption if isinstance(caption, str) else None


class _Bootstrapper:
    """Runs captioner and filter on engine batches; streams a shard unit's kept samples into its output shard."""

    def __init__(self, cfg: CapFiltConfig, captioner: Blip, filt: Blip):
        self.cfg, self.captioner, self.filt = cfg, captioner, filt
        self.shared = captioner.cfg.vision.image_size == filt.cfg.vision.image_size
        self.transforms = [captioner.transform] if self.shared else [captioner.transform, filt.transform]
        self.open_tars: dict[str, tuple[tarfile.TarFile, Path, Path]] = {}

    @torch.no_grad()
    def rows(self, batch: Batch, unit: Unit) -> list[tuple[int, list[dict[str, Any]]]]:
        """(position, provenance records) of every sample of the batch: each text with its ITM score and verdict."""
        cfg = self.cfg
        out: list[tuple[int, list[dict[str, Any]]]] = [
            (p, [{"image": k, "skipped": r}]) for p, k, r, _ in batch.skipped
        ]
        items = []
        for i, (key, meta) in enumerate(zip(batch.keys, batch.meta)):
            text = _web_text(meta)
            if text:
                items.append((i, key, meta, text))
            else:
                out.append((batch.positions[i], [{"image": key, "skipped": "incomplete_sample"}]))
        if not items:
            self._stream_shard(batch, unit, [])
            return out
        cap_px = batch.pixels if self.shared else batch.pixels[0]
        filt_px = cap_px if self.shared else batch.pixels[1]
        generator = torch.Generator(device=self.captioner.device).manual_seed(
            cfg.seed * 1_000_003 + _stable(f"{batch.unit}/{batch.part}")
        )
        captions = self.captioner.caption(
            [cap_px[i] for i, *_ in items],
            prompt=cfg.prompt,
            strategy=cfg.strategy,
            num_beams=cfg.num_beams,
            top_p=cfg.top_p,
            repetition_penalty=cfg.repetition_penalty,
            max_length=cfg.max_length,
            min_length=cfg.min_length,
            num_captions=cfg.captions_per_image,
            batch_size=len(items),
            generator=generator,
        )
        k = cfg.captions_per_image
        texts, sources, owners = [], [], []
        for n, (_, _, _, text) in enumerate(items):
            for t, source in [(text, "web")] + [(c.text, "synthetic") for c in captions[n * k : (n + 1) * k]]:
                texts.append(pre_caption(t, cfg.max_words))
                sources.append(source)
                owners.append(n)
        scores = self.filt.match([filt_px[items[o][0]] for o in owners], texts, batch_size=cfg.batch_size)
        per_item: list[list[dict[str, Any]]] = [[] for _ in items]
        for text, source, owner, score in zip(texts, sources, owners, scores):
            _, key, meta, _ = items[owner]
            record = {
                "image": key,
                "text": text,
                "source": source,
                "itm": round(score["itm"], 6),
                "kept": bool(text) and score["itm"] >= cfg.threshold,
            }
            if unit.entries is not None:
                record["path"] = key
            per_item[owner].append(record)
        self._stream_shard(batch, unit, [(items[n][2], recs) for n, recs in enumerate(per_item)])
        out += [(batch.positions[i], recs) for (i, *_), recs in zip(items, per_item)]
        return out

    def _stream_shard(self, batch: Batch, unit: Unit, samples: list[tuple[dict[str, Any], list[dict]]]) -> None:
        """Append a shard unit's kept samples (image bytes + text + provenance) to its output shard as they come."""
        if unit.shard is None:
            return
        if batch.unit not in self.open_tars:
            folder = Path(self.cfg.out) / "shards"
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"{Path(unit.shard).stem}.tar"
            tmp = folder / f".{final.name}.tmp"
            tar = tarfile.open(tmp, "w")  # noqa: SIM115 - stays open across the shard's batches
            self.open_tars[batch.unit] = (tar, tmp, final)
        tar = self.open_tars[batch.unit][0]
        for meta, records in samples:
            for j, r in enumerate(records):
                if not r["kept"]:
                    continue
                key = f"{r['image'].split(':', 1)[1]}_{j}"  # one sample per kept text; j: 0 web, 1... synthetic
                provenance = {"shard": Path(unit.shard).name, **r}
                _add(tar, f"{key}.{meta['__ext__']}", meta["__image__"])
                _add(tar, f"{key}.txt", r["text"].encode())
                _add(tar, f"{key}.json", json.dumps({"caption": r["text"], **provenance}, ensure_ascii=False).encode())
        if batch.last:
            tar, tmp, final = self.open_tars.pop(batch.unit)
            tar.close()
            tmp.replace(final)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def _stable(name: str) -> int:
    """A process-independent integer of a unit name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def run_capfilt(cfg: CapFiltConfig, captioner: Blip, filt: Blip) -> dict[str, Any]:
    """Bootstrap the web data; returns the summary (also written to OUT/summary.json by rank 0)."""
    if not cfg.web:
        raise BlipError("CapFilt needs web data: give one or more web sources")
    if not filt.model.has("itm"):
        raise BlipError("the filter needs an ITM head (a retrieval-finetuned or pretrained checkpoint)")
    out = Path(cfg.out)
    store = UnitStore(out / "parts")
    counter = SkipCounter()
    units = list(_units(cfg, counter))
    todo = [u for u in my_units(units) if not store.done(u.name)]
    by_name = {u.name: u for u in todo}
    boot = _Bootstrapper(cfg, captioner, filt)
    progress = Progress(
        sum(u.size or 0 for u in todo) if all(u.size is not None for u in todo) else None, enabled=cfg.progress
    )
    tracker = UnitTracker()
    start = time.perf_counter()
    for batch in stream_batches(todo, boot.transforms, cfg.batch_size, cfg.workers, keep_bytes=True):
        rows = boot.rows(batch, by_name[batch.unit])
        progress.update(len(batch.keys))
        for name, groups in tracker.add(batch, rows):
            store.write(name, [r for group in groups for r in group])
    progress.close()
    wait_for_ranks()
    if rank() != 0:
        return {}
    return _merge(cfg, [u.name for u in units], counter, progress.done, time.perf_counter() - start)


def _merge(
    cfg: CapFiltConfig, unit_names: list[str], counter: SkipCounter, images: int, seconds: float
) -> dict[str, Any]:
    """Join the units in order into provenance.jsonl, bootstrapped.json and webdataset shards; summarise."""
    out = Path(cfg.out)
    provenance = []
    for name in unit_names:
        provenance += [json.loads(line) for line in (out / "parts" / f"{name}.jsonl").read_text().splitlines()]
    human = []
    for source in cfg.human:
        reader = read_pretrain_json if source.endswith(".json") else read_table
        human += [
            {"image": str(r.image), "caption": t}
            for r in reader(source, image_root=_root(cfg, source))
            for t in r.texts
        ]
    kept = [r for r in provenance if r.get("kept")]
    # Pairs of shard inputs live in their output shards (OUT/shards/SHARD.tar): they have no image path.
    boot = human + [{"image": r["path"], "caption": r["text"]} for r in kept if "path" in r]
    write_atomic(out / "provenance.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in provenance))
    write_atomic(out / "bootstrapped.json", json.dumps(boot, ensure_ascii=False))
    _write_shards(out / "shards", boot, cfg.shard_size)
    for r in provenance:
        if "skipped" in r:
            counter.skip(r["skipped"], r["image"])
    summary: dict[str, Any] = {"human_pairs": len(human), "texts_out": len(human) + len(kept)}
    for source in ("web", "synthetic"):
        rows = [r for r in provenance if r.get("source") == source]
        summary[f"{source}_total"] = len(rows)
        summary[f"{source}_kept"] = sum(r["kept"] for r in rows)
    summary["texts_in"] = len(human) + summary["web_total"]
    summary["skipped"] = counter.as_dict()["skipped"]
    if images:
        summary["images_per_second_this_run"] = round(images / seconds, 2)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _write_shards(folder: Path, pairs: list[dict[str, str]], shard_size: int) -> None:
    """The bootstrapped pairs as img2dataset-style tar shards (image, .txt, .json), for webdataset training."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("bootstrapped-*.tar"):
        old.unlink()
    for s in range(0, len(pairs), shard_size):
        tmp = folder / f".bootstrapped-{s // shard_size:05d}.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for i, pair in enumerate(pairs[s : s + shard_size], start=s):
                image = Path(pair["image"])
                files = {"txt": pair["caption"].encode(), "json": json.dumps(pair).encode()}
                if image.is_file():
                    files[image.suffix.lstrip(".").lower() or "jpg"] = image.read_bytes()
                for ext, data in files.items():
                    _add(tar, f"{i:09d}.{ext}", data)
        tmp.replace(folder / f"bootstrapped-{s // shard_size:05d}.tar")
