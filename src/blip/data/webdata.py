"""Image-text pairs streamed from webdataset tar shards, img2dataset layout (KEY.jpg|png|webp + KEY.txt + KEY.json).

Pipeline (as open_clip's): shard list -> shuffle seeded by epoch -> split by node (torch.distributed rank when
initialised) -> split by DataLoader worker -> tar to samples with a warn-and-continue handler -> shuffle buffer ->
decode (`blip.images.load_image`) -> transform. A truncated or unreadable shard, a sample without image or text,
a bad image or a non-UTF-8 text each becomes a `Skip` marker, so the count reaches the main process.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from glob import glob
from typing import Any

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from blip.data.robust import SKIPPABLE, DataError, Skip
from blip.data.samples import PairSample
from blip.data.text import pre_caption
from blip.images import load_image

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def _webdataset():
    """Import webdataset lazily (an optional dependency)."""
    try:
        import webdataset
    except ImportError as e:  # pragma: no cover - webdataset is in the test extra
        raise DataError("bad_shard", "tar shards need webdataset: pip install 'blip[data]'") from e
    return webdataset


def expand_shards(urls: str | Sequence[str]) -> list[str]:
    """Shard paths from a list, a brace pattern ("shards/{00000..00099}.tar"), a glob, or a directory of .tar files."""
    if not isinstance(urls, str):
        return [str(u) for u in urls]
    if os.path.isdir(urls):
        return sorted(glob(os.path.join(urls, "*.tar")))
    if any(ch in urls for ch in "*?["):
        return sorted(glob(urls))
    return list(_webdataset().shardlists.expand_urls(urls))


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 when torch.distributed is not initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def truncated_tar(url: str) -> str | None:
    """Why a local tar file is truncated, or None. Python's tarfile reads a cut archive without complaint, but every
    tar writer pads the archive to 512-byte blocks and ends it with two zero blocks."""
    if not os.path.isfile(url):
        return None  # remote or missing: the reader reports what goes wrong
    size = os.path.getsize(url)
    if size % 512:
        return f"truncated tar ({size} bytes is not a whole number of 512-byte blocks)"
    with open(url, "rb") as f:
        f.seek(max(0, size - 1024))
        if size < 1024 or f.read(1024).strip(b"\0"):
            return "truncated tar (no end-of-archive blocks)"
    return None


def decode_sample(
    sample: dict[str, Any], transform: Callable[[Image.Image], torch.Tensor], max_words: int
) -> PairSample | Skip:
    """A PairSample from one raw tar sample (dict of extension -> bytes), or Skip."""
    key = sample.get("__key__", "?")
    where = f"{sample.get('__url__', '?')}:{key}"
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
    text: Any = None
    if "txt" in sample:
        try:
            text = sample["txt"].decode("utf-8")
        except UnicodeDecodeError:
            return Skip("bad_text", f"{where}: caption is not valid UTF-8")
    elif "json" in sample:
        try:
            text = json.loads(sample["json"]).get("caption")
        except (ValueError, AttributeError):
            return Skip("bad_json", f"{where}: .json is not a JSON object")
    if image_ext is None or text is None:
        return Skip("incomplete_sample", f"{where}: has {sorted(k for k in sample if not k.startswith('__'))}")
    caption = pre_caption(text, max_words) if isinstance(text, str) else ""
    if not caption:
        return Skip("empty_text", f"{where}: empty caption")
    try:
        image = load_image(sample[image_ext])
    except SKIPPABLE as e:
        return Skip(getattr(e, "reason", "corrupt"), f"{where}: {e}")
    return PairSample(transform(image), caption, key)


class WebDatasetPairs(IterableDataset):
    """Stream PairSamples (or Skip markers) from tar shards; call `set_epoch` before each pass to reshuffle.

    With `epoch_samples`, each (rank, worker) yields exactly its share of that many items, cycling over its
    shards, so every rank sees the same number of batches (what open_clip's `with_epoch` is for).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
        max_words: int = 30,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        epoch_samples: int | None = None,
    ):
        self.shards = expand_shards(urls)
        if not self.shards:
            raise DataError("missing", f"no tar shards found for {urls!r}")
        self.transform, self.max_words = transform, max_words
        self.shuffle_buffer, self.seed, self.epoch_samples = shuffle_buffer, seed, epoch_samples
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards and samples differently in the next pass."""
        self.epoch = epoch

    def my_shards(self) -> tuple[list[str], int, int]:
        """This (rank, worker)'s shards after the seeded shuffle, with its global slot and the number of slots."""
        rank, world = rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shards = list(self.shards)
        if self.shuffle_buffer:  # shuffle_buffer=0 keeps shard and sample order (evaluation)
            random.Random(self.seed + self.epoch).shuffle(shards)
        slot, slots = rank * workers + worker, world * workers
        if len(shards) < slots:
            # open_clip refuses this; we let short ranks/workers reuse shards rather than stall the others.
            shards = (shards * (slots // len(shards) + 1))[:slots]
        return shards[rank::world][worker::workers], slot, slots

    def _raw(self, shards: list[str], failed: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Raw samples of `shards`; shard-level failures go to `failed` as (reason, message)."""
        wds = _webdataset()
        seen: set[str] = set()

        def handler(exn: Exception) -> bool:
            url = next((a for a in reversed(exn.args) if isinstance(a, str) and a in shards), "?")
            if url not in seen:  # one truncated shard can raise twice (member read, then next header)
                seen.add(url)
                reason = "missing" if isinstance(exn, FileNotFoundError) else "bad_shard"
                failed.append((reason, f"{url}: {type(exn).__name__}: {exn.args[0] if exn.args else ''}"))
            return True

        def sources() -> Iterator[dict[str, str]]:
            for url in shards:
                problem = truncated_tar(url)
                if problem:  # still read it: the samples before the cut are good
                    seen.add(url)
                    failed.append(("bad_shard", f"{url}: {problem}"))
                yield {"url": url}

        yield from wds.tariterators.tarfile_samples(sources(), handler=handler)

    def __iter__(self) -> Iterator[PairSample | Skip]:
        """Decoded samples for this rank and worker, with Skip markers for everything unusable."""
        shards, slot, slots = self.my_shards()
        rng = random.Random(f"{self.seed}-{self.epoch}-{slot}")
        quota = None if self.epoch_samples is None else -(-self.epoch_samples // slots)
        produced = 0
        while True:
            failed: list[tuple[str, str]] = []
            buffer: list[dict[str, Any]] = []
            yielded_any = False
            for raw in self._raw(shards, failed):
                while failed:
                    yield Skip(*failed.pop(0))
                buffer.append(raw)
                if len(buffer) < max(1, self.shuffle_buffer):
                    continue
                sample = buffer.pop(rng.randrange(len(buffer)))
                yield decode_sample(sample, self.transform, self.max_words)
                yielded_any, produced = True, produced + 1
                if quota is not None and produced >= quota:
                    return
            rng.shuffle(buffer)
            for sample in buffer:
                yield decode_sample(sample, self.transform, self.max_words)
                yielded_any, produced = True, produced + 1
                if quota is not None and produced >= quota:
                    return
            for item in failed:
                yield Skip(*item)
            if quota is None or not yielded_any:
                return
