"""`blip data synth` and `blip data check` end to end."""

import json

from blip.cli import main


def test_synth_then_check_clean_then_corrupted(tmp_path, capsys):
    out = tmp_path / "w"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--images",
                "24",
                "--seed",
                "5",
                "--noise",
                "0.3",
                "--videos",
                "2",
                "--size",
                "32",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["noise"] == 0.3 and manifest["image_size"] == 32
    assert all((out / name).stat().st_size == info["bytes"] for name, info in manifest["files"].items())
    capsys.readouterr()

    assert main(["data", "check", str(out)]) == 0
    assert "none skipped" in capsys.readouterr().out

    (out / "images" / "000000.jpg").write_bytes((out / "images" / "000000.jpg").read_bytes()[:200])
    (out / "images" / "000001.jpg").write_bytes(b"")
    (out / "videos" / "video0001.mp4").unlink()
    assert main(["data", "check", str(out), "--json"]) == 1
    lines = capsys.readouterr().out.splitlines()
    total = json.loads(next(line for line in lines if line.startswith("{")))["total"]["skipped"]
    # Image 0 and 1 are train images: named by the Karpathy train file, the pretraining list and the VQA and
    # NLVR2 files; video 1 is named once in the official MSRVTT file (the BLIP jsonl lists only test video 0).
    assert set(total) == {"truncated", "empty", "missing"} and total["missing"] == 1
    assert total["truncated"] == total["empty"] >= 3


def test_check_a_single_annotation_file_with_bad_lines(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"not really an image")
    (tmp_path / "pairs.jsonl").write_text('{"image": "a.jpg", "caption": "x"}\n{broken\n')
    assert main(["data", "check", str(tmp_path / "pairs.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "[table]" in out and "bad_json 1" in out and "not_image 1" in out


def test_check_missing_path_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nothing")]) == 2
    assert "no such file" in capsys.readouterr().err
