"""Zero-shot video QA (MSRVTT-QA, MSVD-QA): the reader, top-1 accuracy, ranking as ask does on concatenated frames."""

from __future__ import annotations

import json

import av
import pytest
import torch

import blip
from blip.cli import main
from blip.data.readers import read_video_qa
from blip.data.robust import SkipCounter
from blip.errors import BlipError
from blip.tasks.video import answer_video_questions, evaluate_video_qa, qa_accuracy

# Answers the tiny test vocabulary spells with distinct tokens, so ranking has no exact ties.
ANSWERS = ["red", "blue", "green", "square", "circle", "triangle", "left", "right", "two", "three", "yes", "no"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic world with 6 videos: test videos 0 and 5, each asked up to 3 questions."""
    from blip.data.synth import generate

    out = tmp_path_factory.mktemp("video_qa")
    generate(out, num_images=4, num_videos=6, size=32, workers=1)
    return out


def test_reader_takes_msrvtt_qa_and_msvd_qa_layouts(tmp_path):
    (tmp_path / "clipA.avi").write_bytes(b"")  # MSVD clips are .avi; a bare name takes the existing file's suffix
    entries = [
        {"video": "video7010.mp4", "question": "what is a man doing?", "answer": "talk", "question_id": 5},
        {"video_id": "video7011", "question": "who sings?", "answer": ["woman", "woman", "girl"]},
        {"video_id": 7012, "question": "what is shown?", "answer": "car", "id": 9},  # original MSRVTT-QA ids
        {"video_id": "clipA", "question": "what runs?", "answer": "dog"},
        {"question": "no video?", "answer": "x"},
        {"video": "video1.mp4", "question": "   ", "answer": "x"},
        {"video": "video2.mp4", "question": "unanswered test question"},
    ]
    (tmp_path / "qa.json").write_text(json.dumps(entries))
    counter = SkipCounter()
    records = read_video_qa(tmp_path / "qa.json", tmp_path, counter=counter)
    names = ("video7010.mp4", "video7011.mp4", "video7012.mp4", "clipA.avi", "video2.mp4")
    assert [r.image for r in records] == [str(tmp_path / n) for n in names]
    assert [r.question_id for r in records] == ["5", "qa-1", "9", "qa-3", "qa-6"]
    assert records[1].answers == ("woman", "girl") and records[1].weights == pytest.approx((2 / 3, 1 / 3))
    assert records[0].answers == ("talk",) and records[4].answers == ()
    assert counter.skipped == {"bad_json": 1, "empty_text": 1}
    # ALPRO ships the same entries as JSON lines.
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries[:4]) + "not json\n")
    assert read_video_qa(tmp_path / "qa.jsonl", tmp_path) == records[:4]


def test_accuracy_is_top1_exact_match_of_normalised_answers():
    predictions = ["Two.", "a dog", "cat", "yes", "the red one"]
    references = [["2"], ["dog"], ["dogs"], ["no", "yes"], ["red"]]
    assert qa_accuracy(predictions, references) == pytest.approx(60.0)
    assert qa_accuracy(["blue"], [["blue"]]) == 100.0
    with pytest.raises(BlipError):
        qa_accuracy(["a", "b"], [["a"]])


def frames_of(path: str, indices: list[int]):
    """Frames at `indices`, decoded with PyAV directly (independent of the data layer's sampler)."""
    with av.open(path) as container:
        frames = [f.to_image().convert("RGB") for f in container.decode(video=0)]
    return [frames[i] for i in indices]


def test_evaluate_ranks_as_ask_does_on_concatenated_frames(hf_models, world, tmp_path):
    model = blip.load(hf_models["vqa"][1])
    ann = world / "msrvtt/msrvtt_qa_test.json"
    entries = json.loads(ann.read_text())
    assert len({e["video"] for e in entries}) == 2 and len(entries) >= 3
    (tmp_path / "answers.json").write_text(json.dumps(ANSWERS))
    got = evaluate_video_qa(
        model,
        str(ann),
        str(world / "videos"),
        answer_list=str(tmp_path / "answers.json"),
        num_frames=4,
        k_test=5,
        out=str(tmp_path / "pred.json"),
        batch_size=2,
    )
    predicted = {r["question_id"]: r["answer"] for r in json.loads((tmp_path / "pred.json").read_text())}
    # Independently: 4 of the 8 frames (0, 2, 4, 6) through the ViT, their token sequences joined frame after frame.
    embeds = []
    for e in entries:
        frames = model.image_embeds(frames_of(str(world / "videos" / e["video"]), [0, 2, 4, 6]))
        embeds.append(frames.reshape(-1, frames.shape[-1]))
    want = model.ask_embeds(torch.stack(embeds), [e["question"] for e in entries], answers=ANSWERS, k_test=5)
    assert [predicted[e["question_id"]] for e in entries] == [a.text for a in want]
    # The scores too, through the function evaluate uses (each video encoded once for all its questions).
    direct = answer_video_questions(
        model,
        [str(world / "videos" / e["video"]) for e in entries],
        [e["question"] for e in entries],
        answers=ANSWERS,
        num_frames=4,
        k_test=5,
        batch_size=2,
    )
    assert [a.logprob for a in direct] == pytest.approx([a.logprob for a in want], abs=1e-4)
    truth = [[e["answer"]] for e in entries]
    assert got == {"questions": len(entries), "accuracy": qa_accuracy([a.text for a in want], truth)}
    assert json.loads((tmp_path / "pred.metrics.json").read_text()) == got
    # Without an answer list the candidates are the annotation's own answers.
    own = evaluate_video_qa(model, str(ann), str(world / "videos"), num_frames=4, out=str(tmp_path / "own.json"))
    own_list = list(dict.fromkeys(e["answer"] for e in entries))
    want = model.ask_embeds(
        torch.stack(embeds), [e["question"] for e in entries], answers=own_list, k_test=min(128, len(own_list))
    )
    predicted = {r["question_id"]: r["answer"] for r in json.loads((tmp_path / "own.json").read_text())}
    assert [predicted[e["question_id"]] for e in entries] == [a.text for a in want]
    hits = sum(a.text == e["answer"] for a, e in zip(want, entries))
    assert own == {"questions": len(entries), "accuracy": pytest.approx(100.0 * hits / len(entries))}


def test_cli_writes_results_and_reports_a_missing_file_in_one_line(hf_models, world, tmp_path, capsys):
    folder = str(hf_models["vqa"][1])
    args = ["evaluate", "video-qa", "--model", folder, "--image-root", str(world / "videos"), "--num-frames", "2"]
    assert main(args + ["--data", str(world / "msrvtt/msrvtt_qa_test.json"), "--out", str(tmp_path / "r.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"questions", "accuracy"} and (tmp_path / "r.json").exists()
    assert main(args + ["--data", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err and err.startswith("blip: error:")
