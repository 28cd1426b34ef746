"""NLVR2 statements about a pair of scene graphs, true or false."""

from __future__ import annotations

from typing import Any

import numpy as np

from blip.data.synth.vocabulary import COLOURS, NUMBERS, SHAPES, pick


def _has(scene: dict[str, Any], colour: str | None = None, shape: str | None = None) -> int:
    """Number of objects with the colour and/or shape."""
    return sum(1 for o in scene["objects"] if colour in (None, o["colour"]) and shape in (None, o["shape"]))


def make_statement(left: dict[str, Any], right: dict[str, Any], rng: np.random.Generator) -> tuple[str, bool]:
    """A statement about an image pair and whether it is true; "left"/"right" only ever name the images."""
    side, scene = (("left", left), ("right", right))[int(rng.integers(2))]
    source = pick(rng, (scene, left, right))
    obj = pick(rng, source["objects"])
    colour = obj["colour"] if rng.random() < 0.6 else pick(rng, COLOURS)
    shape = obj["shape"] if rng.random() < 0.6 else pick(rng, SHAPES)
    article = "an" if colour[0] in "aeiou" else "a"
    template = int(rng.integers(6))
    if template == 0:
        return f"the {side} image contains {article} {colour} {shape}", _has(scene, colour, shape) > 0
    if template == 1:
        return f"both images contain a {shape}", _has(left, shape=shape) > 0 and _has(right, shape=shape) > 0
    if template == 2:
        other = "right" if side == "left" else "left"
        more = len(scene["objects"]) > len((right if side == "left" else left)["objects"])
        return f"there are more objects in the {side} image than in the {other} image", more
    if template == 3:
        n = len(scene["objects"]) if rng.random() < 0.5 else int(rng.integers(1, 5))
        noun = "object" if n == 1 else "objects"
        return f"the {side} image has exactly {NUMBERS[n]} {noun}", len(scene["objects"]) == n
    if template == 4:
        total = _has(left, colour=colour) + _has(right, colour=colour)
        n = total if rng.random() < 0.5 else int(rng.integers(0, 5))
        phrase = f"is one {colour} object" if n == 1 else f"are {NUMBERS[n]} {colour} objects"
        return f"there {phrase} in total", total == n
    only = (_has(left, shape=shape) > 0) != (_has(right, shape=shape) > 0)
    return f"exactly one image contains a {shape}", only
