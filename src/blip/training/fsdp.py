"""FSDP2 sharding of the pretraining model and the gradient averaging of the parameters it leaves whole."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from blip.distributed import world_size


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
