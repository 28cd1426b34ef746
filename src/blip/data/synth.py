"""A synthetic world for running the whole BLIP pipeline on a CPU with no downloads.

Images of 1-4 coloured shapes on varied backgrounds, each with a scene graph, and texts generated from a grammar
that are true of the scene graph (or, in the noisy web split, deliberately not). Everything is written in the
real formats so the real readers read it. Deterministic: every image, video, web text and statement has its own
numpy RNG seeded by (seed, stream, index), so generation runs in parallel and gives the same bytes every time.

On-disk layout under OUT (all paths inside JSON files are relative to OUT, which is the image/video root):

    manifest.json                 what is here: seed, noise rate, image size, split sizes, files with sizes
    images/NNNNNN.jpg             all still images (JPEG, 4:4:4 chroma so colours survive on small shapes)
    scenes.json                   scene graph per image: split, background, objects (shape, colour, size,
                                  row/col in a 3x3 grid, bbox), relations [i, "left_of"|"right_of"|"above"|"below", j]
    coco_karpathy_train.json      [{"image", "caption", "image_id"}], CAPTIONS_TRAIN captions per train image
    coco_karpathy_val.json        [{"image", "caption": [5 texts]}]   (also the retrieval / captioning eval sets)
    coco_karpathy_test.json       [{"image", "caption": [5 texts]}]
    web.json                      [{"image", "caption"}] one alt-text per web image; a fraction NOISE corrupted
    web_noise_labels.json         aligned with web.json: {"image", "caption", "noisy", "kind", "attribute",
                                  "clean_caption"}; ground truth for CapFilt studies; NO training code reads it
    pretrain.json                 [{"image", "caption"}] = Karpathy train pairs + web pairs (the pretraining list)
    vqa/vqa_{train,val,test}.json [{"question_id", "question", "answer": [10 annotator answers], "image",
                                  "dataset": "vqa"}]
    vqa/answer_list.json          every answer the questions can have
    nlvr2/nlvr_{train,dev,test}.json  [{"images": [p0, p1], "sentence", "label": "True"|"False"}]
    videos/videoNNNN.mp4          short clips (8 frames) of moving shapes
    msrvtt/videodatainfo.json     (video root: OUT/videos) official MSRVTT layout: {"videos": [{"video_id", "split"}], "sentences": [...]}
    msrvtt/msrvtt_test.jsonl      BLIP's layout: {"clip_name", "caption"} per line, test videos
    msrvtt/msrvtt_qa_{train,test}.json  MSRVTT-QA layout: [{"video": "videoNNNN.mp4", "question", "answer",
                                  "question_id"}], questions only the motion answers (colour / direction / shape
                                  of a moving object, how many move)
    video_scenes.json             per video: background and moving objects (shape, colour, direction)

Splits: `web_fraction` of the images (default half) form the web split; of the rest, 10% each (at least one) val
and test, the remainder Karpathy train.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------- vocabulary
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
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 225), "yellow": (245, 225, 30),
    "purple": (145, 50, 200), "orange": (250, 135, 20), "white": (252, 252, 252), "black": (10, 10, 10),
}
COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet")}
SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
# Muted backgrounds whose names are not object colours, so "a blue ..." always speaks of an object.
BACKGROUNDS = {"gray": (128, 128, 128), "beige": (176, 164, 132), "brown": (120, 95, 75), "teal": (90, 135, 135),
               "olive": (128, 128, 90), "slate": (105, 115, 135)}
TEXTURES = ("plain", "gradient", "striped", "speckled", "checkered")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
# Where-answers for grid cell (row, col).
CELL_NAMES = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))
# Position phrases and the cells they are true of: "on the left" is any cell of the left column, and so on.
POSITIONS = {
    "left": ("on the left", "on the left side"), "right": ("on the right", "on the right side"),
    "top": ("at the top",), "bottom": ("at the bottom",), "center": ("in the center", "in the middle"),
    "top left": ("in the top left corner",), "top right": ("in the top right corner",),
    "bottom left": ("in the bottom left corner",), "bottom right": ("in the bottom right corner",),
}
RELATIONS = {"left_of": ("to the left of", "left of"), "right_of": ("to the right of", "right of"),
             "above": ("above", "over"), "below": ("below", "under", "beneath")}
OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
MOTIONS = {"left": ("moves to the left", "moves left", "slides left", "goes left"),
           "right": ("moves to the right", "moves right", "slides right", "goes right"),
           "up": ("moves up", "rises", "goes up", "floats up"),
           "down": ("moves down", "falls", "goes down", "drops")}
BOILERPLATE = ("IMG_{n}.jpg", "DSC{n}.JPG", "click to enlarge", "stock photo", "stock photo {n}", "view full size",
               "image may contain", "untitled", "thumbnail", "free download", "photo {n}", "screenshot_{n}.png")
NOISE_KINDS = ("other_image", "attribute", "boilerplate", "truncated")
ATTRIBUTES = ("colour", "shape", "count", "position")
CAPTIONS_TRAIN, CAPTIONS_EVAL, QUESTIONS_PER_IMAGE = 3, 5, 3
STREAM_IMAGE, STREAM_WEB, STREAM_NLVR, STREAM_VIDEO = 1, 2, 3, 4


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
    return {"left_of": a["col"] < b["col"], "right_of": a["col"] > b["col"],
            "above": a["row"] < b["row"], "below": a["row"] > b["row"]}[rel]


def plural(word: str) -> str:
    """English plural of a shape word."""
    return word + "es" if word.endswith(("s", "x", "sh", "ch")) else word + "s"


def _pick(rng: np.random.Generator, options: Iterable[Any]) -> Any:
    """A uniformly chosen element (keeps Python types, unlike rng.choice)."""
    options = list(options)
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------------------------------- scenes
def make_scene(rng: np.random.Generator) -> dict[str, Any]:
    """A random scene graph: background and 1-4 objects in distinct cells of a 3x3 grid, with their relations."""
    n = int(rng.integers(1, 5))
    cells = rng.permutation(9)[:n]
    objects: list[dict[str, Any]] = []
    for k in range(n):
        # Reusing a shape or colour already in the scene makes counting questions non-trivial.
        shape = objects[-1]["shape"] if objects and rng.random() < 0.35 else _pick(rng, SHAPES)
        colour = objects[-1]["colour"] if objects and rng.random() < 0.35 else _pick(rng, COLOURS)
        row, col = divmod(int(cells[k]), 3)
        objects.append({"shape": shape, "colour": colour, "size": _pick(rng, SIZES), "row": row, "col": col,
                        "position": CELL_NAMES[row][col],
                        "jitter": [float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))]})
    relations = [[i, rel, j] for i, a in enumerate(objects) for j, b in enumerate(objects) if i != j
                 for rel in RELATIONS if relation_true(rel, a, b)]
    return {"background": {"colour": _pick(rng, BACKGROUNDS), "texture": _pick(rng, TEXTURES),
                           "params": [float(x) for x in rng.uniform(0, 1, 3)]},
            "objects": objects, "relations": relations}


def _background(bg: dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
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
        return [(cx + (r if k % 2 == 0 else 0.45 * r) * math.sin(math.pi / 5 * k),
                 cy - (r if k % 2 == 0 else 0.45 * r) * math.cos(math.pi / 5 * k)) for k in range(10)]
    if shape == "cross":
        w = 0.33 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    raise ValueError(shape)


def object_geometry(obj: dict[str, Any], size: int) -> tuple[float, float, float]:
    """Centre and radius (in pixels of a `size` image) of an object from its grid cell, jitter and size."""
    cell = size / 3
    r = cell * (0.28 if obj["size"] == "small" else 0.45)
    slack = cell / 2 - r
    return ((obj["col"] + 0.5) * cell + obj["jitter"][0] * slack, (obj["row"] + 0.5) * cell + obj["jitter"][1] * slack, r)


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
    canvas = Image.fromarray(np.clip(_background(scene["background"], big, rng), 0, 255).astype(np.uint8))
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


# ------------------------------------------------------------------------------------------------- grammar
# A caption is rendered from "mentions" (structured claims) so that its truth can be checked and one attribute
# can be flipped: group {"count", "colour", "shape", "size"?, "pos"?}, relation {"a", "rel", "b"} (a, b groups of
# count 1), total {"count"}, background {"colour", "texture"}. Counts are exact: "two red circles" claims that
# exactly two objects are red circles.
def matching(scene: dict[str, Any], m: dict[str, Any]) -> list[dict[str, Any]]:
    """Objects matching a group mention's colour, shape and (if given) size."""
    return [o for o in scene["objects"] if o["colour"] == m["colour"] and o["shape"] == m["shape"]
            and m.get("size") in (None, o["size"])]


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


def _np(rng: np.random.Generator, m: dict[str, Any]) -> str:
    """Noun phrase of a group mention: "two small red circles", "an orange star", "a violet disc"."""
    words = [_pick(rng, SIZE_WORDS[m["size"]])] if m.get("size") else []
    words.append(_pick(rng, COLOUR_WORDS[m["colour"]]))
    noun = _pick(rng, SHAPE_WORDS[m["shape"]])
    if m["count"] == 1:
        det = _pick(rng, ("a", "a", "one"))
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
        g = groups.setdefault((o["colour"], o["shape"]), {"type": "group", "count": 0, "colour": o["colour"],
                                                           "shape": o["shape"], "sizes": set()})
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
        text = _join([_np(rng, g) for g in groups])
        first_plural = groups[0]["count"] > 1
        prefix = _pick(rng, ("", "a picture of ", "an image of ", "a photo of ",
                             "there are " if first_plural else "there is "))
        text = prefix + text
        bgs = [m for m in mentions if m["type"] == "background"]
        return text + (f" on {_background_phrase(bgs[0])}" if bgs else "")
    if kind == "located":
        g = mentions[0]
        np_, pos = _np(rng, g), _pick(rng, POSITIONS[g["pos"]])
        return _pick(rng, (f"{np_} {pos}", f"{pos} there is {np_}", f"{np_} is {pos}", f"there is {np_} {pos}"))
    if kind == "relation":
        m = mentions[0]
        a, b, rel = _np(rng, m["a"]), _np(rng, m["b"]), _pick(rng, RELATIONS[m["rel"]])
        return _pick(rng, (f"{a} {rel} {b}", f"{a} is {rel} {b}", f"there is {a} {rel} {b}"))
    total, bg = mentions[0]["count"], mentions[1]
    noun = _pick(rng, ("objects", "shapes")) if total > 1 else _pick(rng, ("object", "shape"))
    number = NUMBERS[total] if total > 1 else _pick(rng, ("one", "a single"))
    return _pick(rng, (f"{number} {noun} on {_background_phrase(bg)}", f"{_background_phrase(bg)} with {number} {noun}"))


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
    kind = _pick(rng, possible)
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
        g = _pick(rng, singles)
        obj = matching(scene, g)[0]
        true_positions = [p for p in POSITIONS if position_true(p, obj["row"], obj["col"])]
        mentions = [{"type": "group", "count": 1, "colour": g["colour"], "shape": g["shape"],
                     "pos": _pick(rng, true_positions)}]
    elif kind == "relation":
        a, b = _pick(rng, pairs)
        oa, ob = matching(scene, a)[0], matching(scene, b)[0]
        # Objects sit in distinct cells, so they differ in row or column and some relation holds.
        rels = [r for r in RELATIONS if relation_true(r, oa, ob)]
        one = lambda g: {"type": "group", "count": 1, "colour": g["colour"], "shape": g["shape"]}  # noqa: E731
        mentions = [{"type": "relation", "a": one(a), "rel": _pick(rng, rels), "b": one(b)}]
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


# ------------------------------------------------------------------------------------------------ noise
def flip_attribute(scene: dict[str, Any], caption: Caption, attribute: str,
                   rng: np.random.Generator) -> Caption | None:
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
    return _pick(rng, BOILERPLATE).format(n=int(rng.integers(1000, 10000)))


def truncate(text: str, rng: np.random.Generator) -> str:
    """The caption cut short: after one to a third of its words, sometimes mid-word."""
    words = text.split()
    keep = int(rng.integers(1, max(2, len(words) // 3 + 1)))
    cut = " ".join(words[:keep])
    if rng.random() < 0.3 and len(words) > keep and len(words[keep]) > 2:
        cut += " " + words[keep][: int(rng.integers(1, len(words[keep]) - 1))]
    return cut


def make_web_text(index: int, scenes: list[dict[str, Any]], clean: list[Caption], noise: float,
                  seed: int) -> dict[str, Any]:
    """The web alt-text of web image `index` and its ground-truth noise label."""
    rng = np.random.default_rng([seed, STREAM_WEB, index])
    scene, caption = scenes[index], clean[index]
    label = {"noisy": False, "kind": "clean", "attribute": None, "caption": caption.text}
    if rng.random() >= noise:
        return label
    kind = _pick(rng, NOISE_KINDS)
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


# ----------------------------------------------------------------------------------------------------- VQA
def make_question(scene: dict[str, Any], rng: np.random.Generator) -> tuple[str, str, str]:
    """A (question, answer, type) about the scene: colour, shape, count, existence or position."""
    objs = scene["objects"]
    shapes = [o["shape"] for o in objs]
    colours = [o["colour"] for o in objs]
    while True:
        qtype = _pick(rng, ("colour", "shape", "count", "existence", "position"))
        if qtype == "colour":
            unique = [o for o in objs if shapes.count(o["shape"]) == 1]
            if unique:
                o = _pick(rng, unique)
                word = _pick(rng, ("color", "colour"))
                return _pick(rng, (f"what {word} is the {o['shape']}?", f"which {word} is the {o['shape']}?")), \
                    o["colour"], qtype
        elif qtype == "shape":
            unique = [o for o in objs if colours.count(o["colour"]) == 1]
            if unique:
                o = _pick(rng, unique)
                return _pick(rng, (f"what shape is the {o['colour']} object?",
                                   f"what is the shape of the {o['colour']} thing?")), o["shape"], qtype
        elif qtype == "count":
            what = _pick(rng, ("colour", "shape", "all"))
            if what == "colour":
                c = _pick(rng, COLOURS) if rng.random() < 0.3 else _pick(rng, colours)
                return f"how many {c} objects are there?", str(colours.count(c)), qtype
            if what == "shape":
                s = _pick(rng, SHAPES) if rng.random() < 0.3 else _pick(rng, shapes)
                return f"how many {plural(s)} are there?", str(shapes.count(s)), qtype
            return _pick(rng, ("how many objects are there?", "how many shapes are in the image?")), \
                str(len(objs)), qtype
        elif qtype == "existence":
            if rng.random() < 0.5:
                o = _pick(rng, objs)
                c, s = o["colour"], o["shape"]
            else:
                c, s = _pick(rng, COLOURS), _pick(rng, SHAPES)
            present = any(o["colour"] == c and o["shape"] == s for o in objs)
            article = "an" if c[0] in "aeiou" else "a"
            return f"is there {article} {c} {s}?", "yes" if present else "no", qtype
        else:
            pairs = [(o["colour"], o["shape"]) for o in objs]
            unique = [o for o in objs if pairs.count((o["colour"], o["shape"])) == 1]
            if unique:
                o = _pick(rng, unique)
                return f"where is the {o['colour']} {o['shape']}?", o["position"], qtype


ANSWER_ALTERNATIVES = {"purple": "violet", "1": "one", "2": "two", "3": "three", "4": "four", "0": "none"}


def annotator_answers(answer: str, qtype: str, rng: np.random.Generator) -> list[str]:
    """Ten annotator answers: mostly the true one, a few synonyms or mistakes (as VQA annotators disagree)."""
    wrong = {"colour": list(COLOURS), "shape": list(SHAPES), "count": ["0", "1", "2", "3", "4"],
             "existence": ["yes", "no"], "position": [n for row in CELL_NAMES for n in row]}[qtype]
    answers = [answer] * 10
    for i in rng.permutation(10)[: _pick(rng, (0, 0, 0, 0, 1, 1, 2, 3))]:
        alt = ANSWER_ALTERNATIVES.get(answer)
        answers[int(i)] = alt if alt and rng.random() < 0.5 else _pick(rng, [w for w in wrong if w != answer])
    return answers


def answer_list() -> list[str]:
    """Every answer a synthetic question can receive (the candidate list for answer ranking)."""
    answers = list(COLOURS) + list(SHAPES) + ["0", "1", "2", "3", "4", "yes", "no"]
    answers += [n for row in CELL_NAMES for n in row] + list(dict.fromkeys(ANSWER_ALTERNATIVES.values()))
    return list(dict.fromkeys(answers))


# --------------------------------------------------------------------------------------------------- NLVR2
def _has(scene: dict[str, Any], colour: str | None = None, shape: str | None = None) -> int:
    """Number of objects with the colour and/or shape."""
    return sum(1 for o in scene["objects"] if colour in (None, o["colour"]) and shape in (None, o["shape"]))


def make_statement(left: dict[str, Any], right: dict[str, Any], rng: np.random.Generator) -> tuple[str, bool]:
    """A statement about an image pair and whether it is true; "left"/"right" only ever name the images."""
    side, scene = (("left", left), ("right", right))[int(rng.integers(2))]
    source = _pick(rng, (scene, left, right))
    obj = _pick(rng, source["objects"])
    colour = obj["colour"] if rng.random() < 0.6 else _pick(rng, COLOURS)
    shape = obj["shape"] if rng.random() < 0.6 else _pick(rng, SHAPES)
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


# ---------------------------------------------------------------------------------------------------- video
VIDEO_FRAMES = 8
VIDEO_QUESTIONS = 3  # questions drawn per video (repeats dropped)


def make_video_scene(rng: np.random.Generator) -> dict[str, Any]:
    """A background and one or two objects, each moving in one direction."""
    objects = []
    for _ in range(int(rng.integers(1, 3))):
        colour = _pick(rng, [c for c in COLOURS if all(c != o["colour"] for o in objects)])
        objects.append({"shape": _pick(rng, SHAPES), "colour": colour, "direction": _pick(rng, MOTIONS),
                        "start": [float(x) for x in rng.uniform(0.2, 0.8, 2)], "size": _pick(rng, SIZES)})
    return {"background": {"colour": _pick(rng, BACKGROUNDS), "texture": _pick(rng, ("plain", "gradient")),
                           "params": [float(x) for x in rng.uniform(0, 1, 3)]}, "objects": objects}


def render_video(scene: dict[str, Any], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Frames of a video scene: each object travels half the frame along its direction."""
    big = size * SUPERSAMPLE
    background = np.clip(_background(scene["background"], big, rng), 0, 255).astype(np.uint8)
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
        np_ = _np(rng, {"count": 1, "colour": o["colour"], "shape": o["shape"]})
        parts.append(f"{np_} {_pick(rng, MOTIONS[o['direction']])}")
    if len(parts) == 1:
        return parts[0]
    return _pick(rng, (f"{parts[0]} and {parts[1]}", f"{parts[0]} while {parts[1]}"))


def video_question(scene: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """A (question, answer) about the moving objects: the colour, direction or shape of one, or how many move.
    Objects of a video never share a colour, so a colour always singles one out."""
    objs = scene["objects"]
    shapes, directions = [o["shape"] for o in objs], [o["direction"] for o in objs]
    while True:
        qtype = _pick(rng, ("colour", "direction", "shape", "count"))
        if qtype == "colour":
            unique = [o for o in objs if shapes.count(o["shape"]) == 1]
            if unique:
                o = _pick(rng, unique)
                word = _pick(rng, ("color", "colour"))
                return _pick(rng, (f"what {word} is the moving {o['shape']}?",
                                   f"what {word} is the {o['shape']} that moves?")), o["colour"]
        elif qtype == "direction":
            o = _pick(rng, objs)
            return _pick(rng, (f"which direction does the {o['colour']} {o['shape']} move?",
                               f"where does the {o['colour']} object go?")), o["direction"]
        elif qtype == "shape":
            unique = [o for o in objs if directions.count(o["direction"]) == 1]
            if unique:
                o = _pick(rng, unique)
                return _pick(rng, (f"what shape {MOTIONS[o['direction']][0]}?",
                                   f"what shape is the {o['colour']} thing that moves?")), o["shape"]
        else:
            return "how many objects are moving?", str(len(objs))


# -------------------------------------------------------------------------------------------------- driver
def split_sizes(n: int, web_fraction: float = 0.5) -> dict[str, int]:
    """How many images each split gets: `web_fraction` web; of the annotated rest, 10% (at least one) each val
    and test, the remainder train."""
    web = int(n * web_fraction)
    held = max(1, round(0.1 * (n - web)))
    return {"train": max(0, n - web - 2 * held), "val": held, "test": held, "web": web}


def split_of(index: int, sizes: dict[str, int]) -> str:
    """The split of image `index` (consecutive ranges in the order train, val, test, web)."""
    for name in ("train", "val", "test", "web"):
        if index < sizes[name]:
            return name
        index -= sizes[name]
    raise IndexError(index)


def _image_job(args: tuple[int, int, int, str, str]) -> dict[str, Any]:
    """Generate, render and write one image with its captions and questions (runs in a worker process)."""
    index, seed, size, split, out = args
    rng = np.random.default_rng([seed, STREAM_IMAGE, index])
    scene = make_scene(rng)
    image = render_scene(scene, size, rng)
    path = f"images/{index:06d}.jpg"
    Path(out, path).write_bytes(encode_jpeg(image))
    k = {"train": CAPTIONS_TRAIN, "web": 1}.get(split, CAPTIONS_EVAL)
    captions = make_captions(scene, rng, k)
    questions = []
    if split != "web":
        for q in range(QUESTIONS_PER_IMAGE):
            question, answer, qtype = make_question(scene, rng)
            questions.append({"question_id": index * QUESTIONS_PER_IMAGE + q, "question": question,
                              "answer": annotator_answers(answer, qtype, rng), "image": path, "dataset": "vqa"})
    for o in scene["objects"]:
        del o["jitter"]
    scene.update(image=path, image_id=str(index), split=split)
    return {"scene": scene, "captions": captions, "questions": questions}


def _video_job(args: tuple[int, int, int, str]) -> dict[str, Any]:
    """Generate and write one video with five captions and its questions (runs in a worker process)."""
    index, seed, size, out = args
    from blip.data.video import write_video  # PyAV is only needed when videos are asked for

    rng = np.random.default_rng([seed, STREAM_VIDEO, index])
    scene = make_video_scene(rng)
    name = f"video{index:04d}"
    write_video(Path(out, "videos", f"{name}.mp4"), render_video(scene, size, rng))
    captions = []
    for _ in range(50):
        c = video_caption(scene, rng)
        if c not in captions:
            captions.append(c)
        if len(captions) == CAPTIONS_EVAL:
            break
    # Drawn after the captions, so the videos and captions do not depend on whether questions exist.
    questions = list(dict.fromkeys(video_question(scene, rng) for _ in range(VIDEO_QUESTIONS)))
    scene.update(video_id=name, video=f"videos/{name}.mp4")
    return {"scene": scene, "captions": captions, "questions": questions}


def _load_dumped(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def _strings(value: Any) -> Iterator[str]:
    """Every text in a JSON value, leaving out file paths and ids."""
    if isinstance(value, str):
        if "/" not in value and not value.endswith((".jpg", ".png", ".mp4")):
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in ("image", "images", "video", "video_id", "clip_name", "identifier", "image_id", "split"):
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _dump(out: Path, rel: str, data: Any, files: dict[str, Any]) -> None:
    """Write JSON (or JSON lines for a .jsonl name) and record its size and number of records in `files`."""
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".jsonl"):
        text = "".join(json.dumps(row) + "\n" for row in data)
    else:
        text = json.dumps(data, indent=1 if rel == "manifest.json" else None)
    path.write_text(text, encoding="utf-8")
    files[rel] = {"bytes": path.stat().st_size, "records": len(data)}


def _map(func: Any, jobs: list[Any], workers: int) -> list[Any]:
    """Run jobs in a process pool (or inline for one worker), results in job order."""
    if workers <= 1 or len(jobs) < 64:
        return [func(j) for j in jobs]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return pool.map(func, jobs, chunksize=max(16, len(jobs) // (workers * 8)))


def generate(out: str | os.PathLike, num_images: int = 1000, seed: int = 0, noise: float = 0.3, size: int = 64,
             num_videos: int | None = None, workers: int | None = None, web_fraction: float = 0.5) -> dict[str, Any]:
    """Write the synthetic world to `out` (layout in the module docstring) and return its manifest.

    `web_fraction` of the images are web images (one noisy text each); the paper's web data outnumbers its human
    annotations by more than ten to one.
    """
    if num_images < 4:
        raise ValueError("the synthetic world needs at least 4 images (one per split)")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a fraction in [0, 1], got {noise}")
    if not 0.0 <= web_fraction < 1.0:
        raise ValueError(f"web_fraction must be in [0, 1), got {web_fraction}")
    if size < 16 or size % 2:
        raise ValueError(f"image size must be even and at least 16, got {size}")
    out_path = Path(out)
    (out_path / "images").mkdir(parents=True, exist_ok=True)
    workers = workers or min(os.cpu_count() or 1, 8)
    sizes = split_sizes(num_images, web_fraction)
    jobs = [(i, seed, size, split_of(i, sizes), str(out_path)) for i in range(num_images)]
    results = _map(_image_job, jobs, workers)
    scenes = [r["scene"] for r in results]
    files: dict[str, Any] = {}
    _dump(out_path, "scenes.json", scenes, files)

    by_split: dict[str, list[int]] = {name: [] for name in sizes}
    for i, s in enumerate(scenes):
        by_split[s["split"]].append(i)
    train = [{"image": scenes[i]["image"], "caption": c.text, "image_id": scenes[i]["image_id"]}
             for i in by_split["train"] for c in results[i]["captions"]]
    _dump(out_path, "coco_karpathy_train.json", train, files)
    for name in ("val", "test"):
        _dump(out_path, f"coco_karpathy_{name}.json",
              [{"image": scenes[i]["image"], "caption": [c.text for c in results[i]["captions"]]}
               for i in by_split[name]], files)

    web_scenes = [scenes[i] for i in by_split["web"]]
    web_clean = [results[i]["captions"][0] for i in by_split["web"]]
    labels = []
    for k, i in enumerate(by_split["web"]):
        label = make_web_text(k, web_scenes, web_clean, noise, seed)
        labels.append({"image": scenes[i]["image"], "caption": label["caption"], "noisy": label["noisy"],
                       "kind": label["kind"], "attribute": label["attribute"], "clean_caption": web_clean[k].text})
    web = [{"image": lab["image"], "caption": lab["caption"]} for lab in labels]
    _dump(out_path, "web.json", web, files)
    _dump(out_path, "web_noise_labels.json", labels, files)
    _dump(out_path, "pretrain.json", [{"image": t["image"], "caption": t["caption"]} for t in train] + web, files)

    for name in ("train", "val", "test"):
        _dump(out_path, f"vqa/vqa_{name}.json", [q for i in by_split[name] for q in results[i]["questions"]], files)
    _dump(out_path, "vqa/answer_list.json", answer_list(), files)

    for name, split in (("train", "train"), ("dev", "val"), ("test", "test")):
        ids = by_split[split]
        statements = []
        for k in range(len(ids) if len(ids) > 1 else 0):
            rng = np.random.default_rng([seed, STREAM_NLVR, ids[k]])
            left, right = ids[k], ids[(k + 1 + int(rng.integers(len(ids) - 1))) % len(ids)]
            want = bool(rng.random() < 0.5)  # balance true and false statements
            for _ in range(30):
                sentence, label = make_statement(scenes[left], scenes[right], rng)
                if label == want:
                    break
            statements.append({"images": [scenes[left]["image"], scenes[right]["image"]], "sentence": sentence,
                               "label": str(label), "identifier": f"{name}-{k}"})
        _dump(out_path, f"nlvr2/nlvr_{name}.json", statements, files)

    num_videos = max(4, num_images // 50) if num_videos is None else num_videos
    if num_videos:
        (out_path / "videos").mkdir(exist_ok=True)
        videos = _map(_video_job, [(v, seed, size, str(out_path)) for v in range(num_videos)], workers)
        vsplits = ["test" if v % 5 == 0 else "validate" if v % 10 == 1 else "train" for v in range(num_videos)]
        _dump(out_path, "video_scenes.json", [v["scene"] for v in videos], files)
        info = {"videos": [{"video_id": v["scene"]["video_id"], "split": s, "video": v["scene"]["video"]}
                           for v, s in zip(videos, vsplits)],
                "sentences": [{"video_id": v["scene"]["video_id"], "caption": c, "sen_id": 5 * k + j}
                              for k, v in enumerate(videos) for j, c in enumerate(v["captions"])]}
        _dump(out_path, "msrvtt/videodatainfo.json", info, files)
        files["msrvtt/videodatainfo.json"]["records"] = len(info["sentences"])
        _dump(out_path, "msrvtt/msrvtt_test.jsonl",
              [{"clip_name": v["scene"]["video_id"], "caption": v["captions"][0]}
               for v, s in zip(videos, vsplits) if s == "test"], files)
        for name in ("train", "test"):
            qa = [(v, q) for v, s in zip(videos, vsplits) if s == name for q in v["questions"]]
            _dump(out_path, f"msrvtt/msrvtt_qa_{name}.json",
                  [{"video": f"{v['scene']['video_id']}.mp4", "question": q, "answer": a, "question_id": i}
                   for i, (v, (q, a)) in enumerate(qa)], files)

    # One vocabulary for every task of this world (captions, web texts, questions, answers, statements), so a
    # model pretrained here can also spell the VQA answers and NLVR2 statements.
    from blip.tokenizer import Tokenizer

    texts = [t for rel in files if rel.endswith((".json", ".jsonl")) and not rel.startswith(("scenes", "video_scenes", "web_noise_labels"))
             for t in _strings(_load_dumped(out_path / rel))]
    Tokenizer.from_texts(texts).save(out_path / "tokenizer")

    image_bytes = sum((out_path / s["image"]).stat().st_size for s in scenes)
    manifest = {"format": "blip-synth", "version": 1, "seed": seed, "noise": noise, "image_size": size,
                "num_images": num_images, "num_videos": num_videos, "splits": sizes, "video_root": "videos",
                "noisy_web_texts": sum(lab["noisy"] for lab in labels),
                "images": {"dir": "images", "count": num_images, "bytes": image_bytes},
                "files": dict(sorted(files.items()))}
    _dump(out_path, "manifest.json", manifest, {})
    return manifest
