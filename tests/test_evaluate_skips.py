"""`blip evaluate` names the images it could not use, and fails when most of them are missing."""

from __future__ import annotations

import json

from blip.cli import main


def _subset(src, dst, n: int, missing: int) -> int:
    entries = json.loads(src.read_text())[:n]
    for e in entries[:missing]:
        e["image"] = "images/not-there-" + e["image"].rsplit("/", 1)[-1]
    dst.write_text(json.dumps(entries))
    return len(entries)


def test_caption_names_missing_images_and_fails_when_most_are(hf_models, synth_world, tmp_path, capsys):
    model = str(hf_models["caption"][1])
    args = ["evaluate", "caption", "--model", model, "--no-meteor", "--image-root", str(synth_world)]
    n = _subset(synth_world / "coco_karpathy_test.json", tmp_path / "few.json", 4, missing=1)
    assert main([*args, "--data", str(tmp_path / "few.json")]) == 0
    out = capsys.readouterr()
    assert f"blip: 1 of {n} images skipped (" in out.err and "not-there-" in out.err and "no such file" in out.err
    assert "CIDEr" in json.loads(out.out)
    _subset(synth_world / "coco_karpathy_test.json", tmp_path / "most.json", 4, missing=3)
    assert main([*args, "--data", str(tmp_path / "most.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"3 of {n} images could not be used" in err and "not-there-" in err and "\n" not in err
    # The README's mistake: no --image-root, so every path is missing; the error names them, not the metric.
    assert (
        main(
            [
                "evaluate",
                "caption",
                "--model",
                model,
                "--no-meteor",
                "--data",
                str(synth_world / "coco_karpathy_test.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "images could not be used" in err and "images/" in err and "no captions to score" not in err


def test_vqa_names_missing_images_and_fails_when_most_are(hf_models, synth_world, tmp_path, capsys):
    args = [
        "evaluate",
        "vqa",
        "--model",
        str(hf_models["vqa"][1]),
        "--image-root",
        str(synth_world),
        "--answer-list",
        str(synth_world / "vqa" / "answer_list.json"),
        "--k-test",
        "4",
    ]
    n = _subset(synth_world / "vqa" / "vqa_test.json", tmp_path / "few.json", 5, missing=2)
    assert main([*args, "--data", str(tmp_path / "few.json")]) == 0
    out = capsys.readouterr()
    assert f"blip: 2 of {n} questions skipped (" in out.err and "not-there-" in out.err
    assert json.loads(out.out)["questions"] == n - 2
    _subset(synth_world / "vqa" / "vqa_test.json", tmp_path / "most.json", 5, missing=3)
    assert main([*args, "--data", str(tmp_path / "most.json")]) == 2
    assert f"3 of {n} questions could not be used" in capsys.readouterr().err


def test_progress_lines_outside_a_terminal(hf_models, synth_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BLIP_PROGRESS_EVERY", "0")  # a line on every update; stderr under capsys is no tty
    n = _subset(synth_world / "coco_karpathy_test.json", tmp_path / "few.json", 3, missing=0)
    assert (
        main(
            [
                "evaluate",
                "caption",
                "--model",
                str(hf_models["caption"][1]),
                "--no-meteor",
                "--batch-size",
                "2",
                "--image-root",
                str(synth_world),
                "--data",
                str(tmp_path / "few.json"),
            ]
        )
        == 0
    )
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("blip: captioning:")]
    assert [x.split()[2] for x in lines] == ["2/3", f"{n}/{n}"]


def test_training_progress_lines_outside_a_terminal(tmp_path, capsys, monkeypatch):
    from test_trainer_first_hour import run

    monkeypatch.setenv("BLIP_PROGRESS_EVERY", "0")
    run(tmp_path, steps=3, progress=True).fit()
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("blip: training:")]
    assert [x.split()[2] for x in lines] == ["1/3", "2/3", "3/3"] and all("loss" in x for x in lines)
    monkeypatch.setenv("BLIP_PROGRESS_EVERY", "3600")  # a short run in a log stays quiet
    run(tmp_path / "quiet", steps=2, progress=True).fit()
    assert "blip: training:" not in capsys.readouterr().err
