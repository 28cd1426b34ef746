"""Read and write short videos with PyAV; frames are sampled uniformly as in BLIP's zero-shot video evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from blip.data.robust import DataError


def _av():
    """Import PyAV lazily, so the rest of the data layer works without it."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is in the test extra
        raise DataError("bad_video", "reading videos needs PyAV: pip install 'blip[video]'") from e
    return av


def uniform_indices(num_frames_in_video: int, num_frames: int) -> list[int]:
    """Indices the reference samples: floor(i * len / k) for i < k (repeats frames when the video is short)."""
    return [int(i * num_frames_in_video / num_frames) for i in range(num_frames)]


def count_frames(path: str | Path) -> int:
    """Number of video frames; decodes the stream when the container does not say (webm)."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def load_frames(path: str | Path, num_frames: int = 8) -> list[Image.Image]:
    """`num_frames` RGB frames sampled uniformly from the video at `path`; raises DataError if unusable."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise DataError("missing", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError("empty", f"{path}: empty file (0 bytes)")
    try:
        total = count_frames(path)
        if total == 0:
            raise DataError("bad_video", f"{path}: no video frames")
        wanted = uniform_indices(total, num_frames)
        frames: dict[int, Image.Image] = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    frames[i] = frame.to_image().convert("RGB")
                if i >= wanted[-1]:
                    break
    except DataError:
        raise
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as e:  # IndexError: no video stream
        raise DataError("bad_video", f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
    if not frames:
        raise DataError("bad_video", f"{path}: no decodable frames")
    # A container may announce more frames than it decodes; reuse the last decoded frame for missing indices.
    last = frames[max(frames)]
    return [frames.get(i, last) for i in wanted]


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 8) -> None:
    """Write RGB uint8 frames (H, W, 3; even sizes) as an H.264 mp4 (MPEG-4 part 2 if libx264 is missing)."""
    av = _av()
    height, width = frames[0].shape[:2]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            # One encoder thread and x264's plain C code keep the bytes identical from run to run: with its
            # AVX-512 routines (on by default where the CPU has them) the same frames encode differently in
            # about one video in three from one process to the next (tests/test_synth_determinism.py).
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": "asm=0"}
        stream.thread_count = 1
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
