"""The ViT image encoder: timm's VisionTransformer, returning every token, with partial gradient checkpointing."""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from blip.model.config import VisionConfig


class VisionEncoder(VisionTransformer):
    """timm ViT whose parameter names are the reference BLIP's (`cls_token`, `pos_embed`, `blocks.N...`, `norm`)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_dim / cfg.width,
            qkv_bias=True,
            num_classes=0,
            global_pool="",
            norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps),
            drop_path_rate=cfg.drop_path,
        )
        self.cfg = cfg

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, 1 + patches, width) tokens after the final LayerNorm, CLS first."""
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(pixels))))
        ckpt_from = self.cfg.grad_ckpt_from
        for i, block in enumerate(self.blocks):
            # Only blocks from grad_ckpt_from on are checkpointed (the reference's retrieval fine-tuning starts at
            # block 4): memory where it pays, speed elsewhere.
            if ckpt_from is not None and i >= ckpt_from and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


def resample_pos_embed(pos_embed: torch.Tensor, image_size: int, patch_size: int) -> torch.Tensor:
    """Resample a (1, 1 + g*g, D) position embedding to another image size, bicubic, CLS position kept (reference)."""
    grid = image_size // patch_size
    if pos_embed.shape[1] == grid * grid + 1:
        return pos_embed
    # antialias off: the reference resamples with plain bicubic F.interpolate.
    return resample_abs_pos_embed(pos_embed, new_size=[grid, grid], num_prefix_tokens=1, antialias=False)
