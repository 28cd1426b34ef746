"""Random scene graphs: 1-4 objects in distinct cells of a 3x3 grid, and which positions and relations hold."""

from __future__ import annotations

from typing import Any

import numpy as np

from blip.data.synth.vocabulary import (
    BACKGROUNDS,
    CELL_NAMES,
    COLOURS,
    COLS,
    RELATIONS,
    ROWS,
    SHAPES,
    SIZES,
    TEXTURES,
    pick,
)


def position_true(pos: str, row: int, col: int) -> bool:
    """Whether the position key (a POSITIONS key) holds for grid cell (row, col)."""
    if pos == "center":
        return (row, col) == (1, 1)
    if " " in pos:
        vertical, horizontal = pos.split()
        return row == ROWS.index(vertical) and col == COLS.index(horizontal)
    return {"left": col == 0, "right": col == 2, "top": row == 0, "bottom": row == 2}[pos]


def relation_true(rel: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether object a stands in relation `rel` to object b."""
    return {
        "left_of": a["col"] < b["col"],
        "right_of": a["col"] > b["col"],
        "above": a["row"] < b["row"],
        "below": a["row"] > b["row"],
    }[rel]


def make_scene(rng: np.random.Generator) -> dict[str, Any]:
    """A random scene graph: background and 1-4 objects in distinct cells of a 3x3 grid, with their relations."""
    n = int(rng.integers(1, 5))
    cells = rng.permutation(9)[:n]
    objects: list[dict[str, Any]] = []
    for k in range(n):
        # Reusing a shape or colour already in the scene makes counting questions non-trivial.
        shape = objects[-1]["shape"] if objects and rng.random() < 0.35 else pick(rng, SHAPES)
        colour = objects[-1]["colour"] if objects and rng.random() < 0.35 else pick(rng, COLOURS)
        row, col = divmod(int(cells[k]), 3)
        objects.append(
            {
                "shape": shape,
                "colour": colour,
                "size": pick(rng, SIZES),
                "row": row,
                "col": col,
                "position": CELL_NAMES[row][col],
                "jitter": [float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))],
            }
        )
    relations = [
        [i, rel, j]
        for i, a in enumerate(objects)
        for j, b in enumerate(objects)
        if i != j
        for rel in RELATIONS
        if relation_true(rel, a, b)
    ]
    return {
        "background": {
            "colour": pick(rng, BACKGROUNDS),
            "texture": pick(rng, TEXTURES),
            "params": [float(x) for x in rng.uniform(0, 1, 3)],
        },
        "objects": objects,
        "relations": relations,
    }
