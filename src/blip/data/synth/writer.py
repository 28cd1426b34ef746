"""Writes the synthetic world to disk in the real formats (layout in blip/data/synth/__init__.py), in parallel."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from blip.data.synth.drawing import encode_jpeg, render_scene
from blip.data.synth.grammar import make_captions
from blip.data.synth.nlvr2 import make_statement
from blip.data.synth.noise import make_web_text
from blip.data.synth.scenes import make_scene
from blip.data.synth.video import VIDEO_QUESTIONS, make_video_scene, render_video, video_caption, video_question
from blip.data.synth.vocabulary import (
    CAPTIONS_EVAL,
    CAPTIONS_TRAIN,
    QUESTIONS_PER_IMAGE,
    STREAM_IMAGE,
    STREAM_NLVR,
    STREAM_VIDEO,
)
from blip.data.synth.vqa import annotator_answers, answer_list, make_question


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
            questions.append(
                {
                    "question_id": index * QUESTIONS_PER_IMAGE + q,
                    "question": question,
                    "answer": annotator_answers(answer, qtype, rng),
                    "image": path,
                    "dataset": "vqa",
                }
            )
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


def generate(
    out: str | os.PathLike,
    num_images: int = 1000,
    seed: int = 0,
    noise: float = 0.3,
    size: int = 64,
    num_videos: int | None = None,
    workers: int | None = None,
    web_fraction: float = 0.5,
) -> dict[str, Any]:
    """Write the synthetic world to `out` (layout in blip/data/synth/__init__.py) and return its manifest.

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
    train = [
        {"image": scenes[i]["image"], "caption": c.text, "image_id": scenes[i]["image_id"]}
        for i in by_split["train"]
        for c in results[i]["captions"]
    ]
    _dump(out_path, "coco_karpathy_train.json", train, files)
    for name in ("val", "test"):
        _dump(
            out_path,
            f"coco_karpathy_{name}.json",
            [
                {"image": scenes[i]["image"], "caption": [c.text for c in results[i]["captions"]]}
                for i in by_split[name]
            ],
            files,
        )

    web_scenes = [scenes[i] for i in by_split["web"]]
    web_clean = [results[i]["captions"][0] for i in by_split["web"]]
    labels = []
    for k, i in enumerate(by_split["web"]):
        label = make_web_text(k, web_scenes, web_clean, noise, seed)
        labels.append(
            {
                "image": scenes[i]["image"],
                "caption": label["caption"],
                "noisy": label["noisy"],
                "kind": label["kind"],
                "attribute": label["attribute"],
                "clean_caption": web_clean[k].text,
            }
        )
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
            statements.append(
                {
                    "images": [scenes[left]["image"], scenes[right]["image"]],
                    "sentence": sentence,
                    "label": str(label),
                    "identifier": f"{name}-{k}",
                }
            )
        _dump(out_path, f"nlvr2/nlvr_{name}.json", statements, files)

    num_videos = max(4, num_images // 50) if num_videos is None else num_videos
    if num_videos:
        (out_path / "videos").mkdir(exist_ok=True)
        videos = _map(_video_job, [(v, seed, size, str(out_path)) for v in range(num_videos)], workers)
        vsplits = ["test" if v % 5 == 0 else "validate" if v % 10 == 1 else "train" for v in range(num_videos)]
        _dump(out_path, "video_scenes.json", [v["scene"] for v in videos], files)
        info = {
            "videos": [
                {"video_id": v["scene"]["video_id"], "split": s, "video": v["scene"]["video"]}
                for v, s in zip(videos, vsplits)
            ],
            "sentences": [
                {"video_id": v["scene"]["video_id"], "caption": c, "sen_id": 5 * k + j}
                for k, v in enumerate(videos)
                for j, c in enumerate(v["captions"])
            ],
        }
        _dump(out_path, "msrvtt/videodatainfo.json", info, files)
        files["msrvtt/videodatainfo.json"]["records"] = len(info["sentences"])
        _dump(
            out_path,
            "msrvtt/msrvtt_test.jsonl",
            [
                {"clip_name": v["scene"]["video_id"], "caption": v["captions"][0]}
                for v, s in zip(videos, vsplits)
                if s == "test"
            ],
            files,
        )
        for name in ("train", "test"):
            qa = [(v, q) for v, s in zip(videos, vsplits) if s == name for q in v["questions"]]
            _dump(
                out_path,
                f"msrvtt/msrvtt_qa_{name}.json",
                [
                    {"video": f"{v['scene']['video_id']}.mp4", "question": q, "answer": a, "question_id": i}
                    for i, (v, (q, a)) in enumerate(qa)
                ],
                files,
            )

    # One vocabulary for every task of this world (captions, web texts, questions, answers, statements), so a
    # model pretrained here can also spell the VQA answers and NLVR2 statements.
    from blip.tokenizer import Tokenizer

    texts = [
        t
        for rel in files
        if rel.endswith((".json", ".jsonl")) and not rel.startswith(("scenes", "video_scenes", "web_noise_labels"))
        for t in _strings(_load_dumped(out_path / rel))
    ]
    Tokenizer.from_texts(texts).save(out_path / "tokenizer")

    image_bytes = sum((out_path / s["image"]).stat().st_size for s in scenes)
    manifest = {
        "format": "blip-synth",
        "version": 1,
        "seed": seed,
        "noise": noise,
        "image_size": size,
        "num_images": num_images,
        "num_videos": num_videos,
        "splits": sizes,
        "video_root": "videos",
        "noisy_web_texts": sum(lab["noisy"] for lab in labels),
        "images": {"dir": "images", "count": num_images, "bytes": image_bytes},
        "files": dict(sorted(files.items())),
    }
    _dump(out_path, "manifest.json", manifest, {})
    return manifest
