"""Losses shared by training and inference (answer ranking scores answers with the training LM loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    label_smoothing: float = 0.1,
    ignore_prefix: int = 1,
) -> torch.Tensor:
    """Per-sequence summed next-token cross-entropy (B,) as the reference's reduction='none'.

    Position t predicts token t+1; padding and the first `ignore_prefix` tokens (the [DEC] start, or a prompt)
    are not targets.
    """
    targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    if ignore_prefix > 1:
        targets[:, : ignore_prefix - 1] = -100
    loss = F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(),
        targets,
        ignore_index=-100,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    return loss.sum(dim=1)
