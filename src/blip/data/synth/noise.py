"""Noisy web texts: another image's caption, one attribute flipped, boilerplate, or a truncated caption."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from blip.data.synth.grammar import Caption, caption_true, render
from blip.data.synth.vocabulary import (
    ATTRIBUTES,
    BOILERPLATE,
    COLOURS,
    NOISE_KINDS,
    OPPOSITE,
    POSITIONS,
    SHAPES,
    STREAM_WEB,
    pick,
)


def flip_attribute(scene: dict[str, Any], caption: Caption, attribute: str, rng: np.random.Generator) -> Caption | None:
    """The caption with one attribute (colour, shape, count, position) changed so that it is false; None if the
    caption has no such attribute."""
    mentions = json.loads(json.dumps(caption.mentions))  # deep copy
    candidates: list[tuple[dict[str, Any], str]] = []
    for m in mentions:
        if m["type"] == "group":
            candidates.append((m, "group"))
        elif m["type"] == "relation":
            candidates += [(m["a"], "group"), (m["b"], "group"), (m, "relation")]
        elif m["type"] == "total":
            candidates.append((m, "total"))
    options: list[tuple[dict[str, Any], str, Any]] = []
    for target, kind in candidates:
        if attribute in ("colour", "shape") and kind == "group":
            values = COLOURS if attribute == "colour" else SHAPES
            options += [(target, attribute, v) for v in values if v != target[attribute]]
        elif attribute == "count" and kind in ("group", "total") and target.get("pos") is None:
            options += [(target, "count", n) for n in range(1, 5) if n != target["count"]]
        elif attribute == "position" and kind == "group" and target.get("pos"):
            options += [(target, "pos", p) for p in POSITIONS if p != target["pos"]]
        elif attribute == "position" and kind == "relation":
            options.append((target, "rel", OPPOSITE[target["rel"]]))
    order = rng.permutation(len(options)) if options else []
    for i in order:
        target, key, value = options[int(i)]
        old = target[key]
        target[key] = value
        if not caption_true(scene, mentions):
            return Caption(render(caption.form, mentions, caption.seed), caption.form, mentions, caption.seed)
        target[key] = old
    return None


def boilerplate(rng: np.random.Generator) -> str:
    """A web alt-text that says nothing about the image."""
    return pick(rng, BOILERPLATE).format(n=int(rng.integers(1000, 10000)))


def truncate(text: str, rng: np.random.Generator) -> str:
    """The caption cut short: after one to a third of its words, sometimes mid-word."""
    words = text.split()
    keep = int(rng.integers(1, max(2, len(words) // 3 + 1)))
    cut = " ".join(words[:keep])
    if rng.random() < 0.3 and len(words) > keep and len(words[keep]) > 2:
        cut += " " + words[keep][: int(rng.integers(1, len(words[keep]) - 1))]
    return cut


def make_web_text(
    index: int, scenes: list[dict[str, Any]], clean: list[Caption], noise: float, seed: int
) -> dict[str, Any]:
    """The web alt-text of web image `index` and its ground-truth noise label."""
    rng = np.random.default_rng([seed, STREAM_WEB, index])
    scene, caption = scenes[index], clean[index]
    label = {"noisy": False, "kind": "clean", "attribute": None, "caption": caption.text}
    if rng.random() >= noise:
        return label
    kind = pick(rng, NOISE_KINDS)
    if kind == "other_image" and len(clean) > 1:
        for _ in range(20):  # another image's caption that happens to be true here would not be noise
            other = int(rng.integers(len(clean)))
            if other != index and not caption_true(scene, clean[other].mentions):
                return {**label, "noisy": True, "kind": kind, "caption": clean[other].text}
    if kind == "attribute":
        for attribute in [ATTRIBUTES[int(i)] for i in rng.permutation(len(ATTRIBUTES))]:
            flipped = flip_attribute(scene, caption, attribute, rng)
            if flipped is not None:
                return {**label, "noisy": True, "kind": kind, "attribute": attribute, "caption": flipped.text}
    if kind == "truncated" and len(caption.text.split()) > 2:
        return {**label, "noisy": True, "kind": kind, "caption": truncate(caption.text, rng)}
    return {**label, "noisy": True, "kind": "boilerplate", "caption": boilerplate(rng)}
