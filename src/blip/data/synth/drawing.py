"""Scene graphs drawn as images: textured backgrounds, anti-aliased shapes, JPEG bytes."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from blip.data.synth.vocabulary import BACKGROUNDS, COLOURS


def draw_background(bg: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    """The background as an (size, size, 3) float array."""
    base = np.array(BACKGROUNDS[bg["colour"]], dtype=np.float32)
    a, b, c = bg["params"]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    texture = bg["texture"]
    if texture == "gradient":
        ramp = xx if a < 0.5 else yy
        shade = 0.8 + 0.4 * (ramp if b < 0.5 else 1 - ramp)
    elif texture == "striped":
        period = 0.08 + 0.1 * b
        shade = np.where(((xx if a < 0.5 else yy) / period).astype(int) % 2 == 0, 1.0, 0.85)
    elif texture == "checkered":
        period = 0.1 + 0.1 * b
        shade = np.where(((xx / period).astype(int) + (yy / period).astype(int)) % 2 == 0, 1.0, 0.88)
    else:
        shade = np.ones_like(xx)
    img = base[None, None, :] * shade[..., None] + (c - 0.5) * 20  # per-image brightness jitter
    if texture == "speckled":
        img = img + rng.normal(0, 12, img.shape).astype(np.float32)
    return img


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape centred at (cx, cy) with outer radius r."""
    if shape == "square":
        s = 0.82 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.75 * r), (cx - 0.95 * r, cy + 0.75 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)]
    if shape == "hexagon":
        return [(cx + r * math.cos(math.pi / 3 * k), cy + r * math.sin(math.pi / 3 * k)) for k in range(6)]
    if shape == "star":
        return [
            (
                cx + (r if k % 2 == 0 else 0.45 * r) * math.sin(math.pi / 5 * k),
                cy - (r if k % 2 == 0 else 0.45 * r) * math.cos(math.pi / 5 * k),
            )
            for k in range(10)
        ]
    if shape == "cross":
        w = 0.33 * r
        return [
            (cx - w, cy - r),
            (cx + w, cy - r),
            (cx + w, cy - w),
            (cx + r, cy - w),
            (cx + r, cy + w),
            (cx + w, cy + w),
            (cx + w, cy + r),
            (cx - w, cy + r),
            (cx - w, cy + w),
            (cx - r, cy + w),
            (cx - r, cy - w),
            (cx - w, cy - w),
        ]
    raise ValueError(shape)


def object_geometry(obj: dict[str, Any], size: int) -> tuple[float, float, float]:
    """Centre and radius (in pixels of a `size` image) of an object from its grid cell, jitter and size."""
    cell = size / 3
    r = cell * (0.28 if obj["size"] == "small" else 0.45)
    slack = cell / 2 - r
    return (
        (obj["col"] + 0.5) * cell + obj["jitter"][0] * slack,
        (obj["row"] + 0.5) * cell + obj["jitter"][1] * slack,
        r,
    )


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: str, cx: float, cy: float, r: float) -> None:
    """Draw one filled shape."""
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=fill)


SUPERSAMPLE = 2  # draw at 2x and downsample, for anti-aliased edges


def render_scene(scene: dict[str, Any], size: int, rng: np.random.Generator) -> Image.Image:
    """The RGB image of a scene graph (also fills in each object's pixel bbox)."""
    big = size * SUPERSAMPLE
    canvas = Image.fromarray(np.clip(draw_background(scene["background"], big, rng), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for obj in scene["objects"]:
        cx, cy, r = object_geometry(obj, size)
        draw_shape(draw, obj["shape"], obj["colour"], cx * SUPERSAMPLE, cy * SUPERSAMPLE, r * SUPERSAMPLE)
        obj["bbox"] = [round(cx - r, 1), round(cy - r, 1), round(cx + r, 1), round(cy + r, 1)]
    return canvas.resize((size, size), Image.BOX)


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes at quality 95 without chroma subsampling."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()
