"""A searchable index of a collection's ITC image features: float16 shards, a metadata table, exact or faiss search,
ITM re-ranking of the top candidates.

Layout of an index folder (clip-retrieval's, one table instead of one per shard for the live rows):

    index.json                 the model's fingerprint, the feature width, the nearest-neighbour method and its recall
    shards/emb-000000.npy      float16 (rows, dim) L2-normalised image features, memory-mapped when read
    shards/meta-000000.parquet key, source, offset, size, mtime, sha256 of each row of the .npy beside it
    table.parquet              the live rows (sorted by key) and where their vector is: shard, row
    faiss.index                an IVF index over the live rows, when the approximate search is used

Every file is written to a temporary name and renamed. A shard counts once its metadata exists (written after its
vectors), so an indexing run killed with -9 keeps every finished shard and the rerun embeds only the rest; the table
is written last, then shards no live row uses are deleted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blip.data.robust import SkipCounter
from blip.data.text import pre_caption
from blip.defaults import TEXT_TOKENS
from blip.errors import BlipError, ImageError
from blip.images import ImageSource, load_image
from blip.inference.engine import Entry, Unit, plan_units, stream_batches

if TYPE_CHECKING:
    from PIL import Image

    from blip.api import Blip

# Up to this many vectors the exact search is fast enough (BENCHMARKS.md: search index); faiss above it.
EXACT_UP_TO = 200_000
CHUNK_ROWS = 65_536  # rows of float16 scored at a time by the exact search
SCORE_BAND = 4e-3  # float16 scores within this of the k-th best are rescored in float32 (exact_top_k)
UNIT_SIZE = 1000  # images per engine unit: a worker decodes one batch of a unit at a time
COLUMNS = ("key", "source", "offset", "size", "mtime", "sha256")
MAX_WORDS = 30  # text queries are cleaned as the reference's retrieval evaluation cleans captions


@dataclass
class SearchHit:
    """One result: `itc` is the ITC cosine similarity (not a probability), `itm` the ITM match probability."""

    rank: int  # 1-based, after re-ranking if any
    key: str  # the image's path (file sources) or "shard.tar#KEY" (webdataset sources)
    path: str | None  # a loadable file path, or None for shard members
    itc: float
    itm: float | None  # None when not re-ranked


@dataclass
class Item:
    """An image of a source: a file (offset -1) or a tar member whose bytes start at `offset` in `source`."""

    key: str
    source: str
    offset: int
    size: int
    mtime: float
    sha256: str = ""


@dataclass
class BuildReport:
    """What an indexing run did: images embedded, reused from the index, dropped, skipped by reason."""

    embedded: int = 0
    reused: int = 0
    removed: int = 0
    skipped: SkipCounter = field(default_factory=SkipCounter)
    nn: str = "exact"
    recall_at_10: float | None = None
    nprobe: int | None = None
    nlist: int | None = None

    def summary(self) -> str:
        """One line for the user."""
        line = f"{self.embedded} embedded, {self.reused} unchanged, {self.removed} removed; search: {self.nn}"
        if self.recall_at_10 is not None:
            line += (
                f" (IVF nlist {self.nlist}, nprobe {self.nprobe}: recall@10 against exact search "
                f"{self.recall_at_10:.3f})"
            )
        return line


def read_bytes(item: Item) -> bytes:
    """The encoded image of an item, from its file or from its shard."""
    if item.offset < 0:
        return Path(item.source).read_bytes()
    with open(item.source, "rb") as f:
        f.seek(item.offset)
        return f.read(item.size)


# ---------------------------------------------------------------------------------------------------------------
# The model's fingerprint: what makes two models' ITC features comparable.

_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
ITC_MODULES = ("visual_encoder.", "vision_proj.", "text_encoder.", "text_proj.")


def fingerprint(model: Blip) -> dict[str, Any]:
    """The ITC configuration, the dtype it runs in and SHA-256s of the weights that make ITC features (once per model).

    `weights` hashes the weights rounded to bfloat16 (rounding twice changes nothing), so one file loaded in float32
    and with --dtype bfloat16 has one `weights` hash; `weights_exact` hashes them as they are, in float32 only, and
    tells apart float32 models that differ below bfloat16's precision.
    """
    m = model.model
    if m not in _FINGERPRINTS:
        rounded, exact = hashlib.sha256(), hashlib.sha256()
        for name, t in sorted(m.state_dict().items()):
            if name.startswith(ITC_MODULES):
                for h, v in ((rounded, t.bfloat16().float()), (exact, t.float())):
                    h.update(f"{name}:{tuple(t.shape)}".encode())
                    h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        cfg = m.cfg.to_dict()
        _FINGERPRINTS[m] = {
            "image_size": cfg["vision"]["image_size"],
            "embed_dim": cfg["embed_dim"],
            "vision": cfg["vision"],
            "text": cfg["text"],
            "weights": rounded.hexdigest(),
            "weights_exact": exact.hexdigest() if model.dtype == "float32" else None,
            "dtype": model.dtype,
        }
    return _FINGERPRINTS[m]


def check_fingerprint(root: Path, built: dict[str, Any], mine: dict[str, Any], writing: bool = True) -> None:
    """Refuse, in one line, a model whose features are not those the index holds.

    Searching may use another dtype than building (a bf16 query against fp32 features ranks as well, to bf16's
    precision); adding to an index may not, so that every vector in it comes from one computation.
    """
    if None in (built.get("weights_exact"), mine["weights_exact"]):
        built, mine = {**built, "weights_exact": None}, {**mine, "weights_exact": None}
    if not writing:
        built, mine = {**built, "dtype": None}, {**mine, "dtype": None}
    if built == mine:
        return
    if built.get("image_size") != mine["image_size"]:
        why = f"image size {built.get('image_size')}, this model's is {mine['image_size']}"
    elif built.get("weights") != mine["weights"] or built.get("weights_exact") != mine["weights_exact"]:
        why = f"weights {str(built.get('weights'))[:12]}, this model's are {mine['weights'][:12]}"
    elif built.get("dtype") != mine["dtype"]:
        raise BlipError(
            f"{root}: this index was built in {built.get('dtype')} and this model runs in {mine['dtype']}; "
            f"add to it with --dtype {built.get('dtype')}, or build a new index folder"
        )
    else:
        why = "another configuration"
    raise BlipError(f"{root}: this index was built with another model ({why}); use that model or a new index folder")


# ---------------------------------------------------------------------------------------------------------------
# Writing.


def _atomic_write(path: Path, write: Any) -> None:
    """Call write(file) on a temporary file, flush it to disk, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


def _write_parquet(path: Path, columns: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    _atomic_write(path, lambda f: pq.write_table(table, f))


def _read_parquet(path: Path) -> tuple[dict[str, list], dict[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the search extra
        raise BlipError("search indexes need pyarrow and faiss-cpu: pip install 'blip[search]'") from None
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pydict(), meta


class IndexWriter:
    """Appends shards of (items, features) to an index folder and commits the live table; used by build_index."""

    def __init__(self, root: str | os.PathLike, fp: dict[str, Any], dim: int):
        self.root = Path(root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        manifest_path = self.root / "index.json"
        if manifest_path.exists():
            self.manifest = json.loads(manifest_path.read_text())
            check_fingerprint(self.root, self.manifest["fingerprint"], fp)
        else:
            self.manifest = {"version": 1, "fingerprint": fp, "dim": dim}
            _write_json(manifest_path, self.manifest)
        numbers = [
            int(m.group(1))
            for p in (self.root / "shards").iterdir()
            if (m := re.fullmatch(r"(?:emb|meta)-(\d+)\.(?:npy|parquet)(?:\.tmp)?", p.name))
        ]
        self.next_shard = max(numbers, default=-1) + 1

    def known(self) -> dict[str, dict[str, Any]]:
        """key -> the newest row written for it (shards in order, then the committed table's updates)."""
        rows: dict[str, dict[str, Any]] = {}
        for shard in sorted(self._complete_shards()):
            cols, _ = _read_parquet(self.root / "shards" / f"meta-{shard:06d}.parquet")
            for r, values in enumerate(zip(*(cols[c] for c in COLUMNS))):
                rows[values[0]] = dict(zip(COLUMNS, values), shard=shard, row=r)
        table = self.root / "table.parquet"
        if table.exists():  # the table records content-identical files whose mtime changed
            cols, _ = _read_parquet(table)
            for values in zip(*(cols[c] for c in (*COLUMNS, "shard", "row"))):
                old = rows.get(values[0])
                if old is not None and (old["shard"], old["row"]) == values[-2:]:
                    old.update(zip(COLUMNS, values))
        return rows

    def committed_keys(self) -> set[str]:
        """Keys of the live table of the last finished run (none before the first)."""
        table = self.root / "table.parquet"
        return set(_read_parquet(table)[0]["key"]) if table.exists() else set()

    def _complete_shards(self) -> list[int]:
        return [
            int(p.name[5:11])
            for p in (self.root / "shards").glob("meta-*.parquet")
            if (self.root / "shards" / f"emb-{p.name[5:11]}.npy").exists()
        ]

    def add(self, items: Sequence[Item], features: np.ndarray) -> list[tuple[int, int]]:
        """Write one shard: vectors first, metadata last (what makes it count); returns each item's (shard, row)."""
        shard = self.next_shard
        self.next_shard += 1
        vectors = np.ascontiguousarray(features, dtype=np.float16)
        _atomic_write(self.root / "shards" / f"emb-{shard:06d}.npy", lambda f: np.save(f, vectors))
        _write_parquet(
            self.root / "shards" / f"meta-{shard:06d}.parquet", {c: [getattr(it, c) for it in items] for c in COLUMNS}
        )
        return [(shard, r) for r in range(len(items))]

    def commit(
        self, rows: Sequence[dict[str, Any]], nn: str = "auto", recall_target: float = 0.95, seed: int = 0
    ) -> BuildReport:
        """Write the live table (rows: COLUMNS + shard + row), build or drop the faiss index, delete unused shards."""
        if nn not in ("auto", "exact", "faiss"):
            raise BlipError(f"nn must be auto, exact or faiss, not {nn!r}")
        rows = sorted(rows, key=lambda r: r["key"])
        generation = uuid.uuid4().hex
        _write_parquet(
            self.root / "table.parquet",
            {c: [r[c] for r in rows] for c in (*COLUMNS, "shard", "row")},
            {"generation": generation},
        )
        report = BuildReport()
        use_faiss = nn == "faiss" or (nn == "auto" and len(rows) > EXACT_UP_TO)
        if use_faiss and rows:
            index = Index.open(self.root, use_faiss=False)
            faiss_index, info = build_faiss(index, recall_target=recall_target, seed=seed)
            import faiss

            _atomic_write(self.root / "faiss.index", lambda f: f.write(faiss.serialize_index(faiss_index).tobytes()))
            self.manifest["faiss"] = {**info, "generation": generation}
            report.nn, report.recall_at_10, report.nprobe, report.nlist = (
                "faiss",
                info["recall_at_10"],
                info["nprobe"],
                info["nlist"],
            )
        else:
            self.manifest.pop("faiss", None)
        _write_json(self.root / "index.json", self.manifest)
        if not use_faiss:
            (self.root / "faiss.index").unlink(missing_ok=True)
        live = {r["shard"] for r in rows}
        for p in (self.root / "shards").iterdir():
            m = re.fullmatch(r"(?:emb|meta)-(\d+)\..*", p.name)
            if m is None or int(m.group(1)) not in live:
                p.unlink()
        return report


def build_index(
    model: Blip,
    sources: Sequence[str],
    out: str | os.PathLike,
    batch_size: int = 32,
    shard_size: int = 1024,
    nn: str = "auto",
    recall_target: float = 0.95,
    progress: Callable[[int], Any] | None = None,
    model_source: dict[str, Any] | None = None,
    workers: int = 0,
) -> Index:
    """Embed every new or changed image of sources into the index at out; drop rows of images no longer there.

    Sources are listed and images decoded (in `workers` processes) by the streaming engine, blip.inference.engine.

    `nn`: exact, faiss or auto (faiss above EXACT_UP_TO vectors). `progress(n)` makes a bar (update(k)) for the n
    images to embed. `model_source`: how to load the model again (the command line records its --model, so
    `blip search` needs none). The returned Index's `build_report` says what was done.
    """
    model._need("itc", "an index")
    if batch_size < 1 or shard_size < 1:
        raise BlipError("batch_size and shard_size must be positive")
    writer = IndexWriter(out, fingerprint(model), model.cfg.embed_dim)
    if model_source:
        writer.manifest["model"] = model_source
    counter = SkipCounter()
    items = list({it.key: it for it in _items(list(sources), counter)}.values())
    known = writer.known()
    before = writer.committed_keys()
    rows, todo = [], []
    for it in items:
        old = known.get(it.key)
        if old is not None and (old["size"], old["mtime"]) == (it.size, it.mtime):
            rows.append(old)
        elif old is not None and old["size"] == it.size and _same_content(it, old["sha256"]):
            rows.append({**old, "mtime": it.mtime})  # touched, not changed
        else:
            todo.append(it)
    reused = len(rows)
    counter.ok(reused)  # unchanged images count as used, so the skip summary's total is every input
    pending_items: list[Item] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending_items:
            places = writer.add(pending_items, np.concatenate(pending))
            rows.extend(
                {**{c: getattr(it, c) for c in COLUMNS}, "shard": s, "row": r}
                for it, (s, r) in zip(pending_items, places)
            )
            pending_items.clear()
            pending.clear()

    bar = progress(len(todo)) if progress is not None else None
    m = model.model
    by_key = {it.key: it for it in todo}
    # Only the images to embed are read: the engine gets them as list units of Entries (files or shard members).
    units = [
        Unit(
            f"todo-{start // UNIT_SIZE:06d}",
            entries=[Entry(it.key, it.source, {}, it.offset, it.size) for it in todo[start : start + UNIT_SIZE]],
        )
        for start in range(0, len(todo), UNIT_SIZE)
    ]
    for batch in stream_batches(units, model.transform, batch_size, workers, digest=True):
        for _, _, reason, message in batch.skipped:
            counter.skip(reason, message)
        if not batch.keys:
            continue
        with torch.no_grad(), model.autocast():
            features = m.image_embed(m.encode_image(batch.pixels.to(model.device))).float().cpu().numpy()
        batch_items = [by_key[k] for k in batch.keys]
        for it, meta in zip(batch_items, batch.meta):
            it.sha256 = meta["__sha256__"]
        pending_items.extend(batch_items)
        pending.append(features)
        counter.ok(len(batch_items))
        if bar is not None:
            bar.update(len(batch_items) + len(batch.skipped))
        if len(pending_items) >= shard_size:
            flush()
    flush()
    live = {r["key"] for r in rows}
    report = writer.commit(rows, nn=nn, recall_target=recall_target)
    report.embedded, report.reused, report.skipped = len(rows) - reused, reused, counter
    report.removed = len(before - live)
    index = Index.open(out)
    index.build_report = report
    return index


def _items(sources: list[str], counter: SkipCounter) -> list[Item]:
    """Every image of the sources as listed by the engine's plan_units, with its size and mtime (stat or tar header);
    nothing is read yet."""
    items = []
    for unit in plan_units(sources, counter=counter, members=True):
        if unit.entries is None:
            raise BlipError(f"{unit.shard}: an index reads local shards only (it keeps each member's offset)")
        for e in unit.entries:
            if e.offset >= 0:
                items.append(Item(e.key, e.path, e.offset, e.size, e.meta["mtime"]))
                continue
            path = os.path.abspath(e.path)
            try:
                st = os.stat(path)
            except OSError:
                counter.skip("missing", f"{path}: no such file")
                continue
            items.append(Item(path, path, -1, st.st_size, st.st_mtime))
    return items


def _same_content(item: Item, sha256: str) -> bool:
    try:
        return hashlib.sha256(read_bytes(item)).hexdigest() == sha256
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Nearest neighbours.


def exact_top_k(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]], query: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best k (scores, positions) by inner product over (float16 rows, their positions) chunks; ties by position.

    Candidates come from a float16 matmul (float32 accumulation; numpy's float16 -> float32 conversion is the slow
    part of a float32 matmul), kept if within SCORE_BAND of the chunk's k-th best, then scored exactly in float32:
    the float16 score of a unit query and unit rows is off by under 1e-3, so no true top-k row is missed.
    """
    q16 = torch.from_numpy(query.astype(np.float16))
    best_s, best_p = np.empty(0, np.float32), np.empty(0, np.int64)
    for rows, positions in chunks:
        with warnings.catch_warnings():  # the memory map is read-only and is only read
            warnings.simplefilter("ignore", UserWarning)
            rough = (torch.from_numpy(np.asarray(rows)) @ q16).float().numpy()
        if len(rough) > k:
            keep = np.flatnonzero(rough >= np.partition(rough, len(rough) - k)[len(rough) - k] - SCORE_BAND)
            rows, positions = rows[keep], positions[keep]
        best_s = np.concatenate([best_s, np.asarray(rows, np.float32) @ query])
        best_p = np.concatenate([best_p, positions])
        if len(best_s) > 4 * k:  # keep the running pool small
            best_s, best_p = _top(best_s, best_p, k)
    return _top(best_s, best_p, k)


def _top(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((positions, -scores))[:k]
    return scores[order], positions[order]


def build_faiss(
    index: Index, recall_target: float = 0.95, seed: int = 0, queries: int = 200
) -> tuple[Any, dict[str, Any]]:
    """An IVF index (float16 codes, inner product) over the index's vectors, nprobe chosen for recall@10.

    Recall is measured against the exact search on `queries` stored vectors used as queries (each one's own row
    left out of both answers), doubling nprobe until recall@10 reaches `recall_target`.
    """
    try:
        import faiss
    except ImportError:
        raise BlipError("the approximate search needs faiss-cpu: pip install 'blip[search]'") from None
    n, d = len(index), index.dim
    nlist = max(1, min(int(math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
    ivf = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
    ivf.train(index.vectors(train))
    for start in range(0, n, CHUNK_ROWS):
        ivf.add(index.vectors(np.arange(start, min(n, start + CHUNK_ROWS))))
    sample = np.sort(rng.choice(n, size=min(n, queries), replace=False))
    q = index.vectors(sample)
    k = min(11, n)
    truth = [index.nearest(v, k)[1] for v in q]
    truth = [t[t != s][:10] for t, s in zip(truth, sample)]
    nprobe, recall = 1, 0.0
    while True:
        ivf.nprobe = nprobe
        _, found = ivf.search(q, k)
        found = [f[(f != s) & (f >= 0)][:10] for f, s in zip(found, sample)]
        recall = float(np.mean([len(np.intersect1d(f, t)) / max(1, len(t)) for f, t in zip(found, truth)]))
        if recall >= recall_target or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    ivf.nprobe = nprobe
    return ivf, {"nlist": nlist, "nprobe": nprobe, "recall_at_10": recall, "recall_queries": len(sample)}


# ---------------------------------------------------------------------------------------------------------------
# Reading and searching.


class Index:
    """An index folder opened for search: vectors memory-mapped, metadata in memory, faiss loaded if built."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], table: dict[str, list], generation: str, use_faiss: bool = True
    ):
        self.root, self.manifest = root, manifest
        self.keys: list[str] = table["key"]
        self.sources: list[str] = table["source"]
        self.offsets = np.asarray(table["offset"], dtype=np.int64)
        self.sizes = np.asarray(table["size"], dtype=np.int64)
        self.dim = int(manifest["dim"])
        self.build_report: BuildReport | None = None
        shard_of, row_of = np.asarray(table["shard"], np.int64), np.asarray(table["row"], np.int64)
        self._position = {k: i for i, k in enumerate(self.keys)}
        # Per shard: its memory map, and the index position of each of its rows (-1 for a row no longer live).
        self._shards: list[tuple[np.ndarray, np.ndarray]] = []
        self._where = np.empty((len(self.keys), 2), np.int64)
        for j, shard in enumerate(np.unique(shard_of)):
            vectors = np.load(root / "shards" / f"emb-{shard:06d}.npy", mmap_mode="r")
            mine = np.flatnonzero(shard_of == shard)
            positions = np.full(len(vectors), -1, np.int64)
            positions[row_of[mine]] = mine
            self._shards.append((vectors, positions))
            self._where[mine, 0], self._where[mine, 1] = j, row_of[mine]
        self.faiss = None
        info = manifest.get("faiss")
        if use_faiss and info and (root / "faiss.index").exists():
            if info.get("generation") == generation:
                import faiss

                self.faiss = faiss.deserialize_index(np.fromfile(root / "faiss.index", dtype=np.uint8))
                self.faiss.nprobe = info["nprobe"]
            else:  # an indexing run died between writing the table and the faiss index
                print(f"blip: {root}: faiss index is stale, using the exact search; rerun blip index", file=sys.stderr)

    @classmethod
    def open(cls, path: str | os.PathLike, use_faiss: bool = True) -> Index:
        """Open an index folder written by `blip index` / Blip.index."""
        root = Path(path)
        if not (root / "index.json").is_file() or not (root / "table.parquet").is_file():
            raise BlipError(f"{root}: not a finished search index (build one with `blip index SOURCES --out {root}`)")
        manifest = json.loads((root / "index.json").read_text())
        table, meta = _read_parquet(root / "table.parquet")
        return cls(root, manifest, table, meta.get("generation", ""), use_faiss)

    def __len__(self) -> int:
        return len(self.keys)

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """float32 vectors at index positions (rows of the table)."""
        out = np.empty((len(positions), self.dim), np.float32)
        where = self._where[positions]
        for j in np.unique(where[:, 0]):
            sel = where[:, 0] == j
            out[sel] = self._shards[j][0][where[sel, 1]]
        return out

    def _chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Live rows and their positions, about CHUNK_ROWS at a time: small shards are joined (one matmul of 64k
        rows is an order of magnitude faster than 64 of 1k)."""
        rows: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        held = 0
        for vectors, pos in self._shards:
            for start in range(0, len(vectors), CHUNK_ROWS):
                r, p = vectors[start : start + CHUNK_ROWS], pos[start : start + CHUNK_ROWS]
                live = p >= 0
                rows.append(r if live.all() else r[live])
                positions.append(p if live.all() else p[live])
                held += len(positions[-1])
                if held >= CHUNK_ROWS:
                    yield np.concatenate(rows), np.concatenate(positions)
                    rows, positions, held = [], [], 0
        if rows:
            yield np.concatenate(rows), np.concatenate(positions)

    def nearest(self, query: np.ndarray, k: int, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions) of the k vectors with the highest inner product with a (dim,) query, best first."""
        query = np.asarray(query, np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise BlipError(f"query has {query.shape[0]} dimensions, the index {self.dim}")
        k = min(k, len(self))
        if k <= 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        if self.faiss is not None and not exact:
            scores, positions = self.faiss.search(query[None], k)
            keep = positions[0] >= 0
            return scores[0][keep], positions[0][keep].astype(np.int64)
        return exact_top_k(self._chunks(), query, k)

    def item(self, key: str) -> Item:
        """The indexed item under a key."""
        i = self._position.get(key)
        if i is None:
            raise BlipError(f"{key}: not in the index at {self.root}")
        return Item(key, self.sources[i], int(self.offsets[i]), int(self.sizes[i]), 0.0)

    def image(self, hit: SearchHit) -> Image.Image:
        """The hit's image (from its file or its shard)."""
        return load_image(read_bytes(self.item(hit.key)))

    def _hit(self, rank: int, position: int, itc: float, itm: float | None) -> SearchHit:
        key, source, offset = self.keys[position], self.sources[position], self.offsets[position]
        return SearchHit(rank, key, source if offset < 0 else None, float(itc), itm)

    @torch.no_grad()
    def search(
        self,
        model: Blip,
        text: str | None = None,
        image: ImageSource | None = None,
        top_k: int = 10,
        rerank_k: int = 64,
    ) -> list[SearchHit]:
        """Images nearest to a text or an image by ITC; for a text, the ITC top rerank_k re-ranked by ITM.

        Re-ranking orders by ITM match logit + ITC cosine, as the reference's retrieval evaluation; each hit reports
        the ITC cosine (recomputed in float32 for re-ranked hits) and the ITM match probability separately.
        """
        if (text is None) == (image is None):
            raise BlipError("search needs exactly one of a text or an image")
        if top_k < 1 or rerank_k < 0:
            raise BlipError("top_k must be positive and rerank_k not negative")
        check_fingerprint(self.root, self.manifest["fingerprint"], fingerprint(model), writing=False)
        if text is not None:
            text = pre_caption(text, MAX_WORDS)
            query = model.text_features([text])[0].numpy()
        else:
            query = model.image_features([image])[0].numpy()
        rerank = rerank_k if text is not None and model.model.has("itm") else 0
        scores, positions = self.nearest(query, max(top_k, rerank))
        hits = [(int(p), float(s), None) for p, s in zip(positions, scores)]
        if rerank:
            hits = self._rerank(model, text, torch.from_numpy(query), hits[:rerank]) + hits[rerank:]
        return [self._hit(r + 1, p, itc, itm) for r, (p, itc, itm) in enumerate(hits[:top_k])]

    def _rerank(
        self, model: Blip, text: str, query: torch.Tensor, hits: list[tuple[int, float, None]], batch_size: int = 16
    ) -> list[tuple[int, float, float]]:
        m = model.model
        ids, mask = model._texts([text], TEXT_TOKENS)
        scored = []
        for start in range(0, len(hits), batch_size):
            batch, pixels = [], []
            for p, s, _ in hits[start : start + batch_size]:
                try:
                    pixels.append(model.transform(self.image(self._hit(0, p, s, None))))
                    batch.append(p)
                except (ImageError, OSError) as e:  # gone since it was indexed: leave it out
                    print(f"blip: skipped {self.keys[p]}: {e}", file=sys.stderr)
            if not batch:
                continue
            with model.autocast():
                embeds = m.encode_image(torch.stack(pixels).to(model.device))
                logits = m.itm_logits(embeds, ids.expand(len(batch), -1), mask.expand(len(batch), -1)).float()
                itc = (m.image_embed(embeds).float() @ query.to(model.device)).cpu()
            prob = logits.softmax(-1)[:, 1].cpu()
            score = logits[:, 1].cpu() + itc
            scored += [(float(score[i]), p, float(itc[i]), float(prob[i])) for i, p in enumerate(batch)]
        scored.sort(key=lambda x: -x[0])  # stable: equal scores keep their ITC order
        return [(p, itc, itm) for _, p, itc, itm in scored]


def as_record(hit: SearchHit) -> dict[str, Any]:
    """A hit as plain data (JSON)."""
    return {
        "rank": hit.rank,
        "key": hit.key,
        "path": hit.path,
        "itc": round(hit.itc, 6),
        "itm": None if hit.itm is None else round(hit.itm, 6),
    }
