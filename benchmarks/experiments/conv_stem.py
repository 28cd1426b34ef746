"""Experiment, not adopted: a convolutional stem in place of the ViT's 8-px patch projection (Xiao et al. 2021,
"Early convolutions help transformers see better"), scored with the supervised probe of benchmarks/vision_probe.py.

    python benchmarks/experiments/conv_stem.py --steps 500 --threads 1 --out runs/vision_probe

The stem is three 3x3 stride-2 convolutions (24, 48, 96 channels, GELU, He initialisation) and a 1x1 projection
to the ViT width, so it gives the same 8x8-pixel token grid as the patch projection it replaces. It lives here, as an
option of this script, not in the library. The probe trains the demo's vision tower (tiny preset, depth 2) with the
conv stem, beside the same tower with 8-px patches and the probe's small CNN, in one run with the same data, steps
and seed; BENCHMARKS.md has the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vision_probe import SmallCNN, ViTProbe, load_world, print_table, train_probe  # noqa: E402


class ConvStem(nn.Module):
    """(B, 3, H, W) -> (B, H/8 * W/8, width) tokens, as timm's PatchEmbed returns them."""

    def __init__(self, width: int, channels: tuple[int, ...] = (24, 48, 96)):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((3, *channels[:-1]), channels):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            # With PyTorch's default initialisation the stem's output is about ten times smaller than the patch
            # projection's, and the [CLS] output hardly depends on the image; He initialisation keeps the scale.
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(channels[-1], width, 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(pixels)).flatten(2).transpose(1, 2)


def conv_stem_vit(size: int) -> ViTProbe:
    """The probe's 8-px ViT with its patch projection replaced by the conv stem."""
    probe = ViTProbe(size, 8)
    probe.vit.patch_embed = ConvStem(probe.width)
    return probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/vision_probe")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--stem",
        choices=("conv", "all"),
        default="all",
        help="conv: the conv-stem ViT only; all: beside the 8-px patch ViT and the CNN (default)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    world = load_world(Path(args.out) / "synth", args.images, args.seed)
    size = world["pixels"].shape[-1]
    models = {"ViT conv stem": lambda: conv_stem_vit(size)}
    if args.stem == "all":
        models = {"ViT 8x8 patches": lambda: ViTProbe(size, 8), **models, "CNN": SmallCNN}
    rows = [(name, *train_probe(make, world, args.steps, args.seed)) for name, make in models.items()]
    print_table(rows, args.steps, size)


if __name__ == "__main__":
    main()
