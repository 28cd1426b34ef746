"""Short videos of moving shapes: scenes, frames, captions and MSRVTT-QA questions."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from blip.data.synth.drawing import SUPERSAMPLE, draw_background, draw_shape
from blip.data.synth.grammar import noun_phrase
from blip.data.synth.vocabulary import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES, pick

VIDEO_FRAMES = 8
VIDEO_QUESTIONS = 3  # questions drawn per video (repeats dropped)


def make_video_scene(rng: np.random.Generator) -> dict[str, Any]:
    """A background and one or two objects, each moving in one direction."""
    objects = []
    for _ in range(int(rng.integers(1, 3))):
        colour = pick(rng, [c for c in COLOURS if all(c != o["colour"] for o in objects)])
        objects.append(
            {
                "shape": pick(rng, SHAPES),
                "colour": colour,
                "direction": pick(rng, MOTIONS),
                "start": [float(x) for x in rng.uniform(0.2, 0.8, 2)],
                "size": pick(rng, SIZES),
            }
        )
    return {
        "background": {
            "colour": pick(rng, BACKGROUNDS),
            "texture": pick(rng, ("plain", "gradient")),
            "params": [float(x) for x in rng.uniform(0, 1, 3)],
        },
        "objects": objects,
    }


def render_video(scene: dict[str, Any], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames of a video scene: each object travels half the frame along its direction."""
    big = size * SUPERSAMPLE
    background = np.clip(draw_background(scene["background"], big, rng), 0, 255).astype(np.uint8)
    step = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    frames = []
    for t in range(VIDEO_FRAMES):
        canvas = Image.fromarray(background)
        draw = ImageDraw.Draw(canvas)
        for o in scene["objects"]:
            dx, dy = step[o["direction"]]
            frac = 0.5 * t / (VIDEO_FRAMES - 1) - 0.25  # from -1/4 to +1/4 of the frame around the start
            cx, cy = (o["start"][0] + dx * frac) * big, (o["start"][1] + dy * frac) * big
            r = big * (0.08 if o["size"] == "small" else 0.13)
            draw_shape(draw, o["shape"], o["colour"], cx, cy, r)
        frames.append(np.asarray(canvas.resize((size, size), Image.BOX)))
    return frames


def video_caption(scene: dict[str, Any], rng: np.random.Generator) -> str:
    """A caption of a video scene: what moves where."""
    parts = []
    for o in scene["objects"]:
        np_ = noun_phrase(rng, {"count": 1, "colour": o["colour"], "shape": o["shape"]})
        parts.append(f"{np_} {pick(rng, MOTIONS[o['direction']])}")
    if len(parts) == 1:
        return parts[0]
    return pick(rng, (f"{parts[0]} and {parts[1]}", f"{parts[0]} while {parts[1]}"))


def video_question(scene: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """A (question, answer) about the moving objects: the colour, direction or shape of one, or how many move.
    Objects of a video never share a colour, so a colour always singles one out."""
    objs = scene["objects"]
    shapes, directions = [o["shape"] for o in objs], [o["direction"] for o in objs]
    while True:
        qtype = pick(rng, ("colour", "direction", "shape", "count"))
        if qtype == "colour":
            unique = [o for o in objs if shapes.count(o["shape"]) == 1]
            if unique:
                o = pick(rng, unique)
                word = pick(rng, ("color", "colour"))
                return pick(
                    rng, (f"what {word} is the moving {o['shape']}?", f"what {word} is the {o['shape']} that moves?")
                ), o["colour"]
        elif qtype == "direction":
            o = pick(rng, objs)
            return pick(
                rng,
                (
                    f"which direction does the {o['colour']} {o['shape']} move?",
                    f"where does the {o['colour']} object go?",
                ),
            ), o["direction"]
        elif qtype == "shape":
            unique = [o for o in objs if directions.count(o["direction"]) == 1]
            if unique:
                o = pick(rng, unique)
                return pick(
                    rng,
                    (f"what shape {MOTIONS[o['direction']][0]}?", f"what shape is the {o['colour']} thing that moves?"),
                ), o["shape"]
        else:
            return "how many objects are moving?", str(len(objs))
