"""Captions rendered from structured claims ("mentions") about a scene graph, so their truth can be checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from blip.data.synth.scenes import position_true, relation_true
from blip.data.synth.vocabulary import (
    COLOUR_WORDS,
    NUMBERS,
    POSITIONS,
    RELATIONS,
    SHAPE_WORDS,
    SIZE_WORDS,
    pick,
    plural,
)


# A caption is rendered from "mentions" (structured claims) so that its truth can be checked and one attribute
# can be flipped: group {"count", "colour", "shape", "size"?, "pos"?}, relation {"a", "rel", "b"} (a, b groups of
# count 1), total {"count"}, background {"colour", "texture"}. Counts are exact: "two red circles" claims that
# exactly two objects are red circles.
def matching(scene: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    """Objects matching a group mention's colour, shape and (if given) size."""
    return [
        o
        for o in scene["objects"]
        if o["colour"] == m["colour"] and o["shape"] == m["shape"] and m.get("size") in (None, o["size"])
    ]


def mention_true(scene: dict[str, Any], m: dict[str, Any]) -> bool:
    """Whether one mention is true of the scene graph."""
    kind = m["type"]
    if kind == "total":
        return len(scene["objects"]) == m["count"]
    if kind == "background":
        return scene["background"]["colour"] == m["colour"] and scene["background"]["texture"] == m["texture"]
    if kind == "relation":
        a, b = matching(scene, m["a"]), matching(scene, m["b"])
        return len(a) == 1 and len(b) == 1 and relation_true(m["rel"], a[0], b[0])
    objs = matching(scene, m)
    return len(objs) == m["count"] and all(position_true(m["pos"], o["row"], o["col"]) for o in objs if m.get("pos"))


def caption_true(scene: dict[str, Any], mentions: list[dict[str, Any]]) -> bool:
    """A caption is true when all its mentions are."""
    return all(mention_true(scene, m) for m in mentions)


def noun_phrase(rng: np.random.Generator, m: dict[str, Any]) -> str:
    """Noun phrase of a group mention: "two small red circles", "an orange star", "a violet disc"."""
    words = [pick(rng, SIZE_WORDS[m["size"]])] if m.get("size") else []
    words.append(pick(rng, COLOUR_WORDS[m["colour"]]))
    noun = pick(rng, SHAPE_WORDS[m["shape"]])
    if m["count"] == 1:
        det = pick(rng, ("a", "a", "one"))
        det = "an" if det == "a" and words[0][0] in "aeiou" else det
        return " ".join([det, *words, noun])
    return " ".join([NUMBERS[m["count"]], *words, plural(noun)])


def _background_phrase(m: dict[str, Any]) -> str:
    """ "a striped teal background" (plain backgrounds have no texture word)."""
    words = f"{'' if m['texture'] == 'plain' else m['texture'] + ' '}{m['colour']} background"
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _groups(scene: dict[str, Any]) -> list[dict[str, Any]]:
    """Group mentions for every (colour, shape) in the scene, in order of first appearance, with exact counts."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for o in scene["objects"]:
        g = groups.setdefault(
            (o["colour"], o["shape"]),
            {"type": "group", "count": 0, "colour": o["colour"], "shape": o["shape"], "sizes": set()},
        )
        g["count"] += 1
        g["sizes"].add(o["size"])
    return list(groups.values())


def _join(parts: list[str]) -> str:
    """ "a, b and c"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def render(form: dict[str, Any], mentions: list[dict[str, Any]], seed: int) -> str:
    """The caption text for a form and its mentions; the same seed gives the same words and order."""
    rng = np.random.default_rng(seed)
    kind = form["kind"]
    if kind == "inventory":
        groups = [m for m in mentions if m["type"] == "group"]
        text = _join([noun_phrase(rng, g) for g in groups])
        first_plural = groups[0]["count"] > 1
        prefix = pick(
            rng, ("", "a picture of ", "an image of ", "a photo of ", "there are " if first_plural else "there is ")
        )
        text = prefix + text
        bgs = [m for m in mentions if m["type"] == "background"]
        return text + (f" on {_background_phrase(bgs[0])}" if bgs else "")
    if kind == "located":
        g = mentions[0]
        np_, pos = noun_phrase(rng, g), pick(rng, POSITIONS[g["pos"]])
        return pick(rng, (f"{np_} {pos}", f"{pos} there is {np_}", f"{np_} is {pos}", f"there is {np_} {pos}"))
    if kind == "relation":
        m = mentions[0]
        a, b, rel = noun_phrase(rng, m["a"]), noun_phrase(rng, m["b"]), pick(rng, RELATIONS[m["rel"]])
        return pick(rng, (f"{a} {rel} {b}", f"{a} is {rel} {b}", f"there is {a} {rel} {b}"))
    total, bg = mentions[0]["count"], mentions[1]
    noun = pick(rng, ("objects", "shapes")) if total > 1 else pick(rng, ("object", "shape"))
    number = NUMBERS[total] if total > 1 else pick(rng, ("one", "a single"))
    return pick(rng, (f"{number} {noun} on {_background_phrase(bg)}", f"{_background_phrase(bg)} with {number} {noun}"))


@dataclass
class Caption:
    """A generated caption: its text, the form and mentions it was rendered from, and the rendering seed."""

    text: str
    form: dict[str, Any]
    mentions: list[dict[str, Any]]
    seed: int


def make_caption(scene: dict[str, Any], rng: np.random.Generator, kinds: tuple[str, ...] | None = None) -> Caption:
    """A true caption of the scene, of a random kind (inventory, located, relation, count)."""
    groups = _groups(scene)
    singles = [g for g in groups if g["count"] == 1]
    possible = ["inventory", "inventory", "count"]
    if singles:
        possible.append("located")
    pairs = [(a, b) for a in singles for b in singles if a is not b]
    if pairs:
        possible += ["relation", "relation"]
    if kinds is not None:
        possible = [k for k in possible if k in kinds] or possible
    kind = pick(rng, possible)
    bg = {"type": "background", **{k: scene["background"][k] for k in ("colour", "texture")}}
    mentions: list[dict[str, Any]]
    if kind == "inventory":
        mentions = []
        for g in groups:
            m = {k: g[k] for k in ("type", "count", "colour", "shape")}
            if len(g["sizes"]) == 1 and rng.random() < 0.4:
                m["size"] = next(iter(g["sizes"]))
            mentions.append(m)
        if rng.random() < 0.3:
            mentions.append(bg)
    elif kind == "located":
        g = pick(rng, singles)
        obj = matching(scene, g)[0]
        true_positions = [p for p in POSITIONS if position_true(p, obj["row"], obj["col"])]
        mentions = [
            {"type": "group", "count": 1, "colour": g["colour"], "shape": g["shape"], "pos": pick(rng, true_positions)}
        ]
    elif kind == "relation":
        a, b = pick(rng, pairs)
        oa, ob = matching(scene, a)[0], matching(scene, b)[0]
        # Objects sit in distinct cells, so they differ in row or column and some relation holds.
        rels = [r for r in RELATIONS if relation_true(r, oa, ob)]
        one = lambda g: {"type": "group", "count": 1, "colour": g["colour"], "shape": g["shape"]}  # noqa: E731
        mentions = [{"type": "relation", "a": one(a), "rel": pick(rng, rels), "b": one(b)}]
    else:
        mentions = [{"type": "total", "count": len(scene["objects"])}, bg]
    form = {"kind": kind}
    seed = int(rng.integers(2**31))
    return Caption(render(form, mentions, seed), form, mentions, seed)


def make_captions(scene: dict[str, Any], rng: np.random.Generator, k: int) -> list[Caption]:
    """`k` true captions of the scene, distinct where the grammar allows."""
    out: list[Caption] = []
    for _ in range(20 * k):
        c = make_caption(scene, rng)
        if all(c.text != o.text for o in out):
            out.append(c)
        if len(out) == k:
            break
    while len(out) < k:  # a tiny scene may have fewer distinct captions than asked for
        out.append(make_caption(scene, rng))
    return out
