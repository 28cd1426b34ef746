"""COCO caption metrics: the wrapper must give the toolkit's own numbers, from any working directory."""

import json
import logging
import math

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from blip.errors import BlipError
from blip.evaluation import captioning
from blip.evaluation.captioning import (
    caption_metrics,
    ptb_tokenize,
    read_caption_results,
    read_coco_references,
    write_caption_results,
)

REFERENCES = {
    101: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean!",
          "Man on a surfboard, riding an ocean wave."],
    202: ["Two dogs are playing in the snow.", "A pair of dogs run through deep snow."],
    303: ["A plate of food with broccoli and rice.", "Some rice, broccoli & chicken on a white plate."],
    404: ["A red double-decker bus on a city street.", "The bus is driving down the road (in London)."],
}  # fmt: skip
CANDIDATES = {
    101: "a man riding a wave on a surfboard",
    202: "two dogs playing in the snow",
    303: "a plate of rice and vegetables",
    404: "a train on the tracks",
}


def _toolkit_reference(references, candidates):
    """Tokenise with the toolkit's PTBTokenizer and return the gts/res dicts its scorers take."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in candidates})
    res = tokenizer.tokenize({i: [{"caption": candidates[i]}] for i in candidates})
    return gts, res


@pytest.fixture(scope="module")
def toolkit_inputs():
    return _toolkit_reference(REFERENCES, CANDIDATES)


def test_tokenizer_matches_the_toolkit(toolkit_inputs):
    gts, res = toolkit_inputs
    assert ptb_tokenize({i: REFERENCES[i] for i in CANDIDATES}) == gts
    assert ptb_tokenize({i: [CANDIDATES[i]] for i in CANDIDATES}) == res
    assert gts[303][1] == "some rice broccoli & chicken on a white plate"


def test_bleu_rouge_cider_equal_the_toolkit_scorers(toolkit_inputs, tmp_path, monkeypatch):
    gts, res = toolkit_inputs
    monkeypatch.chdir(tmp_path)  # the toolkit's jars are found whatever the working directory
    got = caption_metrics(REFERENCES, CANDIDATES, meteor=False)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [got[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert got["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert got["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)
    assert list(got) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]
    assert 0 < got["Bleu_4"] < 1 and 0 < got["CIDEr"]
    assert list(tmp_path.iterdir()) == []


def test_meteor_equals_the_toolkit_scorer(toolkit_inputs, tmp_path, monkeypatch):
    # The one METEOR test (two JVM runs of several seconds each); it also runs from a foreign directory.
    gts, res = toolkit_inputs
    monkeypatch.chdir(tmp_path)
    got = caption_metrics(REFERENCES, CANDIDATES)
    reference = Meteor()
    expected = reference.compute_score(gts, res)[0]
    del reference
    assert got["METEOR"] == pytest.approx(expected, abs=1e-12)
    assert 0 < got["METEOR"] < 1
    assert list(got) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]


def test_hand_checkable_values():
    # Identical caption: every n-gram precision is 1, so BLEU-4 is 1 up to the toolkit's 1e-9 / 1e-15 smoothing.
    same = caption_metrics({1: ["A cat sits on the mat."]}, {1: "a cat sits on the mat"}, meteor=False)
    assert same["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE_L"] == pytest.approx(1.0)
    # CIDEr's idf is log(#images / document frequency): with a single image every idf is 0, so CIDEr is 0.
    assert same["CIDEr"] == 0.0

    # "one two three four" vs "one two three five": 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams match;
    # equal lengths, so no brevity penalty. BLEU-n is the geometric mean of the first n precisions.
    partial = caption_metrics({1: ["one two three five"]}, {1: "one two three four"}, meteor=False)
    assert partial["Bleu_1"] == pytest.approx(3 / 4)
    assert partial["Bleu_2"] == pytest.approx(math.sqrt(3 / 4 * 2 / 3))
    assert partial["Bleu_3"] == pytest.approx((3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3))
    # ROUGE-L: LCS 3 of 4 tokens both ways -> P = R = 3/4 -> F = 3/4 for any beta.
    assert partial["ROUGE_L"] == pytest.approx(3 / 4)

    # CIDEr on two images with disjoint words: an exact caption has cosine 1 for n = 1..4, no length penalty, and
    # the toolkit scales by 10, so it scores 10; a caption sharing no n-gram with its references scores 0.
    refs = {1: ["red apple on table"], 2: ["blue car in street"]}
    assert caption_metrics(refs, {1: "red apple on table", 2: "blue car in street"}, meteor=False)["CIDEr"] == (
        pytest.approx(10.0)
    )
    assert caption_metrics(refs, {1: "red apple on table", 2: "green tree near river"}, meteor=False)["CIDEr"] == (
        pytest.approx(5.0)
    )


def test_spice_failure_is_one_log_line(monkeypatch, caplog, capsys):
    import pycocoevalcap.spice.spice as spice_module

    def offline(self):
        raise OSError("simulated: no route to nlp.stanford.edu\nsecond line of detail")

    monkeypatch.setattr(spice_module.Spice, "__init__", offline)
    with caplog.at_level(logging.WARNING, logger=captioning.__name__):
        got = caption_metrics({1: ["a dog"], 2: ["a cat"]}, {1: "a dog", 2: "a cat"}, meteor=False, spice=True)
    assert "SPICE" not in got and "CIDEr" in got
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith("SPICE not computed (OSError: simulated: no route")
    assert "\n" not in message and record.exc_info is None
    assert "Traceback" not in capsys.readouterr().err


def test_input_checks():
    with pytest.raises(BlipError, match="no reference captions"):
        caption_metrics({1: ["a dog"]}, {2: "a dog"}, meteor=False)
    with pytest.raises(BlipError, match="empty list"):
        caption_metrics({1: []}, {1: "a dog"}, meteor=False)
    with pytest.raises(BlipError, match="list of strings"):
        caption_metrics({1: "a dog"}, {1: "a dog"}, meteor=False)
    with pytest.raises(BlipError, match="not a string"):
        caption_metrics({1: ["a dog"]}, {1: ["a dog"]}, meteor=False)
    with pytest.raises(BlipError, match="no captions"):
        caption_metrics({1: ["a dog"]}, {}, meteor=False)


def test_results_files_round_trip(tmp_path):
    path = tmp_path / "out" / "captions.json"
    write_caption_results(path, {7: "a dog", 9: "a café"})
    assert json.loads(path.read_text(encoding="utf-8")) == [
        {"image_id": 7, "caption": "a dog"},
        {"image_id": 9, "caption": "a café"},
    ]
    assert read_caption_results(path) == {7: "a dog", 9: "a café"}

    path.write_text(json.dumps([{"image_id": 7, "caption": "a"}, {"image_id": 7, "caption": "b"}]))
    with pytest.raises(BlipError, match="more than once"):
        read_caption_results(path)
    path.write_text("[{")
    with pytest.raises(BlipError, match="not valid JSON"):
        read_caption_results(path)
    path.write_text(json.dumps({"image_id": 7}))
    with pytest.raises(BlipError, match="JSON list"):
        read_caption_results(path)
    with pytest.raises(BlipError, match="cannot read"):
        read_caption_results(tmp_path / "missing.json")

    coco = tmp_path / "gt.json"
    annotations = [{"image_id": 7, "id": 1, "caption": "a dog"}, {"image_id": 7, "id": 2, "caption": "a brown dog"}]
    coco.write_text(json.dumps({"images": [{"id": 7}], "annotations": annotations}))
    assert read_coco_references(coco) == {7: ["a dog", "a brown dog"]}
    coco.write_text(json.dumps([{"image_id": 7, "caption": "a dog"}]))
    with pytest.raises(BlipError, match="not a COCO caption file"):
        read_coco_references(coco)
