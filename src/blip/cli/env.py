"""`blip env`: torch, CPU and GPU facts, and whether `--dtype bfloat16` should pay on this machine."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from blip.cli.common import emit

# CPU flags (as /proc/cpuinfo spells them) that give bf16 matrix throughput: Intel AMX tiles, or AVX512-BF16
# (Intel Cooper Lake / Sapphire Rapids, AMD Zen 4 and later) dot-product instructions.
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


def cpu_facts(cpuinfo: str | None = None) -> dict:
    """CPU model, logical cores and which bf16 matrix units its flags announce (Linux /proc/cpuinfo)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    model, flags = platform.processor() or "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("unknown", "x86_64", ""):
            model = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        **{f: f in flags for f in BF16_FLAGS},
        "avx512f": "avx512f" in flags,
    }


def bf16_verdict(facts: dict) -> str:
    """One line: whether bf16 inference should be faster than fp32 on this CPU, and roughly why."""
    if facts["amx_bf16"] and facts["amx_tile"]:
        return "yes: AMX bf16 tiles; expect bf16 several times faster than fp32 (use --dtype bfloat16)"
    if facts["avx512_bf16"]:
        return (
            "yes: AVX512-BF16 (no AMX); measured about 2.5x on a Zen 4 for captioning (BENCHMARKS.md); "
            "use --dtype bfloat16"
        )
    return "no: this CPU has no bf16 matrix instructions; bf16 is emulated and slower, keep float32"


def facts() -> dict:
    """Everything `blip env` prints, as one dict."""
    import torch

    out = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **cpu_facts(),
    }
    out["bf16_pays_on_cpu"] = bf16_verdict(out)
    out["cuda"] = torch.cuda.is_available()
    if out["cuda"]:
        gpus = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        out["gpus"] = [f"{g.name} (compute {g.major}.{g.minor}, {g.total_memory / 2**30:.0f} GiB)" for g in gpus]
        out["bf16_pays_on_gpu"] = (
            "yes: bf16 tensor cores (the default on cuda)"
            if torch.cuda.is_bf16_supported()
            else "no: this GPU has no bf16 support; use --dtype float32"
        )
    return out


def run(args: argparse.Namespace) -> int:
    """Print the facts, one `key: value` per line (or one JSON object)."""
    info = facts()
    emit(info, args.json, "\n".join(f"{k}: {v}" for k, v in info.items()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `blip env`."""
    p = sub.add_parser(
        "env",
        help="print torch/CPU/GPU facts and whether bf16 pays here",
        description="Print torch, CPU and GPU facts, including whether the CPU has bf16 matrix "
        "units (AMX: amx_bf16 + amx_tile; AVX512-BF16: avx512_bf16) and so whether "
        "--dtype bfloat16 should be faster than float32.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
