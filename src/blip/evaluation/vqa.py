"""VQA v2 accuracy with the official answer normalisation, and the submission file format.

The rules follow the official evaluation script (GT-Vision-Lab/VQA, vqaEval.py) step for step,
including its quirks, so that numbers here match the evaluation server.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from blip.errors import BlipError
from blip.evaluation import _read_json_records

# Official contraction table, as "written-without-apostrophe -> canonical" pairs. Its keys with capitals
# can never match (words are lower-cased first) and a few pairs run backwards ("somebody'd" -> "somebodyd");
# both are kept because the server uses this exact table.
_CONTRACTION_PAIRS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's
howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd
itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't mightnt've:mightn't've
mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've neednt:needn't notve:not've
oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at 'ow'sat:'ow's'at shant:shan't
shed've:she'd've she'dve:she'd've she's:she's shouldve:should've shouldnt:shouldn't
shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd somebodyd've:somebody'd've
somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's someoned:someone'd
someoned've:someone'd've someone'dve:someone'd've someonell:someone'll someones:someone's
somethingd:something'd somethingd've:something'd've something'dve:something'd've
somethingll:something'll thats:that's thered:there'd thered've:there'd've there'dve:there'd've
therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll
theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd
wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's
whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't
wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll
yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've
you'dve:you'd've youll:you'll youre:you're youve:you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split(":") for pair in _CONTRACTION_PAIRS.split())

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})

# Apostrophes and colons are deliberately absent: they carry meaning ("girl's", "2:20").
_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official pattern is "(?!<=\d)(\.)(?!\d)": its first group is a look-AHEAD for the text "<=digit", which
# never matches before a ".", so only "not followed by a digit" is in force; "3." loses its period, "1.5" keeps it.
_PERIOD_NOT_IN_NUMBER = re.compile(r"\.(?!\d)")
# The official script passes re.UNICODE (= 32) where `count` goes, so at most 32 periods are removed.
_MAX_PERIODS_REMOVED = 32


def process_punctuation(text: str) -> str:
    """The official processPunctuation step: drop or space out punctuation, drop periods not inside numbers."""
    # Whether a mark is deleted or replaced by a space is decided on the input text, for all marks at once when
    # a comma sits between digits ("1,000" -> "1000"), otherwise per mark by whether it touches a space.
    digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        if digit_comma or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_IN_NUMBER.sub("", out, count=_MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """The official processDigitArticle step: lower-case, number words to digits, drop articles, fix contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """Normalise a predicted answer exactly as the official evaluation does before comparing it."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def _reference_answers(gt_answers: Sequence[str]) -> list[str]:
    # The official script assumes the annotation files already hold normalised answers; it only reruns the
    # punctuation step, and only when the annotators disagree.
    if len(set(gt_answers)) > 1:
        return [process_punctuation(answer) for answer in gt_answers]
    return list(gt_answers)


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one answer: mean over leave-one-annotator-out subsets of min(1, matches / 3)."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one ground-truth answer")
    predicted = normalize_answer(prediction)
    matches = sum(answer == predicted for answer in _reference_answers(gt_answers))
    n = len(gt_answers)
    # Leaving out one of the `matches` agreeing annotators leaves matches - 1 agreements; leaving out any other
    # annotator leaves all of them. This is the official 10-subset average in closed form.
    return (matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)) / n


def simple_vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """The common short form min(#annotators who gave the answer / 3, 1), after the same normalisation."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one ground-truth answer")
    predicted = normalize_answer(prediction)
    matches = sum(answer == predicted for answer in _reference_answers(gt_answers))
    return min(matches / 3, 1.0)


def answer_frequency_weights(gt_answers: Sequence[str]) -> dict[str, float]:
    """The reference BLIP training weights: each distinct answer weighs its share of the annotators."""
    if not gt_answers:
        raise ValueError("a VQA question needs at least one ground-truth answer")
    return {answer: count / len(gt_answers) for answer, count in Counter(gt_answers).items()}


def vqa_score(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> float:
    """Official overall VQA accuracy in percent over the questions in `predictions`."""
    missing = [qid for qid in predictions if qid not in references]
    if missing:
        raise BlipError(f"{len(missing)} predicted question ids have no ground truth, e.g. {missing[0]!r}")
    if not predictions:
        raise BlipError("no VQA predictions to score")
    total = sum(vqa_accuracy(answer, references[qid]) for qid, answer in predictions.items())
    return 100.0 * total / len(predictions)


def write_vqa_results(path: str | os.PathLike[str], answers: Mapping[int, str]) -> None:
    """Write answers in the VQA submission format: [{"question_id": ..., "answer": ...}]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"question_id": qid, "answer": answer} for qid, answer in answers.items()]
    path.write_text(json.dumps(records), encoding="utf-8")


def read_vqa_results(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a VQA submission file back into {question_id: answer}."""
    records = _read_json_records(path, ("question_id", "answer"))
    answers: dict[int, str] = {}
    for record in records:
        qid = record["question_id"]
        if qid in answers:
            raise BlipError(f"{path}: question_id {qid!r} appears more than once")
        answers[qid] = record["answer"]
    return answers
