"""Caption a collection on the streaming engine: one record per usable image, with its confidences.

Beam search is deterministic per image. Nucleus sampling draws each image's captions from a generator seeded by
(seed, image key), so a record never depends on the batch it was in, the worker that decoded it or the rank that
ran it; that is why sampled images are generated one image (num_captions rows) at a time.
"""

from __future__ import annotations

import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from blip.api import Blip, Caption
from blip.data.robust import SkipCounter
from blip.defaults import PROMPT
from blip.distributed import rank
from blip.errors import BlipError
from blip.inference.engine import (
    Batch,
    Entry,
    Progress,
    Unit,
    UnitStore,
    UnitTracker,
    my_units,
    plan_units,
    stream_batches,
    wait_for_ranks,
)
from blip.inference.outputs import sidecar_path, table_format, write_sidecar, write_table


@dataclass
class CaptionJob:
    """What to caption, how, and where the records go (defaults: the reference's beam 3, max 20, min 5)."""

    sources: list[str]
    out: str | None = None  # JSONL / CSV / TSV / Parquet file; None prints records
    sidecar: str | None = None  # caption-file extension written next to each image (".txt")
    prefix: str = ""
    suffix: str = ""
    skip_existing: bool = False
    image_root: str | None = None
    prompt: str = PROMPT
    sample: bool = False
    beams: int = 3
    top_p: float = 0.9
    top_k: int = 50  # the reference's sampler keeps the 50 likeliest tokens before top-p; 0 = off
    max_length: int = 20
    min_length: int = 5
    repetition_penalty: float | None = None
    num_captions: int = 1
    rerank: str | None = None  # "itm" or "logprob" (mean token log-probability), for num_captions > 1
    seed: int = 0
    batch_size: int = 8
    workers: int = 0
    unit_size: int = 1000
    progress_every: float = 30.0

    def validate(self) -> None:
        """Refuse impossible settings with one line each (before any model is loaded)."""
        checks = [
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.beams >= 1, "--beams must be at least 1"),
            (self.max_length >= 1, "--max-length must be at least 1"),
            (self.min_length >= 0, "--min-length must not be negative"),
            (self.min_length <= self.max_length, "--min-length must not exceed --max-length"),
            (self.num_captions >= 1, "--num-captions must be at least 1"),
            (
                self.sample or self.num_captions == 1,
                "--num-captions above 1 needs --sample (beam search gives one caption per image)",
            ),
            (0.0 < self.top_p <= 1.0, "--top-p must be in (0, 1]"),
            (self.top_k >= 0, "--top-k must be 0 (off) or more"),
            (self.workers >= 0, "--workers must be 0 or more"),
            (self.unit_size >= 1, "--unit-size must be at least 1"),
            (self.repetition_penalty is None or self.repetition_penalty > 0, "--repetition-penalty must be positive"),
            (not self.skip_existing or self.sidecar is not None, "--skip-existing needs --sidecar"),
        ]
        for ok, message in checks:
            if not ok:
                raise BlipError(message)
        if self.out is not None:
            table_format(self.out)


def _image_seed(seed: int, key: str) -> int:
    """A process-independent seed of one image (Python's hash() is salted per process)."""
    return seed * 1_000_003 + zlib.crc32(key.encode())


class Captioner:
    """Turns engine batches into records with one captioning model and, optionally, an ITM filter model."""

    def __init__(self, job: CaptionJob, model: Blip, filt: Blip | None = None):
        if job.rerank == "itm" and not model.model.has("itm") and filt is None:
            raise BlipError("--rerank itm needs a model with an ITM head; give --filter with a retrieval model")
        if filt is not None and not filt.model.has("itm"):
            raise BlipError("--filter needs a model with an ITM head (a retrieval or pretrained checkpoint)")
        self.job, self.model, self.filt = job, model, filt
        self.transforms = [model.transform]
        if filt is not None:
            self.transforms.append(filt.transform)

    def _caption(self, pixels: list[torch.Tensor], keys: list[str]) -> list[list[Caption]]:
        job = self.job
        kw: dict[str, Any] = {
            "prompt": job.prompt,
            "max_length": job.max_length,
            "min_length": job.min_length,
            "repetition_penalty": job.repetition_penalty,
        }
        if not job.sample:
            caps = self.model.caption(pixels, strategy="beam", num_beams=job.beams, batch_size=len(pixels), **kw)
            return [[c] for c in caps]
        out = []
        for pix, key in zip(pixels, keys):
            generator = torch.Generator(device=self.model.device).manual_seed(_image_seed(job.seed, key))
            out.append(
                self.model.caption(
                    [pix],
                    strategy="nucleus",
                    top_p=job.top_p,
                    top_k=job.top_k,
                    num_captions=job.num_captions,
                    generator=generator,
                    **kw,
                )
            )
        return out

    def records(self, batch: Batch) -> list[tuple[int, dict[str, Any]]]:
        """(position, record) for each image of the batch, and (position, skip note) for each bad one."""
        rows: list[tuple[int, dict[str, Any]]] = [
            (p, {"image": k, "skipped": reason}) for p, k, reason, _ in batch.skipped
        ]
        if batch.pixels is None:
            return rows
        own = batch.pixels[0] if self.filt is not None else batch.pixels
        per_image = self._caption(list(own), batch.keys)
        if self.filt is not None:
            filt_pixels = [px for px, caps in zip(batch.pixels[1], per_image) for _ in caps]
            scores = self.filt.match(
                filt_pixels, [c.text for caps in per_image for c in caps], batch_size=max(16, len(filt_pixels))
            )
            it = iter(scores)
            for caps in per_image:
                for c in caps:
                    c.itm = next(it)["itm"]
        for pos, key, caps in zip(batch.positions, batch.keys, per_image):
            rows.append((pos, self._record(key, caps)))
        return rows

    def _record(self, key: str, caps: list[Caption]) -> dict[str, Any]:
        best = caps[0]
        if len(caps) > 1:
            if self.job.rerank == "itm":
                best = max(caps, key=lambda c: c.itm)
            else:
                best = max(caps, key=lambda c: c.mean_logprob)
        record: dict[str, Any] = {
            "image": key,
            "caption": best.text,
            "logprob": round(best.logprob, 4),
            "mean_logprob": round(best.mean_logprob, 4),
        }
        if best.itm is not None:
            record["itm"] = round(best.itm, 4)
        if len(caps) > 1:
            record["all_captions"] = [c.text for c in caps]
            record["all_mean_logprobs"] = [round(c.mean_logprob, 4) for c in caps]
            if best.itm is not None:
                record["all_itm"] = [round(c.itm, 4) for c in caps]
        return record


@dataclass
class CaptionResult:
    """What a run did: records written (or printed), skips by reason, images left alone by --skip-existing."""

    written: int
    skipped: dict[str, int]
    existing: int
    inputs: int


def _drop_existing(units: list[Unit], job: CaptionJob) -> tuple[list[Unit], int]:
    """With --skip-existing: leave out the images that already have a caption file."""
    kept_units, existing = [], 0
    for unit in units:
        assert unit.entries is not None  # run_caption refuses shards with --sidecar
        entries: list[Entry] = [e for e in unit.entries if not sidecar_path(e.path, job.sidecar or "").exists()]
        existing += len(unit.entries) - len(entries)
        if entries:
            kept_units.append(Unit(unit.name, entries=entries))
    return kept_units, existing


def run_caption(
    job: CaptionJob, model: Blip, filt: Blip | None = None, emit: Callable[[dict[str, Any]], None] | None = None
) -> CaptionResult:
    """Caption every source image; records go to job.out (resumable), sidecars and/or `emit` (one call each)."""
    job.validate()
    captioner = Captioner(job, model, filt)
    counter = SkipCounter()
    units = plan_units(job.sources, job.unit_size, job.image_root, counter)
    existing = 0
    if job.sidecar is not None:
        if any(u.entries is None for u in units):
            raise BlipError("--sidecar writes caption files next to image files; shards have none (use --out)")
        if job.skip_existing:
            units, existing = _drop_existing(units, job)
    store = None
    if job.out is not None:
        settings = {
            k: v
            for k, v in asdict(job).items()
            if k not in ("out", "workers", "batch_size", "progress_every", "skip_existing")
        }
        store = UnitStore(f"{job.out}.parts", fingerprint={"units": [u.name for u in units], **settings})
    todo = [u for u in my_units(units) if store is None or not store.done(u.name)]
    known = sum(u.size or 0 for u in todo)
    progress = Progress(known if all(u.size is not None for u in todo) else None, every=job.progress_every)
    tracker, live = UnitTracker(), Counter()
    with torch.no_grad():
        for batch in stream_batches(todo, captioner.transforms, job.batch_size, job.workers):
            for _, _, reason, message in batch.skipped:
                print(f"blip: skipped {message}", file=sys.stderr)
                live[reason] += 1
            rows = captioner.records(batch)
            progress.update(len(batch.keys) + sum(p >= 0 for p, *_ in batch.skipped))
            for unit, records in tracker.add(batch, rows):
                _finish_unit(unit, records, job, store, emit)
    progress.close()
    wait_for_ranks()
    if store is None:  # nothing stored: this run's own counts
        skipped = counter.skipped + live
        return CaptionResult(
            progress.done - sum(live.values()), dict(skipped), existing, progress.done + counter.total_skipped
        )
    if rank() != 0:
        return CaptionResult(0, {}, existing, 0)
    # Counts over every unit, this run's and earlier runs', from the stored skip notes.
    skipped = Counter(counter.skipped)
    for unit in units:
        skipped.update(r["skipped"] for r in (store.read(unit.name) if store.done(unit.name) else []) if "skipped" in r)
    written = write_table(job.out, _usable(store, units))
    return CaptionResult(written, dict(skipped), existing, written + sum(skipped.values()))


def _usable(store: UnitStore, units: list[Unit]) -> Iterator[list[dict[str, Any]]]:
    """The stored records of every unit in plan order, skip notes left out."""
    for unit in units:
        if store.done(unit.name):
            yield [r for r in store.read(unit.name) if "skipped" not in r]


def _finish_unit(
    unit: str,
    records: list[dict[str, Any]],
    job: CaptionJob,
    store: UnitStore | None,
    emit: Callable[[dict[str, Any]], None] | None,
) -> None:
    """A complete unit: sidecars first, then the unit file (its existence marks the unit done), then printing."""
    good = [r for r in records if "skipped" not in r]
    if job.sidecar is not None:
        for r in good:
            write_sidecar(r["image"], job.sidecar, f"{job.prefix}{r['caption']}{job.suffix}")
    if store is not None:
        store.write(unit, records)
    if emit is not None:
        for r in good:
            emit(r)
