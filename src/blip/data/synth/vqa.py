"""VQA questions about a scene graph, annotators' answers, and the answer list."""

from __future__ import annotations

from typing import Any

import numpy as np

from blip.data.synth.vocabulary import CELL_NAMES, COLOURS, SHAPES, pick, plural


def make_question(scene: dict[str, Any], rng: np.random.Generator) -> tuple[str, str, str]:
    """A (question, answer, type) about the scene: colour, shape, count, existence or position."""
    objs = scene["objects"]
    shapes = [o["shape"] for o in objs]
    colours = [o["colour"] for o in objs]
    while True:
        qtype = pick(rng, ("colour", "shape", "count", "existence", "position"))
        if qtype == "colour":
            unique = [o for o in objs if shapes.count(o["shape"]) == 1]
            if unique:
                o = pick(rng, unique)
                word = pick(rng, ("color", "colour"))
                return (
                    pick(rng, (f"what {word} is the {o['shape']}?", f"which {word} is the {o['shape']}?")),
                    o["colour"],
                    qtype,
                )
        elif qtype == "shape":
            unique = [o for o in objs if colours.count(o["colour"]) == 1]
            if unique:
                o = pick(rng, unique)
                return (
                    pick(
                        rng,
                        (f"what shape is the {o['colour']} object?", f"what is the shape of the {o['colour']} thing?"),
                    ),
                    o["shape"],
                    qtype,
                )
        elif qtype == "count":
            what = pick(rng, ("colour", "shape", "all"))
            if what == "colour":
                c = pick(rng, COLOURS) if rng.random() < 0.3 else pick(rng, colours)
                return f"how many {c} objects are there?", str(colours.count(c)), qtype
            if what == "shape":
                s = pick(rng, SHAPES) if rng.random() < 0.3 else pick(rng, shapes)
                return f"how many {plural(s)} are there?", str(shapes.count(s)), qtype
            return (
                pick(rng, ("how many objects are there?", "how many shapes are in the image?")),
                str(len(objs)),
                qtype,
            )
        elif qtype == "existence":
            if rng.random() < 0.5:
                o = pick(rng, objs)
                c, s = o["colour"], o["shape"]
            else:
                c, s = pick(rng, COLOURS), pick(rng, SHAPES)
            present = any(o["colour"] == c and o["shape"] == s for o in objs)
            article = "an" if c[0] in "aeiou" else "a"
            return f"is there {article} {c} {s}?", "yes" if present else "no", qtype
        else:
            pairs = [(o["colour"], o["shape"]) for o in objs]
            unique = [o for o in objs if pairs.count((o["colour"], o["shape"])) == 1]
            if unique:
                o = pick(rng, unique)
                return f"where is the {o['colour']} {o['shape']}?", o["position"], qtype


ANSWER_ALTERNATIVES = {"purple": "violet", "1": "one", "2": "two", "3": "three", "4": "four", "0": "none"}


def annotator_answers(answer: str, qtype: str, rng: np.random.Generator) -> list[str]:
    """Ten annotator answers: mostly the true one, a few synonyms or mistakes (as VQA annotators disagree)."""
    wrong = {
        "colour": list(COLOURS),
        "shape": list(SHAPES),
        "count": ["0", "1", "2", "3", "4"],
        "existence": ["yes", "no"],
        "position": [n for row in CELL_NAMES for n in row],
    }[qtype]
    answers = [answer] * 10
    for i in rng.permutation(10)[: pick(rng, (0, 0, 0, 0, 1, 1, 2, 3))]:
        alt = ANSWER_ALTERNATIVES.get(answer)
        answers[int(i)] = alt if alt and rng.random() < 0.5 else pick(rng, [w for w in wrong if w != answer])
    return answers


def answer_list() -> list[str]:
    """Every answer a synthetic question can receive (the candidate list for answer ranking)."""
    answers = list(COLOURS) + list(SHAPES) + ["0", "1", "2", "3", "4", "yes", "no"]
    answers += [n for row in CELL_NAMES for n in row] + list(dict.fromkeys(ANSWER_ALTERNATIVES.values()))
    return list(dict.fromkeys(answers))
