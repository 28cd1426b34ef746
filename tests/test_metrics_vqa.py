"""VQA accuracy with the official answer normalisation."""

import itertools
import json

import pytest

from blip.errors import BlipError
from blip.evaluation.vqa import (
    answer_frequency_weights,
    normalize_answer,
    process_punctuation,
    read_vqa_results,
    simple_vqa_accuracy,
    vqa_accuracy,
    vqa_score,
    write_vqa_results,
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("two", "2"),  # number words become digits
        ("Ten", "10"),
        ("none", "0"),
        ("a dog", "dog"),  # articles go
        ("The Cat and an apple", "cat and apple"),
        ("yes.", "yes"),  # a period not inside a number goes
        ("3.5", "3.5"),  # ... one inside a number stays
        ("3.", "3"),
        ("dont", "don't"),  # missing apostrophes are restored
        ("isnt it", "isn't it"),
        ("don't", "don't"),  # apostrophes are never stripped
        ("2:30", "2:30"),  # nor colons (times)
        ("1,000", "1000"),  # a comma between digits: every mark is deleted, not spaced
        ("red, blue", "red blue"),  # a mark touching a space is deleted
        ("red,blue", "red blue"),  # a mark inside a word becomes a space
        ("black/white", "black white"),
        ("(yes)!", "yes"),
        ("  yes\tno\n", "yes no"),
        ("YES", "yes"),
    ],
)
def test_normalisation(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_punctuation_step_leaves_case_and_words_alone():
    assert process_punctuation("Two, dogs?") == "Two dogs "


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [("two", "2"), ("a dog", "dog"), ("yes.", "yes"), ("dont", "don't"), ("The Red Car.", "red car")],
)
def test_normalised_predictions_match_unanimous_answers(prediction, answer):
    assert vqa_accuracy(prediction, [answer] * 10) == 1.0
    assert simple_vqa_accuracy(prediction, [answer] * 10) == 1.0


def _leave_one_out_by_brute_force(prediction, answers):
    """Average of min(1, matches / 3) over every 9-annotator subset, spelt out."""
    accs = []
    for subset in itertools.combinations(range(len(answers)), len(answers) - 1):
        accs.append(min(1.0, sum(answers[i] == prediction for i in subset) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        (0, 0.0),
        # 1 match: the 9 subsets keeping it give 1/3, the one dropping it 0 -> 9 * (1/3) / 10 = 0.3
        (1, 0.3),
        # 2 matches: 8 subsets keep both (2/3), 2 subsets keep one (1/3) -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
        (2, 0.6),
        # 3 matches: 7 subsets keep all three (1), 3 keep two (2/3) -> (7 + 3 * 2/3) / 10 = 0.9
        (3, 0.9),
        (4, 1.0),
        (10, 1.0),
    ],
)
def test_leave_one_out_average(matches, expected):
    answers = ["cat"] * matches + ["dog", "bird", "fish", "cow", "pig", "hen", "owl", "fox", "elk", "ant"][
        : 10 - matches
    ]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)
    assert _leave_one_out_by_brute_force("cat", answers) == pytest.approx(expected)
    assert simple_vqa_accuracy("cat", answers) == pytest.approx(min(matches / 3, 1.0))


def test_leave_one_out_after_normalisation():
    # "Two." normalises to "2"; two of the ten annotators said "2" -> 0.6, as above.
    answers = ["2", "2", "3", "3", "3", "3", "4", "4", "4", "4"]
    assert vqa_accuracy("Two.", answers) == pytest.approx(0.6)
    assert simple_vqa_accuracy("Two.", answers) == pytest.approx(2 / 3)


def test_disagreeing_answers_get_the_punctuation_step():
    # As in the official script, ground truth is punctuation-processed only when annotators disagree.
    answers = ["red,blue"] * 5 + ["green"] * 5
    assert vqa_accuracy("red blue", answers) == 1.0


def test_answer_frequency_weights():
    weights = answer_frequency_weights(["yes"] * 6 + ["no"] * 3 + ["maybe"])
    assert weights == pytest.approx({"yes": 0.6, "no": 0.3, "maybe": 0.1})


def test_vqa_score_and_submission_files(tmp_path):
    references = {1: ["2"] * 10, 2: ["dog"] * 2 + ["cat"] * 8, 3: ["yes"] * 10}
    predictions = {1: "two", 2: "a dog", 3: "no"}
    assert vqa_score(predictions, references) == pytest.approx(100 * (1.0 + 0.6 + 0.0) / 3)

    path = tmp_path / "sub" / "vqa_result.json"
    write_vqa_results(path, predictions)
    assert json.loads(path.read_text()) == [
        {"question_id": 1, "answer": "two"},
        {"question_id": 2, "answer": "a dog"},
        {"question_id": 3, "answer": "no"},
    ]
    assert read_vqa_results(path) == predictions

    path.write_text(json.dumps([{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}]))
    with pytest.raises(BlipError, match="more than once"):
        read_vqa_results(path)
    path.write_text(json.dumps([{"question_id": 1}]))
    with pytest.raises(BlipError, match="question_id, answer"):
        read_vqa_results(path)
    with pytest.raises(BlipError, match="no ground truth"):
        vqa_score({4: "yes"}, references)
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])
