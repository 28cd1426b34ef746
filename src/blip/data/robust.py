"""Skip bad samples instead of dying, count them by reason, and report the counts at the end.

Datasets never raise on a bad sample: they return a `Skip` marker. `collate` (which runs inside DataLoader workers)
drops the markers and puts their reasons in the batch; `CountingLoader` (in the main process) adds them to a
`SkipCounter`, so the counts survive worker processes. Readers count bad annotation lines into the same counter.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from blip.errors import BlipError, ImageError

log = logging.getLogger("blip.data")

# Reasons used across the data layer (ImageError adds: missing, empty, not_image, truncated, corrupt, too_large).
REASONS = {
    "missing": "file not found",
    "empty": "zero-byte file",
    "not_image": "not an image",
    "truncated": "truncated image",
    "corrupt": "corrupt image",
    "too_large": "over the decompression-bomb limit",
    "bad_json": "line or entry that is not valid JSON / lacks required fields",
    "bad_text": "text that is not valid UTF-8",
    "empty_text": "empty caption or question",
    "bad_shard": "truncated or unreadable tar shard",
    "incomplete_sample": "tar sample without an image or a text",
    "bad_video": "video that cannot be decoded",
}


class DataError(BlipError):
    """A sample or file that cannot be used; `reason` is one of REASONS (same shape as ImageError)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# Errors a dataset turns into a Skip; anything else is a bug and propagates.
SKIPPABLE = (ImageError, DataError)


@dataclass(frozen=True)
class Skip:
    """Marker a dataset returns in place of a sample it could not produce."""

    reason: str
    message: str


def skip_from(error: BaseException) -> Skip:
    """The Skip marker for a skippable error."""
    return Skip(getattr(error, "reason", "corrupt"), str(error))


class SkipCounter:
    """Counts used and skipped samples by reason, keeping a few example messages per reason."""

    def __init__(self, examples_per_reason: int = 3):
        self.used = 0
        self.skipped: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self._keep = examples_per_reason

    def skip(self, reason: str, message: str = "") -> None:
        """Record one skipped sample; the first occurrence of each reason is logged."""
        if self.skipped[reason] == 0:
            log.warning("skipping bad sample (%s): %s", reason, message)
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if message and len(kept) < self._keep:
            kept.append(message)

    def ok(self, n: int = 1) -> None:
        """Record `n` samples used."""
        self.used += n

    def merge(self, other: SkipCounter) -> None:
        """Add another counter's counts into this one."""
        self.used += other.used
        for reason, n in other.skipped.items():
            self.skipped[reason] += n
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: max(0, self._keep - len(kept))])

    @property
    def total_skipped(self) -> int:
        """Number of skipped samples, all reasons together."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """Counts as plain data (for logs and JSON)."""
        return {"used": self.used, "skipped": dict(sorted(self.skipped.items())), "examples": self.examples}

    def load(self, state: dict[str, Any]) -> None:
        """Restore counts saved with as_dict, so a resumed job keeps counting where it stopped."""
        self.used = int(state["used"])
        self.skipped = Counter({k: int(v) for k, v in state["skipped"].items()})
        self.examples = {k: list(v) for k, v in state["examples"].items()}

    def summary(self) -> str:
        """One line: how many samples were used and skipped, by reason."""
        if not self.skipped:
            return f"{self.used} samples used, none skipped"
        parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        return f"{self.used} samples used, {self.total_skipped} skipped ({parts})"


# --------------------------------------------------------------------------------------------------- batching
def _stack(values: list[Any]) -> Any:
    """Stack tensors, turn numbers into a tensor, leave everything else (texts, ids, answer lists) as a list."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, bool) or isinstance(first, int):
        return torch.tensor(values, dtype=torch.long)
    if isinstance(first, float):
        return torch.tensor(values, dtype=torch.float)
    return values


def collate(batch: list[Any]) -> dict[str, Any]:
    """Batch dataclass samples field by field, dropping Skip markers and listing their (reason, message) pairs."""
    samples = [s for s in batch if not isinstance(s, Skip)]
    out: dict[str, Any] = {"skipped": [(s.reason, s.message) for s in batch if isinstance(s, Skip)]}
    out["size"] = len(samples)
    if samples:
        for f in dataclasses.fields(samples[0]):
            out[f.name] = _stack([getattr(s, f.name) for s in samples])
    return out


class CountingLoader:
    """Wraps a DataLoader built with `collate`: counts skips in the main process, drops empty batches.

    A pass raises DataError when more than `max_skip_fraction` of at least `min_samples` samples were bad:
    one bad sample must never stop a long job, but a wrong image root (everything missing) should.
    """

    def __init__(
        self,
        loader: Iterable[dict[str, Any]],
        counter: SkipCounter | None = None,
        max_skip_fraction: float = 0.5,
        min_samples: int = 200,
        report: bool = True,
    ):
        self.loader = loader
        self.counter = counter if counter is not None else SkipCounter()
        self.max_skip_fraction = max_skip_fraction
        self.min_samples = min_samples
        self.report = report

    def __len__(self) -> int:
        """Number of batches of the wrapped loader (an upper bound: empty batches are dropped)."""
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield non-empty batches, counting skipped samples."""
        for batch in self.loader:
            for reason, message in batch["skipped"]:
                self.counter.skip(reason, message)
            self.counter.ok(batch["size"])
            seen = self.counter.used + self.counter.total_skipped
            if seen >= self.min_samples and self.counter.total_skipped > self.max_skip_fraction * seen:
                raise DataError("too_many_bad", f"most samples are bad, check the data paths: {self.counter.summary()}")
            if batch["size"]:
                yield batch
        if self.report:
            print(f"data: {self.counter.summary()}", file=sys.stderr)
