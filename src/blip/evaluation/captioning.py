"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr, optionally SPICE) through pycocoevalcap.

Captions are tokenised once with the toolkit's Stanford PTBTokenizer and scored with the toolkit's own scorer
classes, so the numbers are the toolkit's. Java must be on PATH (PTB tokenizer, METEOR, SPICE).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from blip.errors import BlipError
from blip.evaluation import _load_json, _read_json_records

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


def _require_toolkit() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as err:
        raise BlipError("caption metrics need pycocoevalcap: pip install 'blip[eval]'") from err
    if shutil.which("java") is None:
        raise BlipError("caption metrics need Java (the COCO toolkit's tokenizer runs on it); 'java' is not on PATH")


def ptb_tokenize(captions: Mapping[K, Sequence[str]]) -> dict[K, list[str]]:
    """Tokenise captions as the toolkit's PTBTokenizer does (lower-cased, punctuation tokens dropped)."""
    _require_toolkit()
    from pycocoevalcap.tokenizer import ptbtokenizer

    keys = [key for key, texts in captions.items() for _ in texts]
    # Any line break inside a caption would shift every later line of the tokenizer's line-per-caption output.
    sentences = [" ".join(text.splitlines()) for texts in captions.values() for text in texts]
    if not sentences:
        return {key: [] for key in captions}
    jar = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    # The toolkit writes its input file into its own package folder, which may be read-only (a system or shared
    # install); the same command with an absolute class path and a system temp file works from any directory.
    with tempfile.TemporaryDirectory(prefix="blip-ptb-") as tmp:
        text_file = Path(tmp) / "captions.txt"
        text_file.write_text("\n".join(sentences), encoding="utf-8")
        command = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase",
                   "-encoding", "utf-8", str(text_file)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"PTBTokenizer failed ({done.returncode}): {message[-1] if message else 'no message'}")
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences):
        raise RuntimeError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} captions")
    tokenized: dict[K, list[str]] = {key: [] for key in captions}
    for key, line in zip(keys, lines):
        tokens = [token for token in line.rstrip().split(" ") if token not in ptbtokenizer.PUNCTUATIONS]
        tokenized[key].append(" ".join(tokens))
    return tokenized


def caption_metrics(
    references: Mapping[K, Sequence[str]],
    candidates: Mapping[K, str],
    *,
    meteor: bool = True,
    spice: bool = False,
) -> dict[str, float]:
    """Toolkit scores (its key names) of `candidates`, one caption per image, over those images against `references`."""
    missing = [image_id for image_id in candidates if image_id not in references]
    if missing:
        raise BlipError(f"{len(missing)} captioned image ids have no reference captions, e.g. {missing[0]!r}")
    if not candidates:
        raise BlipError("no captions to score")
    for image_id, caption in candidates.items():
        refs = references[image_id]
        # A bare string would be scored as a list of one-letter references.
        if isinstance(refs, str) or not all(isinstance(ref, str) for ref in refs):
            raise BlipError(f"references for image id {image_id!r} must be a list of strings")
        if not refs:
            raise BlipError(f"image id {image_id!r} has an empty list of reference captions")
        if not isinstance(caption, str):
            raise BlipError(f"the caption for image id {image_id!r} is not a string: {caption!r}")

    # One tokenizer run for both sides: the JVM start dominates its cost.
    tokenized = ptb_tokenize(
        {**{("ref", i): references[i] for i in candidates}, **{("cand", i): [candidates[i]] for i in candidates}}
    )
    gts = {i: tokenized[("ref", i)] for i in candidates}
    res = {i: tokenized[("cand", i)] for i in candidates}

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores.update({f"Bleu_{n}": float(value) for n, value in enumerate(bleu, start=1)})
    if meteor:
        scores["METEOR"] = _meteor(gts, res)
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if spice:
        spice_score = _spice(gts, res)
        if spice_score is not None:
            scores["SPICE"] = spice_score
    return scores


def _meteor(gts: Mapping[K, list[str]], res: Mapping[K, list[str]]) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    # The toolkit starts the METEOR jar with its own folder as working directory, so any caller directory works.
    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        # Dropping the last reference runs the toolkit's __del__, which stops the Java process now, not at exit.
        del scorer


def _spice(gts: Mapping[K, list[str]], res: Mapping[K, list[str]]) -> float | None:
    # SPICE downloads Stanford CoreNLP on first use and fails offline or in a read-only install; that must not
    # cost the other metrics, so any failure becomes one log line instead of a traceback.
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the toolkit prints download progress
            from pycocoevalcap.spice.spice import Spice

            return float(Spice().compute_score(gts, res)[0])
    except Exception as err:  # noqa: BLE001 - see above
        first_line = (str(err).strip().splitlines() or [""])[0]
        logger.warning(
            "SPICE not computed (%s: %s); it needs Stanford CoreNLP, which pycocoevalcap downloads on first use",
            type(err).__name__,
            first_line,
        )
        return None


def write_caption_results(path: str | os.PathLike[str], captions: Mapping[K, str]) -> None:
    """Write captions in the COCO results format: [{"image_id": ..., "caption": ...}]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"image_id": image_id, "caption": caption} for image_id, caption in captions.items()]
    path.write_text(json.dumps(records), encoding="utf-8")


def read_caption_results(path: str | os.PathLike[str]) -> dict:
    """Read a COCO results file back into {image_id: caption}."""
    captions: dict = {}
    for record in _read_json_records(path, ("image_id", "caption")):
        image_id = record["image_id"]
        if image_id in captions:
            raise BlipError(f"{path}: image_id {image_id!r} appears more than once")
        captions[image_id] = record["caption"]
    return captions


def read_coco_references(path: str | os.PathLike[str]) -> dict:
    """Read COCO-format ground truth ({"annotations": [{"image_id", "caption"}, ...]}) into {image_id: [captions]}."""
    data = _load_json(path)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list) or not all(
        isinstance(a, dict) and "image_id" in a and "caption" in a for a in annotations
    ):
        raise BlipError(f"{path} is not a COCO caption file (an object whose 'annotations' hold image_id, caption)")
    references: dict = {}
    for annotation in annotations:
        references.setdefault(annotation["image_id"], []).append(annotation["caption"])
    return references
