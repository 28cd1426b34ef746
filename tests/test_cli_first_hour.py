"""The command line as a new user meets it: fast help, defaults shown, numbers checked, --set reaching one field."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from blip.cli import build_parser, main
from blip.cli.common import load_recipe


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)


def test_parser_and_argument_errors_do_not_import_torch():
    # torch takes seconds to import: help and argument errors must come before it.
    r = _python(
        "import sys, blip.cli\n"
        "blip.cli.build_parser().format_help()\n"
        "try:\n    blip.cli.main(['ask', 'x.jpg', '-q', 'why?', '--model', 'm', '--beams', '0'])\n"
        "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'numpy' in sys.modules)"
    )
    assert r.stdout.split() == ["2", "False", "False"], r.stderr


def test_import_blip_is_lazy_but_complete():
    r = _python(
        "import sys, blip\nassert 'torch' not in sys.modules\n"
        "print(blip.Blip.__name__, blip.preset('tiny').vision.width > 0, 'torch' in sys.modules)"
    )
    assert r.stdout.split() == ["Blip", "True", "True"], r.stderr
    r = _python("import blip\nblip.nothing_here")
    assert "has no attribute 'nothing_here'" in r.stderr


def _subparsers(parser: argparse.ArgumentParser, name: str = "blip"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _subparsers(sub, f"{name} {sub_name}")


def test_every_help_shows_every_default():
    checked = 0
    for name, parser in _subparsers(build_parser()):
        for action in parser._actions:
            d = action.default
            if not action.option_strings or d is None or d is False or d == argparse.SUPPRESS or d in ("", []):
                continue
            formatter = parser._get_formatter()  # the same formatter --help uses, on this one option
            formatter.add_argument(action)
            shown = " ".join(formatter.format_help().split())
            assert str(d) in shown.split(None, 1 + (action.nargs != 0))[-1], f"{name}: {shown!r} hides {d!r}"
            checked += 1
    assert checked > 30  # every command was reached


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["ask", "x.jpg", "-q", "why?", "--model", "m", "--batch-size", "0"], "--batch-size"),
        (["ask", "x.jpg", "-q", "why?", "--model", "m", "--beams", "0"], "--beams"),
        (["ask", "x.jpg", "-q", "why?", "--model", "m", "--max-length", "-3"], "--max-length"),
        (["ask", "x.jpg", "-q", "why?", "--model", "m", "--k-test", "two"], "--k-test"),
        (["match", "x.jpg", "-t", "a dog", "--model", "m", "--batch-size", "-1"], "--batch-size"),
        (["evaluate", "caption", "--model", "m", "--data", "d.json", "--batch-size", "0"], "--batch-size"),
        (["evaluate", "video-qa", "--model", "m", "--data", "d.json", "--num-frames", "0"], "--num-frames"),
        (["evaluate", "vqa", "--model", "m", "--data", "d.json", "--k-test", "0"], "--k-test"),
    ],
)
def test_bad_numbers_are_one_line_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and flag in err[-1] and "error:" in err[-1]
    assert "Traceback" not in "\n".join(err)


@pytest.mark.parametrize(
    "setting,message",
    [
        ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
        ("train.epochs=-1", "train.epochs must be at least 1, got -1"),
        ("train.max_steps=0", "train.max_steps must be at least 1, got 0"),
        ("train.lr=0", "train.lr must be positive"),
    ],
)
def test_bad_training_numbers_are_one_line_errors(setting, message, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"data": [], "train": {"out": str(tmp_path / "out")}}))
    for command in (["pretrain"], ["finetune", "caption"]):
        assert main([*command, "--config", str(recipe), "--set", setting]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"blip: error: {message}" or (err.startswith(f"blip: error: {message}") and "\n" not in err)
    assert not (tmp_path / "out").exists()


def test_set_reaches_one_field_of_the_overrides_map(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {preset: tiny, overrides: {vision.patch_size: 16, vision.depth: 2, text.layers: 2}}\n"
        "train: {out: x, lr: 1.0e-3}\n"
    )
    r = load_recipe(str(recipe), ["model.overrides.vision.depth=3"])
    assert r["model"]["overrides"] == {"vision.patch_size": 16, "vision.depth": 3, "text.layers": 2}
    from blip.model.config import preset

    cfg = preset("tiny", **r["model"]["overrides"])
    assert (cfg.vision.depth, cfg.vision.patch_size, cfg.text.layers) == (3, 16, 2)
    # The map form adds to the map instead of replacing it; other maps merge the same way.
    r = load_recipe(str(recipe), ["model.overrides={text.heads: 1}", "train={epochs: 2}"])
    assert r["model"]["overrides"] == {"vision.patch_size": 16, "vision.depth": 2, "text.layers": 2, "text.heads": 1}
    assert r["train"] == {"out": "x", "lr": 1e-3, "epochs": 2}
    # A scalar is still replaced, and a place that does not exist is one line.
    assert load_recipe(str(recipe), ["train.lr=5"])["train"]["lr"] == 5
    from blip.errors import BlipError

    with pytest.raises(BlipError, match="no such place"):
        load_recipe(str(recipe), ["train.lr.x=1"])
