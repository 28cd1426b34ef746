"""Readers for the annotation formats BLIP users bring; each returns light records (see `blip.data.samples`).

Formats (paths inside annotation files are relative to the `image_root` / `video_root` argument):
- pretraining JSON list: `[{"image": path, "caption": text or [texts]}]`
- COCO / Flickr30k Karpathy train: `[{"image": path, "caption": text, "image_id": id}]`;
  val/test: `[{"image": path, "caption": [texts]}]`
- VQA v2 + VG QA, BLIP JSON: `[{"question_id", "question", "answer": [answers] (VG: one), "image", "dataset"}]`;
  answer list: JSON list of strings; VQA v2 official: questions `{"data_subtype", "questions": [...]}`
  and annotations `{"annotations": [{"question_id", "answers": [{"answer"}...]}]}`
- NLVR2, BLIP JSON: `[{"images": [p0, p1], "sentence", "label": "True"|"False"}]`; official JSONL with
  `identifier`, `sentence`, `label` (and `directory` in train)
- MSRVTT: BLIP JSONL `{"clip_name", "caption"}` per line, or the official `{"videos": [...], "sentences": [...]}`
- MSRVTT-QA / MSVD-QA: JSON list or JSONL of `{"video": "video7010.mp4"` or `"video_id": "video7010"`
  (an integer N is MSRVTT's videoN), `"question", "answer": text or [texts], "question_id"` or `"id"}`
- tables: CSV/TSV with a header, or JSONL, with an image column (image, filepath, path, file) and a text
  column (caption, text, title)

Bad entries (not JSON, missing fields, non-UTF-8 or empty text) are skipped and counted in `counter`.
A file that cannot be read at all raises DataError.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from blip.data.robust import DataError, SkipCounter
from blip.data.samples import NLVR2Record, PairRecord, RetrievalSet, VideoRecord, VQARecord

IMAGE_COLUMNS = ("image", "filepath", "path", "file", "image_path")
TEXT_COLUMNS = ("caption", "text", "title")
VG_ANSWER_WEIGHT = 0.2  # the reference's weight for Visual Genome QA answers


def _counter(counter: SkipCounter | None) -> SkipCounter:
    """The given counter, or a throwaway one."""
    return counter if counter is not None else SkipCounter()


def _join(root: str | os.PathLike, rel: str) -> str:
    """Join an annotation's path onto the root (absolute paths are kept)."""
    return rel if not root or os.path.isabs(rel) else os.path.join(str(root), rel)


def _read_text(path: str | os.PathLike) -> str:
    """Read a file as UTF-8, keeping invalid bytes as surrogates so that one bad entry does not lose the file."""
    p = Path(path)
    if not p.exists():
        raise DataError("missing", f"{p}: no such annotation file")
    return p.read_bytes().decode("utf-8", errors="surrogateescape")


def load_json(path: str | os.PathLike) -> Any:
    """Parse a whole JSON file; a file that is not JSON raises DataError."""
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError("bad_json", f"{path}: not valid JSON ({e})") from None


def _load_json_list(path: str | os.PathLike) -> list[Any]:
    """Parse a JSON file that must hold a list."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError("bad_json", f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def iter_jsonl(path: str | os.PathLike, counter: SkipCounter | None = None) -> Iterator[dict[str, Any]]:
    """Objects of a JSON-lines file; blank lines are ignored, bad lines counted and skipped."""
    c = _counter(counter)
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            c.skip("bad_json", f"{path}:{lineno}: {e}")
            continue
        if not isinstance(obj, dict):
            c.skip("bad_json", f"{path}:{lineno}: expected a JSON object")
            continue
        yield obj


def clean_text(value: Any, where: str, counter: SkipCounter) -> str | None:
    """`value` if it is a usable text; otherwise count why (bad_text / empty_text / bad_json) and return None."""
    if not isinstance(value, str):
        counter.skip("bad_json" if value is not None else "empty_text", f"{where}: text is {type(value).__name__}")
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogates stand for bytes that were not UTF-8
        counter.skip("bad_text", f"{where}: text is not valid UTF-8")
        return None
    if not value.strip():
        counter.skip("empty_text", f"{where}: empty text")
        return None
    return value


def _path_field(entry: Any, key: str, where: str, counter: SkipCounter) -> str | None:
    """A required string path field of a dict entry, or None (counted as bad_json)."""
    if not isinstance(entry, dict) or not isinstance(entry.get(key), str) or not entry[key]:
        counter.skip("bad_json", f"{where}: missing or invalid '{key}'")
        return None
    try:
        entry[key].encode("utf-8")
    except UnicodeEncodeError:
        counter.skip("bad_text", f"{where}: path is not valid UTF-8")
        return None
    return entry[key]


def _texts(value: Any, where: str, counter: SkipCounter) -> tuple[str, ...]:
    """Usable texts from a string or a list of strings; unusable ones are counted."""
    values = value if isinstance(value, list) else [value]
    return tuple(t for i, v in enumerate(values) if (t := clean_text(v, f"{where}[{i}]", counter)) is not None)


# ------------------------------------------------------------------------------------------- image-text pairs
def _captioned_images(
    path: str | os.PathLike, image_root: str | os.PathLike, c: SkipCounter
) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """(image path, usable captions, image_id) per entry with a usable image field; the rest are counted."""
    for i, entry in enumerate(_load_json_list(path)):
        where = f"{path}[{i}]"
        image = _path_field(entry, "image", where, c)
        if image is not None:
            yield _join(image_root, image), _texts(entry.get("caption"), where, c), str(entry.get("image_id", image))


def read_pretrain_json(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[PairRecord]:
    """The pretraining JSON list; an entry's caption may be a list (one is drawn per visit)."""
    return [
        PairRecord(image, texts, image_id)
        for image, texts, image_id in _captioned_images(path, image_root, _counter(counter))
        if texts
    ]


def read_karpathy_train(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[PairRecord]:
    """A COCO or Flickr30k Karpathy train file: one record per caption, captions of an image share its image_id."""
    return [
        PairRecord(image, (text,), image_id)
        for image, texts, image_id in _captioned_images(path, image_root, _counter(counter))
        for text in texts
    ]


def image_id_from_path(path: str) -> str:
    """COCO-style id of an image file: the trailing number of its name (COCO_val2014_000000391895.jpg -> 391895)."""
    stem = Path(path).stem
    match = re.search(r"(\d+)$", stem)
    return str(int(match.group(1))) if match else stem


def read_karpathy_eval(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> RetrievalSet:
    """A Karpathy val/test file as a retrieval set (texts in file order, each mapped to its image and back)."""
    c = _counter(counter)
    out = RetrievalSet(images=[], image_ids=[], texts=[], txt2img=[], img2txt=[])
    for i, entry in enumerate(_load_json_list(path)):
        where = f"{path}[{i}]"
        image = _path_field(entry, "image", where, c)
        if image is None:
            continue
        texts = _texts(entry.get("caption"), where, c)
        if not texts:
            continue
        index = len(out.images)
        out.images.append(_join(image_root, image))
        out.image_ids.append(str(entry["image_id"]) if "image_id" in entry else image_id_from_path(image))
        out.img2txt.append(list(range(len(out.texts), len(out.texts) + len(texts))))
        out.texts.extend(texts)
        out.txt2img.extend([index] * len(texts))
    return out


def read_table(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[PairRecord]:
    """A CSV/TSV (with header) or JSONL file of image path and caption; column names as in IMAGE/TEXT_COLUMNS."""
    c = _counter(counter)
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows: Iterator[dict[str, Any]] = iter_jsonl(path, c)
    else:
        rows = csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    records = []
    image_key = text_key = None
    for i, row in enumerate(rows):
        where = f"{path}:{i + 1}"
        if image_key is None:
            image_key = next((k for k in IMAGE_COLUMNS if k in row), None)
            text_key = next((k for k in TEXT_COLUMNS if k in row), None)
            if image_key is None or text_key is None:
                raise DataError(
                    "bad_json",
                    f"{path}: needs an image column {IMAGE_COLUMNS} and a text column "
                    f"{TEXT_COLUMNS}, found {sorted(row)}",
                )
        image = _path_field(row, image_key, where, c)
        text = clean_text(row.get(text_key), where, c) if image is not None else None
        if image is not None and text is not None:
            records.append(PairRecord(_join(image_root, image), (text,), image))
    return records


# ------------------------------------------------------------------------------------------------------- VQA
def answer_weights(answers: list[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Distinct answers with weight = share of annotators who gave each (the reference's VQA training targets)."""
    counts = Counter(answers)
    return tuple(counts), tuple(n / len(answers) for n in counts.values())


def read_vqa(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[VQARecord]:
    """BLIP's VQA JSON (VQA v2 or VG QA entries; VG answers weigh 0.2; test entries have no answers)."""
    c = _counter(counter)
    records = []
    for i, entry in enumerate(_load_json_list(path)):
        where = f"{path}[{i}]"
        image = _path_field(entry, "image", where, c)
        question = clean_text(entry.get("question"), where, c) if image is not None else None
        if image is None or question is None:
            continue
        source = entry.get("dataset", "vqa")
        raw = entry.get("answer", [])
        given = [a for a in (raw if isinstance(raw, list) else [raw]) if isinstance(a, str) and a.strip()]
        if source == "vg":
            answers, weights = tuple(given), tuple(VG_ANSWER_WEIGHT for _ in given)
        else:
            answers, weights = answer_weights(given) if given else ((), ())
        qid = str(entry.get("question_id", f"{Path(path).stem}-{i}"))
        records.append(VQARecord(_join(image_root, image), question, answers, weights, qid, source))
    return records


def read_vqa_official(
    questions_path: str | os.PathLike,
    annotations_path: str | os.PathLike | None = None,
    image_root: str | os.PathLike = "",
    counter: SkipCounter | None = None,
) -> list[VQARecord]:
    """VQA v2 as downloaded (questions JSON, optional annotations JSON); images at SUBTYPE/COCO_SUBTYPE_<id:012>.jpg."""
    c = _counter(counter)
    qdata = load_json(questions_path)
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise DataError("bad_json", f"{questions_path}: not a VQA questions file (no 'questions' list)")
    subtype = qdata.get("data_subtype", "")
    answers_by_qid: dict[Any, list[str]] = {}
    if annotations_path is not None:
        adata = load_json(annotations_path)
        if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
            raise DataError("bad_json", f"{annotations_path}: not a VQA annotations file (no 'annotations' list)")
        for ann in adata["annotations"]:
            if isinstance(ann, dict) and isinstance(ann.get("answers"), list):
                answers_by_qid[ann.get("question_id")] = [
                    a["answer"] for a in ann["answers"] if isinstance(a, dict) and isinstance(a.get("answer"), str)
                ]
    records = []
    for i, q in enumerate(qdata["questions"]):
        where = f"{questions_path}[{i}]"
        if not isinstance(q, dict) or not isinstance(q.get("image_id"), int) or "question_id" not in q:
            c.skip("bad_json", f"{where}: needs image_id and question_id")
            continue
        question = clean_text(q.get("question"), where, c)
        if question is None:
            continue
        image = f"{subtype}/COCO_{subtype}_{q['image_id']:012d}.jpg"
        given = answers_by_qid.get(q["question_id"], [])
        answers, weights = answer_weights(given) if given else ((), ())
        records.append(VQARecord(_join(image_root, image), question, answers, weights, str(q["question_id"])))
    return records


def read_answer_list(path: str | os.PathLike) -> list[str]:
    """The candidate answer list for ranking: a JSON list of strings, or a text file of one answer a line."""
    text = _read_text(path)
    if text.lstrip().startswith("["):  # an answer cannot start with "[", so this is meant as JSON
        answers = _load_json_list(path)
        if not all(isinstance(a, str) for a in answers):
            raise DataError("bad_json", f"{path}: the answer list must hold strings only")
    else:
        answers = [line.strip() for line in text.splitlines() if line.strip()]
    if not answers:
        raise DataError("empty_text", f"{path}: the answer list is empty")
    return answers


# ----------------------------------------------------------------------------------------------------- NLVR2
def _label(value: Any) -> bool | None:
    """NLVR2 label from "True"/"False" (any case) or a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _nlvr2_official_images(entry: dict[str, Any]) -> tuple[str, str]:
    """Image paths of an official NLVR2 JSONL entry: SPLIT[/DIRECTORY]/PREFIX-img0.png and -img1.png."""
    identifier = entry["identifier"]
    split, prefix = identifier.split("-", 1)[0], identifier.rsplit("-", 1)[0]
    folder = f"{split}/{entry['directory']}" if "directory" in entry else split
    return f"{folder}/{prefix}-img0.png", f"{folder}/{prefix}-img1.png"


def read_nlvr2(
    path: str | os.PathLike, image_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[NLVR2Record]:
    """NLVR2 statements over image pairs, from BLIP's JSON list or the official JSONL."""
    c = _counter(counter)
    official = Path(path).suffix.lower() == ".jsonl"
    entries = list(iter_jsonl(path, c)) if official else _load_json_list(path)
    records = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        if official:
            ok = isinstance(entry.get("identifier"), str) and entry["identifier"].count("-") >= 2
            images = _nlvr2_official_images(entry) if ok else None
        else:
            raw = entry.get("images") if isinstance(entry, dict) else None
            ok = isinstance(raw, list) and len(raw) == 2 and all(isinstance(p, str) for p in raw)
            images = (raw[0], raw[1]) if ok else None
        label = _label(entry.get("label")) if isinstance(entry, dict) else None
        if images is None or label is None:
            c.skip("bad_json", f"{where}: needs two images and a True/False label")
            continue
        statement = clean_text(entry.get("sentence"), where, c)
        if statement is None:
            continue
        pair_id = str(entry.get("identifier", f"{Path(path).stem}-{i}"))
        records.append(
            NLVR2Record((_join(image_root, images[0]), _join(image_root, images[1])), statement, label, pair_id)
        )
    return records


# ---------------------------------------------------------------------------------------------------- MSRVTT
def _video_path(video_root: str | os.PathLike, name: str) -> str:
    """Path of a video named in an annotation (the reference appends .mp4 to bare clip names)."""
    return _join(video_root, name if Path(name).suffix else f"{name}.mp4")


def read_msrvtt(
    path: str | os.PathLike,
    video_root: str | os.PathLike = "",
    split: str | None = None,
    counter: SkipCounter | None = None,
) -> list[VideoRecord]:
    """MSRVTT captions grouped by video, from BLIP's JSONL or the official videodatainfo JSON (optionally one split)."""
    c = _counter(counter)
    captions: OrderedDict[str, list[str]] = OrderedDict()
    if Path(path).suffix.lower() == ".jsonl":
        for i, entry in enumerate(iter_jsonl(path, c)):
            name = _path_field(entry, "clip_name", f"{path}:{i + 1}", c)
            text = clean_text(entry.get("caption"), f"{path}:{i + 1}", c) if name else None
            if name and text is not None:
                captions.setdefault(name, []).append(text)
    else:
        data = load_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise DataError("bad_json", f"{path}: not an MSRVTT videodatainfo file (no 'sentences' list)")
        videos = [v for v in data.get("videos", []) if isinstance(v, dict) and "video_id" in v]
        # Without a video list every captioned video is kept (a split needs the list).
        keep = {v["video_id"] for v in videos if split is None or v.get("split") == split} if videos else None
        for v in videos:  # the file's video order, not the order of first caption
            if keep is None or v["video_id"] in keep:
                captions.setdefault(v["video_id"], [])
        for i, s in enumerate(data["sentences"]):
            name = _path_field(s, "video_id", f"{path}:sentences[{i}]", c)
            if name is None or (keep is not None and name not in keep):
                continue
            text = clean_text(s.get("caption"), f"{path}:sentences[{i}]", c)
            if text is not None:
                captions.setdefault(name, []).append(text)
    return [
        VideoRecord(_video_path(video_root, name), tuple(texts), Path(name).stem)
        for name, texts in captions.items()
        if texts
    ]


# ------------------------------------------------------------------------------------------ MSRVTT-QA, MSVD-QA
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv")


def _qa_video_path(video_root: str | os.PathLike, name: str | int) -> str:
    """Video file of a QA entry: an integer id is MSRVTT's videoN; a bare name takes the suffix of the file that
    exists (MSVD clips are .avi), else .mp4 as read_msrvtt does."""
    name = f"video{name}" if isinstance(name, int) else name
    if not Path(name).suffix:
        for suffix in VIDEO_SUFFIXES:
            if Path(_join(video_root, name + suffix)).exists():
                return _join(video_root, name + suffix)
    return _video_path(video_root, name)


def read_video_qa(
    path: str | os.PathLike, video_root: str | os.PathLike = "", counter: SkipCounter | None = None
) -> list[VQARecord]:
    """MSRVTT-QA / MSVD-QA questions (JSON list or JSONL) as VQA records whose `image` is the video's path."""
    c = _counter(counter)
    entries = list(iter_jsonl(path, c)) if Path(path).suffix.lower() == ".jsonl" else _load_json_list(path)
    records = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        video = entry.get("video", entry.get("video_id")) if isinstance(entry, dict) else None
        if isinstance(video, bool) or not isinstance(video, (str, int)) or video == "":
            c.skip("bad_json", f"{where}: missing or invalid 'video' / 'video_id'")
            continue
        question = clean_text(entry.get("question"), where, c)
        if question is None:
            continue
        raw = entry.get("answer", [])
        given = [a for a in (raw if isinstance(raw, list) else [raw]) if isinstance(a, str) and a.strip()]
        answers, weights = answer_weights(given) if given else ((), ())
        # The original MSRVTT-QA files number questions with "id"; ALPRO / LAVIS files with "question_id".
        qid = str(entry.get("question_id", entry.get("id", f"{Path(path).stem}-{i}")))
        records.append(VQARecord(_qa_video_path(video_root, video), question, answers, weights, qid))
    return records
