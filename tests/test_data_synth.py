"""The synthetic world: same seed same bytes; texts true (or, when labelled noisy, false) of the scene graphs,
checked by a caption parser written here from the grammar's vocabulary, not by the generator's own truth code."""

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blip.data import (
    SkipCounter,
    read_karpathy_eval,
    read_karpathy_train,
    read_msrvtt,
    read_nlvr2,
    read_pretrain_json,
    read_vqa,
)
from blip.data.synth import (
    BACKGROUNDS,
    COLOUR_WORDS,
    COLOURS,
    NUMBERS,
    POSITIONS,
    RELATIONS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TEXTURES,
    generate,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate(out, num_images=160, seed=7, noise=0.5, num_videos=5, workers=2)
    return out


def load(world, name):
    return json.loads((world / name).read_text())


# ------------------------------------------------------------------------------- independent caption checker
def plural(w):
    return w + "es" if w.endswith(("s", "x", "sh", "ch")) else w + "s"


def alternation(words):
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


COLOUR_OF = {w: c for c, ws in COLOUR_WORDS.items() for w in ws}
SHAPE_OF = {w: s for s, ws in SHAPE_WORDS.items() for w in ws} | {
    plural(w): s for s, ws in SHAPE_WORDS.items() for w in ws
}
SIZE_OF = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
COUNT_OF = {"a": 1, "an": 1, "one": 1, "a single": 1, "two": 2, "three": 3, "four": 4}
NP = re.compile(
    rf"\b({alternation(COUNT_OF)}) (?:({alternation(SIZE_OF)}) )?({alternation(COLOUR_OF)}) "
    rf"({alternation(SHAPE_OF)})\b"
)
POS_OF = {p: key for key, ps in POSITIONS.items() for p in ps}
REL_OF = {p: key for key, ps in RELATIONS.items() for p in ps}
# Cells each position phrase is about, written out from its English meaning (rows/cols 0..2 top/left first).
POS_CELLS = {
    "left": {(r, 0) for r in range(3)},
    "right": {(r, 2) for r in range(3)},
    "top": {(0, c) for c in range(3)},
    "bottom": {(2, c) for c in range(3)},
    "center": {(1, 1)},
    "top left": {(0, 0)},
    "top right": {(0, 2)},
    "bottom left": {(2, 0)},
    "bottom right": {(2, 2)},
}


def caption_holds(caption, scene):
    """Whether every claim the caption makes holds in the scene graph; also how many claims were found."""
    objs = scene["objects"]
    claims = []
    nps = []
    for m in NP.finditer(caption):
        count, size, colour, shape = COUNT_OF[m[1]], SIZE_OF.get(m[2]), COLOUR_OF[m[3]], SHAPE_OF[m[4]]
        match = [o for o in objs if o["colour"] == colour and o["shape"] == shape and size in (None, o["size"])]
        nps.append((m, match))
        claims.append(len(match) == count)
        after = caption[m.end() :]
        before = caption[: m.start()]
        for phrase, key in POS_OF.items():
            if re.match(rf"^ (is )?{phrase}\b", after) or re.search(rf"^{phrase} there is $", before):
                claims.append(all((o["row"], o["col"]) in POS_CELLS[key] for o in match))
    for (m1, a), (m2, b) in zip(nps, nps[1:]):
        between = caption[m1.end() : m2.start()].strip()
        between = between[3:] if between.startswith("is ") else between
        if between in REL_OF:
            rel = REL_OF[between]
            ok = len(a) == 1 and len(b) == 1
            if ok:
                (x,), (y,) = a, b
                ok = {
                    "left_of": x["col"] < y["col"],
                    "right_of": x["col"] > y["col"],
                    "above": x["row"] < y["row"],
                    "below": x["row"] > y["row"],
                }[rel]
            claims.append(ok)
    total = re.search(r"\b(one|a single|two|three|four) (objects?|shapes?)\b", caption)
    if total:
        claims.append(len(objs) == COUNT_OF[total[1]])
    bg = re.search(rf"\b(?:({'|'.join(TEXTURES)}) )?({'|'.join(BACKGROUNDS)}) background\b", caption)
    if bg:
        claims.append(scene["background"]["colour"] == bg[2] and scene["background"]["texture"] == (bg[1] or "plain"))
    return all(claims), len(claims)


# ---------------------------------------------------------------------------------------------------- tests
def digest(folder: Path):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    generate(tmp_path / "a", num_images=40, seed=3, noise=0.4, num_videos=2, workers=1)
    generate(tmp_path / "b", num_images=40, seed=3, noise=0.4, num_videos=2, workers=2)
    generate(tmp_path / "c", num_images=40, seed=4, noise=0.4, num_videos=2, workers=2)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len(a) == 40 + 2 + 20 + 2 and a == b  # images, videos, JSON files, tokenizer (json + vocab)
    assert a.keys() == c.keys() and a["images/000000.jpg"] != c["images/000000.jpg"]


def test_every_clean_caption_is_true_of_its_scene(world):
    scenes = {s["image"]: s for s in load(world, "scenes.json")}
    texts = [(e["image"], e["caption"]) for e in load(world, "coco_karpathy_train.json")]
    for name in ("val", "test"):
        for e in load(world, f"coco_karpathy_{name}.json"):
            assert len(e["caption"]) == 5 and len(set(e["caption"])) >= 3
            texts += [(e["image"], c) for c in e["caption"]]
    texts += [(e["image"], e["clean_caption"]) for e in load(world, "web_noise_labels.json")]
    for image, caption in texts:
        holds, n_claims = caption_holds(caption, scenes[image])
        assert holds and n_claims > 0, (caption, scenes[image]["objects"])


def test_noise_labels(world):
    scenes = {s["image"]: s for s in load(world, "scenes.json")}
    labels = load(world, "web_noise_labels.json")
    web = load(world, "web.json")
    assert [(w["image"], w["caption"]) for w in web] == [(x["image"], x["caption"]) for x in labels]
    kinds = Counter(x["kind"] for x in labels)
    assert 0.3 < sum(x["noisy"] for x in labels) / len(labels) < 0.7
    assert {"clean", "attribute", "boilerplate", "truncated", "other_image"} <= set(kinds)
    clean_texts = {x["clean_caption"] for x in labels}
    for x in labels:
        scene = scenes[x["image"]]
        if x["kind"] == "clean":
            assert x["caption"] == x["clean_caption"] and caption_holds(x["caption"], scene)[0]
        elif x["kind"] == "attribute":
            holds, n_claims = caption_holds(x["caption"], scene)
            assert not holds and n_claims > 0, (x, scene["objects"])
        elif x["kind"] == "other_image":
            assert x["caption"] in clean_texts and not caption_holds(x["caption"], scene)[0]
        elif x["kind"] == "truncated":
            assert x["clean_caption"].startswith(x["caption"]) and len(x["caption"]) < len(x["clean_caption"])
        else:
            assert caption_holds(x["caption"], scene)[1] == 0  # boilerplate says nothing about the image
    # The pretraining list is the human-style train captions plus the web texts, noise and all.
    pre = load(world, "pretrain.json")
    assert len(pre) == len(load(world, "coco_karpathy_train.json")) + len(web) and pre[-len(web) :] == web


def test_pixels_show_the_objects_of_the_scene_graph(world):
    for scene in load(world, "scenes.json")[:60]:
        img = np.asarray(Image.open(world / scene["image"]).convert("RGB")).astype(int)
        for o in scene["objects"]:
            x0, y0, x1, y1 = o["bbox"]
            px = img[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            assert np.abs(px - np.array(COLOURS[o["colour"]])).max() < 40, (o, px)
            assert o["row"] == min(2, int((y0 + y1) / 2 / (img.shape[0] / 3)))
            assert o["col"] == min(2, int((x0 + x1) / 2 / (img.shape[1] / 3)))


def answer_from_scene(question, scene):
    objs = scene["objects"]
    if m := re.match(r"(?:what|which) colou?r is the (\w+)\?", question):
        return next(o["colour"] for o in objs if o["shape"] == m[1])
    if m := re.match(r"what (?:shape is|is the shape of) the (\w+) (?:object|thing)\?", question):
        return next(o["shape"] for o in objs if o["colour"] == m[1])
    if m := re.match(r"how many (\w+) objects are there\?", question):
        return str(sum(o["colour"] == m[1] for o in objs))
    if re.match(r"how many (objects are there|shapes are in the image)\?", question):
        return str(len(objs))
    if m := re.match(r"how many (\w+) are there\?", question):
        return str(sum(plural(o["shape"]) == m[1] for o in objs))
    if m := re.match(r"is there an? (\w+) (\w+)\?", question):
        return "yes" if any(o["colour"] == m[1] and o["shape"] == m[2] for o in objs) else "no"
    m = re.match(r"where is the (\w+) (\w+)\?", question)
    (o,) = [o for o in objs if o["colour"] == m[1] and o["shape"] == m[2]]
    return {
        (0, 0): "top left",
        (0, 1): "top",
        (0, 2): "top right",
        (1, 0): "left",
        (1, 1): "center",
        (1, 2): "right",
        (2, 0): "bottom left",
        (2, 1): "bottom",
        (2, 2): "bottom right",
    }[(o["row"], o["col"])]


def test_vqa_majority_answer_is_the_scene_graph_answer(world):
    scenes = {s["image"]: s for s in load(world, "scenes.json")}
    answers = set(load(world, "vqa/answer_list.json"))
    types = Counter()
    for q in load(world, "vqa/vqa_train.json") + load(world, "vqa/vqa_test.json"):
        assert len(q["answer"]) == 10 and set(q["answer"]) <= answers
        majority = Counter(q["answer"]).most_common(1)[0][0]
        assert majority == answer_from_scene(q["question"], scenes[q["image"]]), q
        types[q["question"].split()[0]] += 1
    assert {"what", "how", "is", "where"} <= set(types)


def test_nlvr2_labels_are_true_of_the_pair_and_balanced(world):
    scenes = {s["image"]: s for s in load(world, "scenes.json")}
    statements = load(world, "nlvr2/nlvr_train.json")
    for st in statements:
        left, right = (scenes[p]["objects"] for p in st["images"])
        side = {"left": left, "right": right}
        s = st["sentence"]
        if m := re.match(r"the (left|right) image contains an? (\w+) (\w+)$", s):
            truth = any(o["colour"] == m[2] and o["shape"] == m[3] for o in side[m[1]])
        elif m := re.match(r"both images contain a (\w+)$", s):
            truth = all(any(o["shape"] == m[1] for o in objs) for objs in (left, right))
        elif m := re.match(r"exactly one image contains a (\w+)$", s):
            truth = sum(any(o["shape"] == m[1] for o in objs) for objs in (left, right)) == 1
        elif m := re.match(r"there are more objects in the (left|right) image than in the (left|right) image$", s):
            truth = len(side[m[1]]) > len(side[m[2]])
        elif m := re.match(r"the (left|right) image has exactly (\w+) objects?$", s):
            truth = len(side[m[1]]) == NUMBERS.index(m[2])
        else:
            m = re.match(r"there (?:is|are) (\w+) (\w+) objects? in total$", s)
            truth = sum(o["colour"] == m[2] for o in left + right) == NUMBERS.index(m[1])
        assert st["label"] == str(truth), st
    share = sum(st["label"] == "True" for st in statements) / len(statements)
    assert 0.3 < share < 0.7


def test_the_real_readers_read_the_world_without_skips(world):
    counter = SkipCounter()
    train = read_karpathy_train(world / "coco_karpathy_train.json", world, counter)
    test = read_karpathy_eval(world / "coco_karpathy_test.json", world, counter)
    vqa = read_vqa(world / "vqa/vqa_val.json", world, counter)
    nlvr = read_nlvr2(world / "nlvr2/nlvr_dev.json", world, counter)
    pre = read_pretrain_json(world / "pretrain.json", world, counter)
    videos = read_msrvtt(world / "msrvtt/videodatainfo.json", world / "videos", counter=counter)
    blip_videos = read_msrvtt(world / "msrvtt/msrvtt_test.jsonl", world / "videos", counter=counter)
    manifest = load(world, "manifest.json")
    assert counter.total_skipped == 0
    assert len(train) == 3 * manifest["splits"]["train"] and len(test.images) == manifest["splits"]["test"]
    assert (
        len(test.texts) == 5 * len(test.images)
        and vqa
        and nlvr
        and len(pre) == manifest["files"]["pretrain.json"]["records"]
    )
    assert len(videos) == 5 and all(len(v.captions) >= 3 for v in videos) and Path(videos[0].video).exists()
    assert [v.video_id for v in blip_videos] == ["video0000"]
