"""The streaming inference engine: sources -> units -> decoded, transformed batches from worker processes.

Every dataset-scale command (`blip caption`, `blip capfilt`, `blip index`) runs the same way:

1. `plan_units(sources)` turns files, folders (recursive), list files (TXT of paths, CSV/TSV/JSONL/JSON with an
   image column) and webdataset shards (paths, brace patterns, URLs) into `Unit`s: a chunk of a list, or one shard.
   Only paths and shard names are held, never images.
2. `my_units(units)` deals them to torchrun ranks (unit i to rank i mod world); `UnitStore.done` drops the ones a
   previous run finished.
3. `stream_batches(units, transform)` decodes and transforms images in DataLoader workers and yields `Batch`es that
   never cross a unit boundary, with bounded prefetch; bad samples come back as `Batch.skipped`, never raised.
4. The caller turns each batch into records and hands them to a `UnitTracker`, which says when a unit is complete;
   `UnitStore.write` then writes the unit atomically, so a kill -9 loses at most the units in flight.

Batches of a list unit are cut at fixed positions (multiples of the batch size), so what a batch holds does not
depend on the number of workers or ranks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from blip.data.readers import IMAGE_COLUMNS, iter_jsonl, load_json
from blip.data.robust import SkipCounter
from blip.data.webdata import _webdataset, truncated_tar
from blip.distributed import is_distributed, rank, world_size
from blip.errors import BlipError, ImageError
from blip.images import MAX_PIXELS, load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson", ".json"}


@dataclass(frozen=True)
class Entry:
    """One image of a list: a stable key (the path as resolved), where to read it, and the list's other columns.

    A member of a local tar shard has the shard as `path` and its bytes at [offset, offset + size) (offset -1: a
    whole file).
    """

    key: str
    path: str
    meta: dict[str, Any] = field(default_factory=dict)
    offset: int = -1
    size: int = -1


@dataclass
class Unit:
    """A resumable piece of work: a chunk of listed images, or one tar shard (path or URL)."""

    name: str
    entries: list[Entry] | None = None
    shard: str | None = None

    @property
    def size(self) -> int | None:
        """Number of images, when known before reading (lists); None for shards."""
        return None if self.entries is None else len(self.entries)


@dataclass
class Batch:
    """Decoded images of one unit: `pixels` rows match `keys`, `meta` and `positions` (order inside the unit).

    `skipped` lists (position, key, reason, message) of the unit's bad samples met in this stretch; `last` marks
    the unit's final batch and `parts` how many batches the unit has (known on the last one, always for lists).
    With several transforms, `pixels` is a tuple of tensors, one per transform.
    """

    unit: str
    part: int
    parts: int | None
    keys: list[str]
    meta: list[dict[str, Any]]
    positions: list[int]
    pixels: Any
    skipped: list[tuple[int, str, str, str]]
    last: bool


# ---------------------------------------------------------------------------------------------------- sources
def is_shard_source(source: str) -> bool:
    """A tar shard, a brace pattern or a URL (webdataset reads it), as opposed to a local image or list file."""
    return (
        source.endswith(".tar")
        or "{" in source
        or "://" in source
        or source.startswith("pipe:")
        or (any(c in source for c in "*?[") and ".tar" in source)
    )


def _shards(source: str) -> list[str]:
    """The shard names of one source (a glob or a brace pattern expanded; URLs kept)."""
    if any(c in source for c in "*?[") and "://" not in source:
        from glob import glob

        return sorted(glob(source))
    return list(_webdataset().shardlists.expand_urls(source))


def _list_entries(path: Path, image_root: str | None, counter: SkipCounter) -> list[Entry]:
    """Entries of a list file: TXT (one path a line) or a table with an image column; bad lines are counted."""
    root = Path(image_root) if image_root is not None else path.parent

    def entry(rel: str, meta: dict[str, Any]) -> Entry:
        full = rel if os.path.isabs(rel) else str(root / rel)
        return Entry(full, full, meta)

    suffix = path.suffix.lower()
    if suffix == ".txt":
        out = []
        for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                counter.skip("bad_text", f"{path}:{lineno}: line is not valid UTF-8")
                continue
            if line and not line.startswith("#"):
                out.append(entry(line, {}))
        return out
    if suffix in (".jsonl", ".ndjson"):
        rows: Iterable[Any] = iter_jsonl(path, counter)
    elif suffix == ".json":
        rows = load_json(path)
        if not isinstance(rows, list):
            raise BlipError(f"{path}: expected a JSON list of objects with an image field")
    else:
        import csv
        import io

        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        rows = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}:{i + 1}"
        column = next((k for k in IMAGE_COLUMNS if isinstance(row, dict) and k in row), None)
        value = row.get(column) if column else None
        if not isinstance(value, str) or not value:
            counter.skip("bad_json", f"{where}: no image column {IMAGE_COLUMNS}")
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            counter.skip("bad_text", f"{where}: path is not valid UTF-8")
            continue
        out.append(entry(value, {k: v for k, v in row.items() if k != column}))
    return out


def _tar_members(shard: str, counter: SkipCounter) -> list[Entry]:
    """The image members of a local tar shard from its headers (no image read), keyed "shard.tar#KEY" as
    webdataset names samples; a member cut off by the end of the shard is counted as truncated."""
    source = os.path.abspath(shard)
    entries = []
    problem = truncated_tar(source)
    try:
        with tarfile.open(source, "r:") as tar:
            for member in tar:
                stem, _, ext = os.path.basename(member.name).partition(".")
                if member.isfile() and ext.lower() in SHARD_IMAGE_EXTENSIONS:
                    key = os.path.join(os.path.dirname(member.name), stem)
                    entries.append(
                        Entry(
                            f"{source}#{key}", source, {"mtime": float(member.mtime)}, member.offset_data, member.size
                        )
                    )
    except (tarfile.TarError, OSError) as e:
        problem = problem or f"unreadable tar ({e})"
    if problem:  # the members wholly before the cut are kept
        end = os.path.getsize(source) if os.path.exists(source) else 0
        whole = [e for e in entries if e.offset + e.size <= end]
        if len(whole) < len(entries):
            counter.skip("truncated", f"{entries[-1].key}: cut off by the end of the shard")
        counter.skip("bad_shard", f"{source}: {problem}")
        entries = whole
    return entries


def plan_units(
    sources: Sequence[str],
    unit_size: int = 1000,
    image_root: str | None = None,
    counter: SkipCounter | None = None,
    members: bool = False,
) -> list[Unit]:
    """Units of every source, in the order given: shards one unit each, listed images in chunks of unit_size.

    Folders are searched recursively for image files (sorted); list files name images relative to their own
    folder (or image_root); any other file is taken as an image (a missing or bad one is skipped when read).
    `members`: local tar shards (also those a list names) are listed member by member from their headers, as
    list units of `Entry`s with offsets, so a caller can pick members before any is read (`blip index`).
    """
    if unit_size < 1:
        raise BlipError("--unit-size must be at least 1")
    counter = counter if counter is not None else SkipCounter()
    units: list[Unit] = []
    loose: list[Entry] = []  # single files and folders given on the command line, chunked together

    def flush(index: int) -> None:
        for start in range(0, len(loose), unit_size):
            units.append(Unit(f"{index:03d}-images-{start // unit_size:06d}", entries=loose[start : start + unit_size]))
        loose.clear()

    for index, source in enumerate(sources):
        path = Path(source)
        if path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            tars = sorted(str(f) for f in path.glob("*.tar"))
            if not found and tars and members:
                loose += [e for s in tars for e in _tar_members(s, counter)]
            elif not found and tars:
                units += [Unit(f"{index:03d}-shard-{Path(s).stem}", shard=s) for s in tars]
            loose += [Entry(f, f) for f in found]
        elif is_shard_source(source) and path.suffix.lower() not in IMAGE_SUFFIXES:
            flush(index)
            shards = _shards(source)
            if not shards:
                raise BlipError(f"{source}: no tar shards found")
            if members and "://" not in source and not source.startswith("pipe:"):
                entries = [e for s in shards for e in _tar_members(s, counter)]
                units += [
                    Unit(
                        f"{index:03d}-{_stem(source)}-{start // unit_size:06d}",
                        entries=entries[start : start + unit_size],
                    )
                    for start in range(0, len(entries), unit_size)
                ]
            else:
                units += [Unit(f"{index:03d}-shard-{_stem(s)}", shard=s) for s in shards]
        elif path.suffix.lower() in TABLE_SUFFIXES | {".txt"}:
            flush(index)
            if not path.is_file():
                raise BlipError(f"{source}: no such list file")
            entries = _list_entries(path, image_root, counter)
            if members:
                entries = [
                    m for e in entries for m in (_tar_members(e.path, counter) if e.path.endswith(".tar") else [e])
                ]
            for start in range(0, len(entries), unit_size):
                units.append(
                    Unit(
                        f"{index:03d}-{path.stem}-{start // unit_size:06d}", entries=entries[start : start + unit_size]
                    )
                )
        else:
            loose.append(Entry(source, source))
    flush(len(sources))
    if not units and not members:  # an index of sources that became empty is an empty index
        raise BlipError("no images given (the folders and lists held no image files)")
    return units


def _stem(shard: str) -> str:
    """A file-safe name for a shard path or URL."""
    name = shard.rstrip("/").rsplit("/", 1)[-1]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.removesuffix(".tar"))


# ------------------------------------------------------------------------------------------------------ ranks
def join_ranks() -> None:
    """Join the torchrun process group when launched by torchrun (gloo: the engine only exchanges barriers)."""
    if "RANK" in os.environ and not is_distributed():
        # Ranks wait for the slowest one before rank 0 assembles the output: far longer than the 30 min default.
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(days=2))


def my_units(units: Sequence[Unit]) -> list[Unit]:
    """This rank's share of the units: unit i goes to rank i mod world size (all of them without torchrun)."""
    return [u for i, u in enumerate(units) if i % world_size() == rank()]


def wait_for_ranks() -> None:
    """Barrier across ranks (no-op in one process)."""
    if is_distributed():
        torch.distributed.barrier()


# ----------------------------------------------------------------------------------------------- the stream
class _UnitStream(IterableDataset):
    """Batches of units, cut so that a worker's share (task t goes to worker t mod workers) is fixed."""

    def __init__(
        self,
        units: Sequence[Unit],
        transforms: Sequence[Callable[[Any], torch.Tensor]],
        batch_size: int,
        max_pixels: int,
        keep_bytes: bool,
        digest: bool = False,
    ):
        self.units, self.transforms, self.batch_size = list(units), list(transforms), batch_size
        self.max_pixels, self.keep_bytes, self.digest = max_pixels, keep_bytes, digest
        # Tasks: every batch of a list unit is one task; a shard is one task (read in order by one worker).
        self.tasks: list[tuple[int, int]] = []
        for u, unit in enumerate(self.units):
            if unit.entries is None:
                self.tasks.append((u, -1))
            else:
                self.tasks += [(u, p) for p in range(max(1, -(-len(unit.entries) // batch_size)))]

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for t in range(worker, len(self.tasks), workers):
            u, part = self.tasks[t]
            unit = self.units[u]
            if unit.entries is None:
                yield from self._shard_batches(unit)
            else:
                yield self._list_batch(unit, part)

    def _decode(self, image: str | bytes) -> Any:
        pil = load_image(image, max_pixels=self.max_pixels)
        pixels = tuple(t(pil) for t in self.transforms)
        return pixels[0] if len(pixels) == 1 else pixels

    def _make(
        self,
        unit: Unit,
        part: int,
        parts: int | None,
        rows: list[tuple[int, str, dict, Any]],
        skipped: list[tuple[int, str, str, str]],
        last: bool,
    ) -> Batch:
        pixels = None
        if rows:
            first = rows[0][3]
            if isinstance(first, tuple):
                pixels = tuple(torch.stack([r[3][i] for r in rows]) for i in range(len(first)))
            else:
                pixels = torch.stack([r[3] for r in rows])
        return Batch(
            unit.name,
            part,
            parts,
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[0] for r in rows],
            pixels,
            skipped,
            last,
        )

    def _list_batch(self, unit: Unit, part: int) -> Batch:
        assert unit.entries is not None
        parts = max(1, -(-len(unit.entries) // self.batch_size))
        rows, skipped = [], []
        start = part * self.batch_size
        for pos, entry in enumerate(unit.entries[start : start + self.batch_size], start):
            try:
                if self.digest or entry.offset >= 0:
                    data = _read_entry(entry)
                    meta = {**entry.meta, "__sha256__": hashlib.sha256(data).hexdigest()} if self.digest else entry.meta
                    rows.append((pos, entry.key, meta, self._decode(data)))
                else:
                    rows.append((pos, entry.key, entry.meta, self._decode(entry.path)))
            except ImageError as e:
                message = str(e).replace("<bytes>", entry.key, 1)
                skipped.append((pos, entry.key, e.reason, message))
        return self._make(unit, part, parts, rows, skipped, part == parts - 1)

    def _shard_batches(self, unit: Unit) -> Iterator[Batch]:
        assert unit.shard is not None
        wds = _webdataset()
        shard, label = unit.shard, Path(unit.shard).name
        rows: list[tuple[int, str, dict, Any]] = []
        skipped: list[tuple[int, str, str, str]] = []
        part = 0
        problem = truncated_tar(shard)
        if problem:  # the samples before the cut are still used
            skipped.append((-1, shard, "bad_shard", f"{shard}: {problem}"))
        failures: list[Exception] = []

        def handler(exn: Exception) -> bool:
            failures.append(exn)
            return True

        for pos, sample in enumerate(wds.tariterators.tarfile_samples([{"url": shard}], handler=handler)):
            key = f"{label}:{sample['__key__']}"
            ext = next((e for e in SHARD_IMAGE_EXTENSIONS if e in sample), None)
            meta = _shard_meta(sample)
            if ext is None:
                skipped.append((pos, key, "incomplete_sample", f"{shard}:{sample['__key__']}: no image"))
            else:
                try:
                    if self.keep_bytes:
                        meta["__image__"], meta["__ext__"] = sample[ext], ext
                    rows.append((pos, key, meta, self._decode(sample[ext])))
                except ImageError as e:
                    skipped.append((pos, key, e.reason, f"{shard}:{sample['__key__']}: {e}"))
            if len(rows) == self.batch_size:
                yield self._make(unit, part, None, rows, skipped, False)
                rows, skipped, part = [], [], part + 1
        if failures and not problem:
            reason = "missing" if isinstance(failures[0], FileNotFoundError) else "bad_shard"
            skipped.append((-1, shard, reason, f"{shard}: {type(failures[0]).__name__}: {failures[0]}"))
        yield self._make(unit, part, part + 1, rows, skipped, True)


def _read_entry(entry: Entry) -> bytes:
    """The encoded image of an entry: its file, or its byte range of a tar shard."""
    try:
        with open(entry.path, "rb") as f:
            if entry.offset < 0:
                return f.read()
            f.seek(entry.offset)
            data = f.read(entry.size)
    except FileNotFoundError:
        raise ImageError("missing", f"{entry.key}: no such file") from None
    except IsADirectoryError:
        raise ImageError("not_image", f"{entry.key}: is a directory, not an image") from None
    if len(data) < entry.size:
        raise ImageError("truncated", f"{entry.key}: cut off by the end of the shard")
    return data


def _shard_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """A shard sample's text (.txt) and JSON (.json) as metadata; undecodable ones are left out."""
    meta: dict[str, Any] = {}
    if "txt" in sample:
        try:
            meta["txt"] = sample["txt"].decode("utf-8")
        except UnicodeDecodeError:
            pass
    if "json" in sample:
        try:
            meta["json"] = json.loads(sample["json"])
        except ValueError:
            pass
    return meta


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decode workers share the CPU with the model


def stream_batches(
    units: Sequence[Unit],
    transform: Callable[[Any], torch.Tensor] | Sequence[Callable],
    batch_size: int = 8,
    workers: int = 0,
    prefetch: int = 2,
    max_pixels: int = MAX_PIXELS,
    keep_bytes: bool = False,
    digest: bool = False,
) -> Iterator[Batch]:
    """Decode and transform the units' images in `workers` DataLoader processes (0: in this one), in batches.

    `transform` maps an RGB PIL image to a tensor (a list of transforms gives a tuple of tensors per image);
    at most `prefetch` batches per worker wait in memory. `keep_bytes` puts a shard sample's encoded image in
    meta["__image__"] (and its extension in meta["__ext__"]); `digest` puts the SHA-256 of a listed image's
    encoded bytes in meta["__sha256__"].
    """
    if batch_size < 1:
        raise BlipError("--batch-size must be at least 1")
    if workers < 0:
        raise BlipError("--workers must be 0 or more")
    transforms = list(transform) if isinstance(transform, (list, tuple)) else [transform]
    dataset = _UnitStream(units, transforms, batch_size, max_pixels, keep_bytes, digest)
    if not dataset.tasks:
        return iter(())
    workers = min(workers, len(dataset.tasks))
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=prefetch if workers else None,
        persistent_workers=False,
    )
    return iter(loader)


# ----------------------------------------------------------------------------------------- units to records
class UnitTracker:
    """Collects the records of each unit's batches and hands back a unit once all its batches are in."""

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[int, Any]]] = {}
        self._seen: dict[str, int] = {}
        self._parts: dict[str, int] = {}

    def add(self, batch: Batch, rows: Iterable[tuple[int, Any]]) -> list[tuple[str, list[Any]]]:
        """Add one batch's (position, record) rows; returns [(unit, records in input order)] for a finished unit."""
        self._rows.setdefault(batch.unit, []).extend(rows)
        self._seen[batch.unit] = self._seen.get(batch.unit, 0) + 1
        if batch.parts is not None:
            self._parts[batch.unit] = batch.parts
        if self._seen[batch.unit] != self._parts.get(batch.unit):
            return []
        rows = sorted(self._rows.pop(batch.unit), key=lambda r: r[0])
        del self._seen[batch.unit], self._parts[batch.unit]
        return [(batch.unit, [r[1] for r in rows])]


class UnitStore:
    """Finished units as files in a folder: `done` for resume, `write` atomically, `read` in plan order.

    The folder also keeps the job's fingerprint (sources and settings): a rerun with different ones is refused
    instead of mixing two jobs' results.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any] | None = None, suffix: str = ".jsonl"):
        self.folder = Path(folder)
        self.suffix = suffix
        self.folder.mkdir(parents=True, exist_ok=True)
        if fingerprint is not None:
            self._check(fingerprint)

    def _check(self, fingerprint: dict[str, Any]) -> None:
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        marker = self.folder / "job.json"
        if marker.exists():
            old = json.loads(marker.read_text())
            if old.get("digest") != digest:
                changed = sorted(
                    k
                    for k in set(old.get("job", {})) | set(fingerprint)
                    if old.get("job", {}).get(k) != json.loads(json.dumps(fingerprint, default=str)).get(k)
                )
                raise BlipError(
                    f"{self.folder} holds the results of a different job (changed: {', '.join(changed)}); "
                    "delete it or write elsewhere"
                )
        elif rank() == 0:
            write_atomic(marker, json.dumps({"digest": digest, "job": fingerprint}, default=str, indent=1))

    def path(self, unit: str) -> Path:
        """Where the unit's records live."""
        return self.folder / f"{unit}{self.suffix}"

    def done(self, unit: str) -> bool:
        """True once the unit was written completely."""
        return self.path(unit).exists()

    def write(self, unit: str, records: Sequence[dict[str, Any]]) -> None:
        """Write a unit's records as JSON lines, atomically (a killed run leaves no partial unit)."""
        write_atomic(self.path(unit), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def read(self, unit: str) -> list[dict[str, Any]]:
        """A finished unit's records."""
        return [json.loads(line) for line in self.path(unit).read_text(encoding="utf-8").splitlines()]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a part (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------- progress
class Progress:
    """Images done, images/s and ETA: a tqdm bar on a terminal, else a line every `every` seconds on stderr."""

    def __init__(self, total: int | None, label: str = "images", every: float = 30.0, enabled: bool = True):
        self.total, self.label, self.every = total, label, every
        self.done, self.start, self.last = 0, time.perf_counter(), time.perf_counter()
        self.bar = None
        self.enabled = enabled and rank() == 0
        if self.enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr)

    def update(self, n: int) -> None:
        """Count n more images."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            print(f"blip: {self.line()}", file=sys.stderr, flush=True)

    def line(self) -> str:
        """'N/TOTAL images, R img/s, ETA T' (no total or ETA when unknown)."""
        seconds = max(1e-9, time.perf_counter() - self.start)
        rate = self.done / seconds
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0 and self.done < self.total:
            left = int((self.total - self.done) / rate)
            eta = f", ETA {left // 3600}h{left % 3600 // 60:02d}m{left % 60:02d}s"
        return f"{self.done}{total} {self.label}, {rate:.1f} img/s{eta}"

    def close(self) -> None:
        """End the bar (on a terminal) or print the final line."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.done:
            print(f"blip: {self.line()}", file=sys.stderr, flush=True)


def report_skips(skipped: dict[str, int], total: int, what: str = "inputs", fail_on_any: bool = True) -> int:
    """Print the skip summary; exit status 2 when all inputs were skipped, 1 when most were (or any, with
    fail_on_any), else 0."""
    n = sum(skipped.values())
    if not n:
        return 0
    total = max(total, n)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    verdict = (
        ": nothing was usable, check the paths"
        if n == total
        else (": most of the input is unusable, check the paths" if n > total / 2 else "")
    )
    print(f"blip: {n} of {total} {what} skipped ({summary}){verdict}", file=sys.stderr)
    return 2 if n == total else 1 if (fail_on_any or n > total / 2) else 0


__all__ = [
    "Batch",
    "Entry",
    "Progress",
    "Unit",
    "UnitStore",
    "UnitTracker",
    "join_ranks",
    "my_units",
    "plan_units",
    "report_skips",
    "stream_batches",
    "wait_for_ranks",
    "write_atomic",
]
