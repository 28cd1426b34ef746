"""FSDP2 in the trainer: 2 gloo ranks on the CPU train exactly as DDP does, and resume from an FSDP checkpoint.

Run by pytest, this file launches itself under torchrun; as a torchrun worker it trains a tiny BlipPretrain with
DDP, with FSDP, and with FSDP interrupted after step 2 and resumed by a new trainer, and rank 0 saves the results.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

STEPS = 3


@dataclass
class Pair:
    image: torch.Tensor
    ids: torch.Tensor


class Pairs(torch.utils.data.Dataset):
    """16 fixed random image-caption pairs."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.images = torch.randn(16, 3, 32, 32, generator=g)
        self.ids = torch.randint(5, 58, (16, 9), generator=g)
        self.ids[:, 0], self.ids[:, -1] = 2, 3

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return Pair(self.images[i], self.ids[i])


def loss_fn(m, batch, info):
    ids = batch["ids"]
    losses = m(batch["image"], ids, torch.ones_like(ids), alpha=0.4, hardest_negatives=True)
    return {"loss": losses.total, "itc": losses.itc, "itm": losses.itm, "lm": losses.lm}


def worker(out: Path) -> None:
    """Train the three ways (this process is one torchrun rank); rank 0 saves what the test compares."""
    from blip.checkpoint import save_pretrained
    from blip.distributed import rank
    from blip.model.config import preset
    from blip.training.pretrain import BlipPretrain
    from blip.training.trainer import TrainConfig, Trainer

    def model(seed: int) -> BlipPretrain:
        torch.manual_seed(seed)
        cfg = preset(
            "tiny",
            **{
                "text.vocab_size": 60,
                "text.dec_id": 58,
                "text.enc_id": 59,
                "text.cls_id": 2,
                "text.sep_id": 3,
                "vision.image_size": 32,
                "vision.patch_size": 16,
                "text.dropout": 0.0,
                "text.attention_dropout": 0.0,
            },
        )
        return BlipPretrain(cfg, queue_size=16)

    def run(name: str, fsdp: bool, max_steps: int, seed: int = 0) -> tuple[list[float], BlipPretrain]:
        cfg = TrainConfig(
            out=str(out / name),
            epochs=2,
            batch_size=4,
            max_steps=max_steps,
            lr=1e-3,
            warmup_steps=1,
            checkpoint_every=2,
            num_workers=0,
            progress=False,
            log_every=1,
            fsdp=fsdp,
        )
        m = model(seed)
        history = Trainer(cfg, m, Pairs(), loss_fn).fit()
        return [r["loss"] for r in history], m

    results = {}
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        losses, m = run(name, fsdp, STEPS)
        results[name] = {"losses": losses, "state": {k: v.clone() for k, v in m.state_dict().items()}}
    run("resumed", True, 2)  # "killed" after step 2 (its checkpoint)
    losses, m = run("resumed", True, STEPS, seed=1)  # a differently initialised model: the weights must be loaded
    results["resumed"] = {"losses": losses, "state": {k: v.clone() for k, v in m.state_dict().items()}}
    if rank() == 0:
        save_pretrained(m, None, out / "model")
        torch.save(results, out / "results.pt")


def test_fsdp_trains_as_ddp_and_resumes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
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
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = torch.load(tmp_path / "results.pt")
    ddp, fsdp, resumed = results["ddp"], results["fsdp"], results["resumed"]
    assert len(ddp["losses"]) == len(fsdp["losses"]) == STEPS and len(resumed["losses"]) == 1
    assert max(abs(a - b) for a, b in zip(ddp["losses"], fsdp["losses"])) <= 1e-5
    assert ddp["state"].keys() == fsdp["state"].keys() == resumed["state"].keys()
    for other in (fsdp, resumed):
        worst = max(float((ddp["state"][k].float() - other["state"][k].float()).abs().max()) for k in ddp["state"])
        assert worst <= 1e-5
    assert abs(resumed["losses"][0] - fsdp["losses"][-1]) <= 1e-5
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert torch.allclose(
        saved["visual_encoder.blocks.0.attn.qkv.weight"],
        fsdp["state"]["visual_encoder.blocks.0.attn.qkv.weight"],
        atol=1e-5,
    )


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
    import torch.distributed as dist

    dist.barrier()  # no rank tears gloo down while another still uses it
    dist.destroy_process_group()
    # gloo's threads sometimes abort in C++ static destructors at interpreter exit (torch 2.14, CPU): the work and
    # the result file are complete here, so leave without running them.
    sys.stdout.flush()
    os._exit(0)
