"""The words and facts of the synthetic world: shapes, colours, sizes, backgrounds, positions, relations,
motions, and the per-stream seeds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon")
SHAPE_WORDS = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "star": ("star",),
    "cross": ("cross", "plus sign"),
    "hexagon": ("hexagon",),
}
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 225, 30),
    "purple": (145, 50, 200),
    "orange": (250, 135, 20),
    "white": (252, 252, 252),
    "black": (10, 10, 10),
}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet")}
SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
# Muted backgrounds whose names are not object colours, so "a blue ..." always speaks of an object.
BACKGROUNDS = {
    "gray": (128, 128, 128),
    "beige": (176, 164, 132),
    "brown": (120, 95, 75),
    "teal": (90, 135, 135),
    "olive": (128, 128, 90),
    "slate": (105, 115, 135),
}
TEXTURES = ("plain", "gradient", "striped", "speckled", "checkered")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
# Where-answers for grid cell (row, col).
CELL_NAMES = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))
# Position phrases and the cells they are true of: "on the left" is any cell of the left column, and so on.
POSITIONS = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
    "top left": ("in the top left corner",),
    "top right": ("in the top right corner",),
    "bottom left": ("in the bottom left corner",),
    "bottom right": ("in the bottom right corner",),
}
RELATIONS = {
    "left_of": ("to the left of", "left of"),
    "right_of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
MOTIONS = {
    "left": ("moves to the left", "moves left", "slides left", "goes left"),
    "right": ("moves to the right", "moves right", "slides right", "goes right"),
    "up": ("moves up", "rises", "goes up", "floats up"),
    "down": ("moves down", "falls", "goes down", "drops"),
}
BOILERPLATE = (
    "IMG_{n}.jpg",
    "DSC{n}.JPG",
    "click to enlarge",
    "stock photo",
    "stock photo {n}",
    "view full size",
    "image may contain",
    "untitled",
    "thumbnail",
    "free download",
    "photo {n}",
    "screenshot_{n}.png",
)
NOISE_KINDS = ("other_image", "attribute", "boilerplate", "truncated")
ATTRIBUTES = ("colour", "shape", "count", "position")
CAPTIONS_TRAIN, CAPTIONS_EVAL, QUESTIONS_PER_IMAGE = 3, 5, 3
STREAM_IMAGE, STREAM_WEB, STREAM_NLVR, STREAM_VIDEO = 1, 2, 3, 4


def plural(word: str) -> str:
    """English plural of a shape word."""
    return word + "es" if word.endswith(("s", "x", "sh", "ch")) else word + "s"


def pick(rng: np.random.Generator, options: Iterable[Any]) -> Any:
    """A uniformly chosen element (keeps Python types, unlike rng.choice)."""
    options = list(options)
    return options[int(rng.integers(len(options)))]
