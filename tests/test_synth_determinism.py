"""`blip data synth` run twice with one seed writes the same bytes in every file, videos included.

Each run is its own process, as two runs of the command are: the video encoder's run-to-run differences showed only
between processes (about one video in three), hardly ever within one."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def synth_digests(out: Path) -> dict[str, str]:
    """Run the command in a fresh process and hash every file it wrote."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "blip",
            "data",
            "synth",
            "--out",
            str(out),
            "--images",
            "40",
            "--seed",
            "11",
            "--noise",
            "0.4",
            "--videos",
            "16",
            "--workers",
            "1",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path):
    first, second = synth_digests(tmp_path / "a"), synth_digests(tmp_path / "b")
    assert sum(name.endswith(".mp4") for name in first) == 16
    assert any(name.endswith(".jpg") for name in first) and "tokenizer/vocab.txt" in first
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []
