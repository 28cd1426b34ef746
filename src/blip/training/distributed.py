"""Thin helpers over torch.distributed that are no-ops in a plain single process (no torchrun needed)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


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


def fully_shard_model(model: nn.Module, device: torch.device) -> list[nn.Parameter]:
    """Shard `model` in place with FSDP2: each ViT block (online and momentum) is a unit, the root holds the rest.

    Returns the parameters left whole on every rank that need gradients; the caller averages those itself.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from blip.model.vision import VisionEncoder

    # Why only the ViT blocks are units of their own (they hold most of ViT-L's weights):
    # - FSDP2 never writes an unsharded parameter back to its shard, and the momentum EMA writes in place in the
    #   middle of forward, reading the online weights: an online unit and its momentum copy must both be sharded
    #   there (blocks: they reshard after their forward), or both whole, as the root's unsharded online weights
    #   and their momentum copies left out of FSDP (ignored) are.
    # - A text layer cannot be a unit: TextTransformer computes cross-attention keys/values outside the layer's
    #   forward, so the layer would be resharded by its post-backward before that computation's backward runs,
    #   and the pretraining decoder's layers reuse the encoder layers' cross-attention and FFN modules. Grouping
    #   encoder and decoder layer (fully_shard([enc, dec])) keeps the group gathered until both ran, i.e. still
    #   unsharded at the EMA while its momentum copy is sharded. The text side stays in the root group: its
    #   gradients and optimiser state are sharded, its parameters gathered from forward to backward (ZeRO-2).
    # - fully_shard refuses 0-dim parameters (the ITC temperature), so they stay whole too.
    mesh = init_device_mesh(device.type, (world_size(),))
    model.to(device)  # ignored parameters are not moved by fully_shard
    blocks = [block for m in model.modules() if isinstance(m, VisionEncoder) for block in m.blocks]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    in_units = {p for block in blocks for p in block.parameters()}
    whole = [p for p in model.parameters() if p not in in_units and (p.dim() == 0 or not p.requires_grad)]
    fully_shard(model, mesh=mesh, ignored_params=set(whole))
    return [p for p in whole if p.requires_grad]


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of whole (unsharded, un-DDP'd) parameters across ranks, as DDP would."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world_size()
