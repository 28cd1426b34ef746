"""What can the demo's tiny ViT learn to see within the demo's step budget? A supervised probe beside a small CNN.

    python benchmarks/vision_probe.py --steps 500 --out runs/vision_probe

Each model is trained from scratch, with labels instead of text, to say which colours, which shapes and which of
the 3x3 grid cells are present in a synthetic-world image (multi-label, binary cross-entropy, batch 48, AdamW
1e-3), then scored by ROC AUC on 1,000 held-out images (0.5 = blind). If the ViT cannot tell shapes apart with
direct labels in N steps, its pretraining on captions cannot either, and neither can a captioner or filter built
on it. The CNN (three 3x3 conv layers with max pooling) is the peer that shows the labels are learnable.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from blip.data.synth import COLOURS, SHAPES, generate
from blip.model.config import preset
from blip.model.vision import VisionEncoder


class SmallCNN(nn.Module):
    """Three conv + max-pool stages and a global max pool: a shape detector's inductive bias."""

    def __init__(self, width: int = 96):
        super().__init__()
        layers, chans = [], [3, 32, 64, width]
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers[:-1], nn.AdaptiveMaxPool2d(1))
        self.width = width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels).flatten(1)


class ViTProbe(nn.Module):
    """The demo's vision tower (tiny preset, depth 2) read at its CLS token, as ITC and ITM read it."""

    def __init__(self, size: int, patch: int):
        super().__init__()
        cfg = preset("tiny", **{"vision.image_size": size, "vision.patch_size": patch, "vision.depth": 2}).vision
        self.vit, self.width = VisionEncoder(cfg), cfg.width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vit(pixels)[:, 0]


def labels(scene: dict) -> list[float]:
    """Multi-hot: colours present, shapes present, grid cells occupied."""
    objs = scene["objects"]
    return (
        [float(any(o["colour"] == c for o in objs)) for c in COLOURS]
        + [float(any(o["shape"] == s for o in objs)) for s in SHAPES]
        + [float(any(o["row"] * 3 + o["col"] == k for o in objs)) for k in range(9)]
    )


def mean_auc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over label columns of P(score of a positive > score of a negative)."""
    aucs = []
    for k in range(y.shape[1]):
        pos, neg = scores[y[:, k] > 0, k], scores[y[:, k] == 0, k]
        aucs.append(
            ((pos[:, None] > neg[None, :]).float().mean() + 0.5 * (pos[:, None] == neg[None, :]).float().mean()).item()
        )
    return sum(aucs) / len(aucs)


def load_world(synth: Path, images: int, seed: int) -> dict:
    """Pixels (normalised), multi-hot labels, label groups and the train / held-out split of a synthetic world."""
    if not (synth / "manifest.json").exists():
        generate(synth, num_images=images, seed=seed, num_videos=0)
    scenes = json.loads((synth / "scenes.json").read_text())
    pixels = torch.stack(
        [
            torch.from_numpy(
                np.asarray(Image.open(synth / "images" / f"{i:06d}.jpg").convert("RGB"), dtype=np.float32) / 255.0
            ).permute(2, 0, 1)
            for i in range(len(scenes))
        ]
    )
    pixels = (pixels - 0.45) / 0.27
    y = torch.tensor([labels(s) for s in scenes])
    groups = {
        "colour": slice(0, len(COLOURS)),
        "shape": slice(len(COLOURS), len(COLOURS) + len(SHAPES)),
        "cell": slice(len(COLOURS) + len(SHAPES), y.shape[1]),
    }
    train, test = torch.arange(len(scenes) - 1000), torch.arange(len(scenes) - 1000, len(scenes))
    return {"pixels": pixels, "y": y, "groups": groups, "train": train, "test": test}


def train_probe(make: Callable[[], nn.Module], world: dict, steps: int, seed: int) -> tuple[dict[str, float], float]:
    """Train a fresh body and linear head for `steps` steps; held-out AUC per label group, and training seconds."""
    pixels, y, train, test = world["pixels"], world["y"], world["train"], world["test"]
    torch.manual_seed(seed)
    body = make()
    head = nn.Linear(body.width, y.shape[1])
    opt = torch.optim.AdamW([*body.parameters(), *head.parameters()], 1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        b = train[torch.randint(len(train), (48,), generator=gen)]
        loss = nn.functional.binary_cross_entropy_with_logits(head(body(pixels[b])), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        scores = torch.cat([head(body(pixels[c])) for c in test.split(250)])
    return {g: mean_auc(scores[:, s], y[test][:, s]) for g, s in world["groups"].items()}, seconds


def print_table(rows: list[tuple[str, dict[str, float], float]], steps: int, size: int) -> None:
    """The probe's figures as a markdown table."""
    print(f"\n{steps} steps of batch 48, {size}-px images, held-out ROC AUC (0.5 = blind):")
    print("| model | colours | shapes | occupied cells | train s |\n|---|---|---|---|---|")
    for name, auc, seconds in rows:
        print(f"| {name} | {auc['colour']:.3f} | {auc['shape']:.3f} | {auc['cell']:.3f} | {seconds:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/vision_probe")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    world = load_world(Path(args.out) / "synth", args.images, args.seed)
    size = world["pixels"].shape[-1]
    models = {
        "ViT 16x16 patches": lambda: ViTProbe(size, 16),
        "ViT 8x8 patches": lambda: ViTProbe(size, 8),
        "CNN": SmallCNN,
    }
    rows = [(name, *train_probe(make, world, args.steps, args.seed)) for name, make in models.items()]
    print_table(rows, args.steps, size)


if __name__ == "__main__":
    main()
