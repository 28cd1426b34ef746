"""One pretraining step, run by tests/test_trainer.py as 1 process on 8 pairs or as 2 torchrun ranks of 4 each."""

import os
import sys

import torch
import torch.distributed as dist

from blip.distributed import rank, setup_distributed, world_size
from blip.model.config import preset
from blip.training.pretrain import BlipPretrain

setup_distributed()
torch.manual_seed(0)
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
model = BlipPretrain(cfg, queue_size=16)
g = torch.Generator().manual_seed(1)
pixels = torch.randn(8, 3, 32, 32, generator=g)
ids = torch.randint(5, 58, (8, 9), generator=g)
ids[:, 0], ids[:, -1] = 2, 3
per = 8 // world_size()
rows = slice(rank() * per, (rank() + 1) * per)
net = torch.nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
losses = net(pixels[rows], ids[rows], torch.ones_like(ids[rows]), alpha=0.4, hardest_negatives=True)
losses.total.backward()
values = {k: getattr(losses, k).detach().clone() for k in ("itc", "itm", "lm")}
if dist.is_initialized():
    for v in values.values():  # the 1-process loss is the mean of the ranks' losses
        dist.all_reduce(v)
        v /= world_size()
if rank() == 0:
    torch.save(
        {
            **{k: float(v) for k, v in values.items()},
            "queue": model.image_queue.clone(),
            "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        },
        sys.argv[1],
    )
if dist.is_initialized():
    dist.barrier()  # no rank tears gloo down while another still uses it
    dist.destroy_process_group()
# gloo's threads sometimes abort in C++ static destructors at interpreter exit (torch 2.14, CPU): the work and the
# result file are complete here, so leave without running them.
sys.stdout.flush()
os._exit(0)
