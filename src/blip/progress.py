"""Progress of a long step on stderr: a bar in a terminal, a line every few seconds in a log."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

# Seconds between progress lines when stderr is not a terminal (a log file, a pipe, a batch job).
EVERY_ENV = "BLIP_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0


class Progress:
    """Counts work done; in a terminal a tqdm bar, otherwise one line every `every` seconds (BLIP_PROGRESS_EVERY)."""

    def __init__(
        self,
        total: int,
        what: str,
        unit: str = "img",
        initial: int = 0,
        every: float | None = None,
        stream: TextIO | None = None,
    ):
        self.total, self.what, self.unit, self.n = total, what, unit, initial
        self.stream = stream or sys.stderr
        self.every = float(os.environ.get(EVERY_ENV, DEFAULT_EVERY)) if every is None else every
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=what, file=self.stream)
        self.start = self.last = time.monotonic()
        self.done_at_start = self._last_n = initial

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Add `n` units done; `postfix` (e.g. loss=0.5) is shown beside the count."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(**postfix)
            return
        now = time.monotonic()
        if now - self.last >= self.every:  # so a job shorter than `every` stays silent
            self.last, self._last_n = now, self.n
            self._line(postfix)

    def _line(self, postfix: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.start
        rate = (self.n - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        extra = "".join(f", {k} {v}" for k, v in postfix.items())
        print(
            f"blip: {self.what}: {self.n}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, {elapsed:.0f} s{extra})",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        """End the bar in a terminal; in a log, a last line if the job was long enough to have had lines."""
        if self.bar is not None:
            self.bar.close()
        elif self.last > self.start and self.n != self._last_n:
            self._line({})
