"""Every kind of bad or unusual image, and the command line's one-line errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from blip.errors import ImageError
from blip.images import load_image


def save(im: Image.Image, path, fmt="PNG", **kw):
    im.save(path, fmt, **kw)
    return path


@pytest.fixture
def rgb():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "reason,make",
    [
        ("missing", lambda d: d / "absent.jpg"),
        ("not_image", lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt"),
        ("empty", lambda d: (d / "zero.jpg").write_bytes(b"") or d / "zero.jpg"),
    ],
)
def test_unusable_files_have_a_reason(tmp_path, reason, make):
    with pytest.raises(ImageError) as e:
        load_image(make(tmp_path))
    assert e.value.reason == reason


def test_truncated_jpeg(tmp_path, rgb):
    data = io.BytesIO()
    rgb.resize((256, 256)).save(data, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "cut.jpg")
    assert e.value.reason == "truncated"


def test_decompression_bomb_refused(tmp_path):
    save(Image.new("L", (3000, 3000)), tmp_path / "big.png")
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "big.png", max_pixels=1_000_000)
    assert e.value.reason == "too_large"


def test_cmyk_converts_to_the_same_colours(tmp_path, rgb):
    path = save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG", quality=100)
    out = np.asarray(load_image(path), dtype=int)
    assert out.shape == (24, 32, 3) and np.abs(out - np.asarray(rgb, dtype=int)).mean() < 8


def test_rgba_transparency_composited_on_white(tmp_path):
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    im.putpixel((0, 0), (0, 0, 255, 0))  # fully transparent blue must become white, not blue or black
    out = load_image(save(im, tmp_path / "a.png"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (255, 0, 0)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([0, 255, 0, 10, 20, 30] + [0] * 762)
    im.putpixel((1, 0), 1)
    im.info["transparency"] = 1
    out = load_image(save(im, tmp_path / "p.png", transparency=1))
    assert out.getpixel((0, 0)) == (0, 255, 0) and out.getpixel((1, 0)) == (255, 255, 255)


def test_grayscale_and_16_bit_scaled_not_clipped(tmp_path):
    gray = load_image(save(Image.new("L", (3, 3), 77), tmp_path / "g.png"))
    assert gray.getpixel((1, 1)) == (77, 77, 77)
    arr = np.full((3, 3), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    im16 = Image.fromarray(arr)
    out = load_image(save(im16, tmp_path / "g16.png"))
    assert out.getpixel((0, 0)) == (128, 128, 128)  # 32768 / 257 = 127.5 -> 128, not clipped to 255


def blip_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "blip", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_missing_checkpoint_is_one_line(tmp_path, rgb):
    img = save(rgb, tmp_path / "x.png")
    r = blip_cli("caption", img, "--model", tmp_path / "nope.pth")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_caption_skips_and_counts_bad_images(hf_models, tmp_path, rgb):
    _, folder = hf_models["caption"]
    good = save(rgb, tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not really a jpeg")
    r = blip_cli("caption", good, tmp_path / "bad.jpg", tmp_path / "gone.png", "--model", folder, "--json")
    assert r.returncode == 1, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [rec["image"] for rec in records] == [str(good)] and "logprob" in records[0]
    assert "2 of 3 inputs skipped (missing 1, not_image 1)" in r.stderr and "Traceback" not in r.stderr


def test_cli_match_ask_and_convert(hf_models, tmp_path, rgb):
    img = save(rgb, tmp_path / "x.png")
    r = blip_cli("match", img, "--model", hf_models["retrieval"][1], "-t", "a red square", "-t", "a dog", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and all(0 <= row["itm"] <= 1 and -1 <= row["itc"] <= 1 for row in rows)
    (tmp_path / "answers.txt").write_text("yes\nno\nred\n")
    r = blip_cli(
        "ask", img, "-q", "is there a dog?", "--model", hf_models["vqa"][1], "--answers", tmp_path / "answers.txt"
    )
    assert r.returncode == 0 and r.stdout.split("\t")[1].strip() in {"yes", "no", "red"}
    r = blip_cli("convert", hf_models["vqa"][1], tmp_path / "own")
    assert r.returncode == 0, r.stderr
    r = blip_cli("ask", img, "-q", "is there a dog?", "--model", tmp_path / "own")
    assert r.returncode == 0, r.stderr
    r = blip_cli("ask", img, "-q", "what?", "--model", hf_models["caption"][1])
    assert r.returncode == 2 and "needs a model with a text_encoder" in r.stderr


def test_cli_wrong_kind_of_checkpoint_names_keys(hf_models, tmp_path):
    r = blip_cli("convert", hf_models["caption"][1], tmp_path / "o", "--task", "vqa")
    assert r.returncode == 2 and "text_encoder.embeddings.word_embeddings.weight" in r.stderr
