"""Plotting stays out of the library's import path: matplotlib loads only when the demo draws its report."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_importing_the_library_does_not_import_matplotlib():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import blip, blip.api, blip.cli, blip.data.synth, "
        "blip.tasks.ablation, blip.tasks.report; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(SRC)], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
