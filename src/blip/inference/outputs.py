"""Where records go: one table file (JSONL, CSV or Parquet, by suffix) written atomically, or caption sidecars."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from blip.errors import BlipError
from blip.inference.engine import write_atomic

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def table_format(path: str | os.PathLike) -> str:
    """The format of an output file from its suffix; refuses unknown suffixes and Parquet without pyarrow."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise BlipError(f"--out {path}: unknown format; use .jsonl, .csv, .tsv or .parquet")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BlipError("--out *.parquet needs pyarrow: pip install 'blip[parquet]'") from None
    return fmt


def write_table(path: str | os.PathLike, chunks: Iterable[list[dict[str, Any]]]) -> int:
    """Write records, chunk by chunk (one unit at a time), to `path` atomically; returns the number written."""
    path = Path(path)
    fmt = table_format(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        for records in chunks:
            if not records:
                continue
            table = pa.Table.from_pylist(records, schema=writer.schema if writer is not None else None)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            n += len(records)
        if writer is None:
            raise BlipError(f"{path}: no records to write")
        writer.close()
    else:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            columns: list[str] | None = None
            for records in chunks:
                for r in records:
                    if fmt == "jsonl":
                        f.write(json.dumps(r, ensure_ascii=False) + "\n")
                    else:
                        if columns is None:
                            columns = list(r)
                            f.write(_row(columns, fmt))
                        f.write(_row([_cell(r.get(c)) for c in columns], fmt))
                    n += 1
    os.replace(tmp, path)
    return n


def _cell(value: Any) -> str:
    """A CSV cell: lists as JSON, missing as empty."""
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


def _row(values: list[str], fmt: str) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n").writerow(values)
    return buf.getvalue()


def sidecar_path(image: str, extension: str) -> Path:
    """The caption file next to an image (kohya / taggui convention: same name, caption extension)."""
    return Path(image).with_suffix(extension if extension.startswith(".") else f".{extension}")


def write_sidecar(image: str, extension: str, text: str) -> None:
    """Write one caption file beside its image, atomically."""
    write_atomic(sidecar_path(image, extension), text + "\n")
