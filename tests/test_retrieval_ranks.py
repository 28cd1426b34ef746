"""Two-stage retrieval split across torchrun ranks gives exactly the single-process score matrices.

Run by pytest; it also runs itself under torchrun (`python tests/test_retrieval_ranks.py OUT`) as the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from blip.evaluation.retrieval import two_stage_scores

N_IMAGES, N_TEXTS, K = 7, 11, 4  # 7 and 11 rows do not split evenly over 2 ranks


def similarities() -> torch.Tensor:
    """A fixed random ITC matrix (images x texts)."""
    return torch.randn(N_IMAGES, N_TEXTS, generator=torch.Generator().manual_seed(0))


def scores(scored: list[tuple[int, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-stage matrices with a deterministic fake ITM scorer; `scored` collects the (image, text) pairs asked."""
    table = torch.randn(N_IMAGES, N_TEXTS, generator=torch.Generator().manual_seed(1))

    def itm(images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        if scored is not None:
            scored.extend(zip(images.tolist(), texts.tolist()))
        return table[images, texts]

    return two_stage_scores(similarities(), K, itm, rows_per_call=2)


def worker(out: str) -> None:
    """One torchrun rank: score its share, save the full matrices and the pairs it scored."""
    import torch.distributed as dist

    from blip.distributed import rank, setup_distributed

    setup_distributed()
    scored: list[tuple[int, int]] = []
    i2t, t2i = scores(scored)
    torch.save({"i2t": i2t, "t2i": t2i, "scored": scored}, Path(out) / f"rank{rank()}.pt")
    dist.barrier()  # no rank tears gloo down while another still uses it
    dist.destroy_process_group()
    # gloo's threads sometimes abort in C++ static destructors at interpreter exit (torch 2.14, CPU): the work and
    # the result files are complete here, so leave without running them.
    sys.stdout.flush()
    os._exit(0)


def test_two_ranks_equal_one_process(tmp_path):
    one_scored: list[tuple[int, int]] = []
    want_i2t, want_t2i = scores(one_scored)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            __file__,
            str(tmp_path),
        ],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for got in ranks:
        assert torch.equal(got["i2t"], want_i2t) and torch.equal(got["t2i"], want_t2i)
    # Each rank re-scored only its own block of query rows: together exactly the single process's pairs, once each.
    assert sorted(ranks[0]["scored"] + ranks[1]["scored"]) == sorted(one_scored)
    assert len(ranks[0]["scored"]) == (4 + 6) * K and len(ranks[1]["scored"]) == (3 + 5) * K
    assert ((want_i2t > -100).sum(1) == K).all() and ((want_t2i > -100).sum(1) == K).all()


def test_evaluate_command_under_torchrun_prints_the_single_process_recalls_once(hf_models, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from blip.cli import main

    texts = [["a red square", "two blue circles"], ["a dog on the beach"], ["a cat", "the green triangle"]]
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    (tmp_path / "test.json").write_text(json.dumps([{"image": f"{i}.png", "caption": c} for i, c in enumerate(texts)]))
    args = [
        "evaluate",
        "retrieval",
        "--model",
        str(hf_models["retrieval"][1]),
        "--data",
        str(tmp_path / "test.json"),
        "--image-root",
        str(tmp_path),
        "--k-test",
        "2",
    ]
    assert main(args) == 0
    want = json.loads(capsys.readouterr().out)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "blip", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout) == want  # one JSON object: only rank 0 printed


if __name__ == "__main__":
    worker(sys.argv[1])
