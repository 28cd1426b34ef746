"""ITM Grad-CAM: where in the image the image-grounded encoder looks when it decides that a text matches.

As BLIP's demo and LAVIS's `compute_gradcam` define it: the gradient of the ITM match logit with respect to one
layer's cross-attention probabilities, clamped at zero, times those probabilities, averaged over heads, giving a
map over the patch grid for every text position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from blip.errors import BlipError
from blip.model.blip import BlipModel

BLUR_SIDE = 160


@dataclass
class GradCam:
    """Grad-CAM of one (image, text) pair over the patch grid (rows, cols), and the pair's ITM match probability.

    `enc` is the map at [ENC] (position 0), `mean` the mean over the real tokens (between [ENC] and [SEP]), and
    `per_token[i]` the map of `tokens[i]`.
    """

    tokens: list[str]
    enc: torch.Tensor
    mean: torch.Tensor
    per_token: torch.Tensor
    itm: float
    layer: int

    def heatmap(self, size: tuple[int, int], which: str | int = "mean") -> np.ndarray:
        """The chosen map ('mean', 'enc' or a token index) upsampled to (width, height), scaled to [0, 1]."""
        return upsample(self.select(which), size)

    def select(self, which: str | int) -> torch.Tensor:
        """The map named by `which`: 'mean', 'enc' or a token index into `tokens`."""
        if which == "mean":
            return self.mean
        if which == "enc":
            return self.enc
        if isinstance(which, int) and -len(self.tokens) <= which < len(self.tokens):
            return self.per_token[which]
        raise BlipError(f"Grad-CAM map {which!r}: expected 'mean', 'enc' or a token index below {len(self.tokens)}")


def default_layer(model: BlipModel) -> int:
    """The layer LAVIS uses (index 6 of 12), scaled to the model's depth, and never the last one."""
    # Only [ENC] of the last layer reaches the ITM head, so there every other token's map is zero.
    layers = model.cfg.text.layers
    return max(0, min(layers // 2, layers - 2))


def itm_gradcam(
    model: BlipModel, image_embeds: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps (B, T, rows, cols) at every text position from ViT tokens (B, 1 + patches, width), and the
    ITM logits (B, 2). Padding positions get zero maps; only the recorded probabilities receive gradients.
    """
    layers = model.text_encoder.encoder.layer
    if not 0 <= layer < len(layers):
        raise BlipError(f"Grad-CAM layer {layer} does not exist: the text encoder has layers 0-{len(layers) - 1}")
    attention = layers[layer].crossattention
    attention.record_probs = []
    try:
        with torch.enable_grad():
            logits = model.itm_logits(image_embeds, ids, mask)
            (probs,) = attention.record_probs
            (grads,) = torch.autograd.grad(logits[:, 1].sum(), probs)
    finally:
        attention.record_probs = None
    b, heads, t, n = probs.shape
    grid = model.cfg.vision.image_size // model.cfg.vision.patch_size
    if n - 1 != grid * grid:
        raise BlipError(f"Grad-CAM expects {grid}x{grid} patches plus [CLS], the model attends to {n} image tokens")
    keep = mask[:, None, :, None, None].to(probs.dtype)
    cams = probs[..., 1:].reshape(b, heads, t, grid, grid) * keep
    grads = grads[..., 1:].clamp(min=0).reshape(b, heads, t, grid, grid) * keep
    return (cams * grads).mean(dim=1).detach(), logits.detach()


def split_maps(maps: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pair's (T, rows, cols) maps -> ([ENC] map, mean over the length - 2 real tokens, the real tokens' maps)."""
    real = maps[1 : length - 1]
    mean = real.mean(dim=0) if len(real) else torch.zeros_like(maps[0])
    return maps[0], mean, real


def upsample(grid_map: torch.Tensor, size: tuple[int, int], blur: bool = True) -> np.ndarray:
    """A (rows, cols) map resized to (width, height) bilinearly, blurred as LAVIS's overlay does, scaled to [0, 1]."""
    width, height = size
    heat = torch.from_numpy(_unit(grid_map.detach().float().cpu().numpy()))[None, None]
    if blur:  # LAVIS smooths the upsampled map with a Gaussian of sigma 2% of the image's larger side
        # Blurred at most BLUR_SIDE pixels wide, then resized: a smooth map looks the same, at a fraction of the cost.
        scale = min(1.0, BLUR_SIDE / max(size))
        work = (max(1, round(height * scale)), max(1, round(width * scale)))
        heat = F.interpolate(heat, size=work, mode="bilinear", align_corners=False)
        heat = _gaussian_blur(heat, 0.02 * max(work))
    heat = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)
    return _unit(heat[0, 0].numpy().astype(np.float64))


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, H, W) map, edges reflected (two 1-D passes: fast at any sigma)."""
    for dim in (2, 3):
        radius = min(int(3 * sigma), x.shape[dim] - 1)  # reflect padding must stay inside the map
        if radius < 1:
            continue
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
        shape = (1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1)
        pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
        x = F.conv2d(F.pad(x, pad, mode="reflect"), (taps / taps.sum()).view(shape))
    return x


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with a jet-coloured heat map (same size, values in [0, 1]), hotter parts more opaque."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    level = np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8)  # 256 levels, as a colour map table has
    weight = (alpha * np.linspace(0, 1, 256, dtype=np.float32) ** 0.7)[level][..., None]  # as LAVIS's getAttMap
    mixed = (1 - weight) * rgb + weight * _JET_TABLE[level]
    return Image.fromarray(np.clip(np.rint(mixed * 255), 0, 255).astype(np.uint8), mode="RGB")


# Matplotlib's 'jet' as (position, value) knots per channel, so the overlay needs no matplotlib.
_JET = (
    ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
    ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
    ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)),
)


def jet(x: np.ndarray) -> np.ndarray:
    """The 'jet' colour map: RGB in [0, 1] (trailing axis of 3) for values in [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return np.stack([np.interp(x, *zip(*knots)) for knots in _JET], axis=-1)


_JET_TABLE = jet(np.linspace(0, 1, 256)).astype(np.float32)


def _unit(a: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]; a constant map becomes all zeros."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
