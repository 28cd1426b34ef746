"""Data-layer benchmarks: synthetic-world generation speed and loader throughput with the train transforms.

    python benchmarks/bench_data.py                     # everything, prints a JSON summary
    python benchmarks/bench_data.py --images 10000 --photos 256

Loader images are photo-like 640x480 JPEGs (COCO's typical size; smooth random fields plus grain, ~100 KB),
decoded with blip.images.load_image and put through the reference train transform (RandomResizedCrop bicubic,
flip, RandomAugment 2 ops at magnitude 5, normalisation), one process per measurement, so images/s is per worker.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from blip.data import CountingLoader, PairDataset, PairRecord, collate, train_transform
from blip.data.synth import generate

# GPU consumption assumptions (pairs/s per GPU) used to size the loader.
A100_FP32_224 = 30.0  # BLIP pretraining ran at about 30 pairs/s per A100 in fp32 (from the paper's training times)
MODERN_BF16_224 = 400.0  # assumption: H100-class GPU, bf16, ViT-B pretraining at 224 (three losses, momentum model)
MODERN_BF16_384 = 120.0  # assumption: same GPU fine-tuning at 384 (577 vs 197 tokens: roughly 3x the compute)


def photo_jpeg(rng: np.random.Generator, width: int = 640, height: int = 480) -> bytes:
    """A photo-like JPEG: a smooth random colour field with grain, so it compresses like a photograph."""
    coarse = rng.uniform(0, 255, (height // 16, width // 16, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    grain = rng.normal(0, 10, smooth.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bench_generator(num_images: int, workers: int) -> dict:
    """Seconds to write the synthetic world of `num_images` images."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = generate(out, num_images=num_images, seed=0, noise=0.3, workers=workers)
        seconds = time.perf_counter() - start
    return {
        "images": num_images,
        "videos": manifest["num_videos"],
        "workers": workers,
        "seconds": round(seconds, 2),
        "images_per_s": round(num_images / seconds),
    }


def bench_loader(records: list[PairRecord], size: int, min_scale: float, workers: int, batch: int = 32) -> float:
    """Images/s through PairDataset + train transform with `workers` DataLoader workers (0 = in process)."""
    dataset = PairDataset(records, train_transform(size, min_scale=min_scale))
    loader = CountingLoader(
        DataLoader(
            dataset, batch_size=batch, num_workers=workers, collate_fn=collate, shuffle=True, persistent_workers=False
        ),
        report=False,
    )
    it = iter(loader)
    next(it)  # warm-up: worker start, first decode
    start = time.perf_counter()
    n = sum(b["size"] for b in it)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmarks and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000, help="synthetic images to generate")
    parser.add_argument("--photos", type=int, default=320, help="photo-like JPEGs for the loader benchmark")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for generation")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker uses one thread
    result = {
        "host": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "generator": bench_generator(args.images, args.workers),
    }
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        records = []
        for i in range(args.photos):
            path = Path(tmp, f"{i}.jpg")
            path.write_bytes(photo_jpeg(rng))
            records.append(PairRecord(str(path), ("a photo",), str(i)))
        result["photo_jpeg_kb"] = round(sum(Path(r.image).stat().st_size for r in records) / len(records) / 1024)
        loader = {}
        for size, scale, need in ((224, 0.2, MODERN_BF16_224), (384, 0.5, MODERN_BF16_384)):
            per_worker = bench_loader(records, size, scale, workers=0)
            two = bench_loader(records, size, scale, workers=min(2, os.cpu_count() or 1))
            loader[str(size)] = {
                "min_scale": scale,
                "images_per_s_per_worker": round(per_worker, 1),
                "images_per_s_2_workers": round(two, 1),
                "workers_for_A100_fp32_30_per_s": math.ceil(A100_FP32_224 / per_worker),
                f"workers_for_modern_bf16_{int(need)}_per_s": math.ceil(need / per_worker),
            }
        result["loader"] = loader
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
