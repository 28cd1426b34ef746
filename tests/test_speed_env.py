"""`blip env` (bf16 units read from CPU flags) and `--compile` (the compiled model decodes as the eager one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import blip
from blip.cli import main
from blip.cli.env import bf16_verdict, cpu_facts

# Abridged /proc/cpuinfo lines of three real CPU generations.
SAPPHIRE_RAPIDS = (
    "model name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
)
ZEN4 = "model name\t: AMD EPYC 9654 96-Core Processor\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
SKYLAKE = "model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


def test_bf16_units_from_cpu_flags():
    spr, zen4, skl = cpu_facts(SAPPHIRE_RAPIDS), cpu_facts(ZEN4), cpu_facts(SKYLAKE)
    assert spr["amx_bf16"] and spr["amx_tile"] and spr["avx512_bf16"]
    assert zen4["avx512_bf16"] and not zen4["amx_bf16"] and not zen4["amx_tile"]
    assert not any(skl[f] for f in ("amx_bf16", "amx_tile", "avx512_bf16")) and skl["avx512f"]
    assert bf16_verdict(spr).startswith("yes: AMX")
    assert bf16_verdict(zen4).startswith("yes: AVX512-BF16")
    assert bf16_verdict(skl).startswith("no")


def test_env_command_reports_this_machine(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and info["cuda"] == torch.cuda.is_available()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # the flags line as the kernel writes it
        flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith(("flags", "Features")))
        assert info["avx512_bf16"] == ("avx512_bf16" in flags.split())
        assert info["amx_tile"] == ("amx_tile" in flags.split())


def test_compiled_model_captions_as_eager(hf_models):
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)) for i in range(2)]
    eager = blip.load(hf_models["caption"][1]).caption(images)
    # The eager backend traces with dynamo (graph capture, guards, dynamic lengths) without inductor's C++ build.
    compiled = blip.load(hf_models["caption"][1]).compile(backend="eager").caption(images)
    assert [c.text for c in compiled] == [c.text for c in eager]
