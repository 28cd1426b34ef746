"""Thin helpers over torch.distributed that are no-ops in a plain single process (no torchrun needed).

Training, evaluation, CapFilt and the inference engine all use them, so they live outside blip.training.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's x along dim 0; gradients flow back to each rank's own rows."""
    if not is_distributed():
        return x
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(x), dim=0)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's x along dim 0, without gradients."""
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


@torch.no_grad()
def gather_padded(x: torch.Tensor, pad: int) -> torch.Tensor:
    """gather() for (B, T) token tensors whose T differs across ranks: right-pad to the longest first."""
    if not is_distributed():
        return x
    longest = torch.tensor([x.shape[1]], device=x.device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    return gather(F.pad(x, (0, int(longest) - x.shape[1]), value=pad))


def setup_distributed() -> torch.device:
    """Join the torchrun process group when launched by torchrun (NCCL on GPU, gloo on CPU); pick the device."""
    if "RANK" in os.environ and not is_distributed():
        # GPU runs also reduce small CPU tensors (batch sizes, end-of-stream flags): gloo carries those.
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")
