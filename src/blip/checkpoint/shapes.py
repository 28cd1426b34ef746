"""A BLIP's architecture read from its tensors' shapes (reference names), for formats that carry no config."""

from __future__ import annotations

import math
import re

import torch

from blip.errors import CheckpointError
from blip.model.config import PARTS, BlipConfig, TextConfig, VisionConfig


def _count_layers(sd: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max(int(m.group(1)) for k in sd if (m := pattern.match(k)))


def infer_config(sd: dict[str, torch.Tensor]) -> BlipConfig:
    """Architecture from tensor shapes (reference names); heads assume 64-wide heads, as every released BLIP."""
    try:
        pos = sd["visual_encoder.pos_embed"]
        patch = sd["visual_encoder.patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError("not a BLIP checkpoint: no visual_encoder.pos_embed / patch_embed weights") from None
    width, patch_size = pos.shape[-1], patch.shape[-1]
    grid = math.isqrt(pos.shape[1] - 1)
    vision = VisionConfig(
        image_size=grid * patch_size,
        patch_size=patch_size,
        width=width,
        depth=_count_layers(sd, "visual_encoder.blocks."),
        heads=max(1, width // 64),
        mlp_dim=sd["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0],
    )
    parts = [p for p in PARTS if _has_part(sd, p)]
    text_prefix = next(
        (p for p in ("text_encoder.", "text_decoder.bert.") if f"{p}embeddings.word_embeddings.weight" in sd), None
    )
    if text_prefix is None:
        raise CheckpointError("not a BLIP checkpoint: no text_encoder or text_decoder word embeddings")
    words = sd[f"{text_prefix}embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden=hidden,
        layers=_count_layers(sd, f"{text_prefix}encoder.layer."),
        heads=max(1, hidden // 64),
        intermediate=sd[f"{text_prefix}encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_positions=sd[f"{text_prefix}embeddings.position_embeddings.weight"].shape[0],
    )
    key = "text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"
    # A VQA decoder exists beside an encoder and no ITC heads (it reads the question's states, not the image).
    decoder_input = "question" if key in sd and "text_encoder" in parts and "itc" not in parts else "image"
    embed_dim = sd["vision_proj.weight"].shape[0] if "vision_proj.weight" in sd else 256
    nlvr = "cls_head.0.weight" in sd
    return BlipConfig(
        vision=vision,
        text=text,
        embed_dim=embed_dim,
        parts=tuple(parts),
        decoder_input=decoder_input,
        nlvr=nlvr,
        nlvr_merge_from=nlvr_merge_from(sd, text.layers) or 6,
    )


def nlvr_merge_from(sd: dict[str, torch.Tensor], layers: int) -> int | None:
    """First NLVR2 merge layer of a twin-branch checkpoint (its layer count when none merges); None if not twin."""
    if not any(".crossattention.self0." in k for k in sd):
        return None
    pattern = re.compile(r"^text_encoder\.encoder\.layer\.(\d+)\.crossattention\.output\.merge_layer\.")
    return min((int(m.group(1)) for k in sd if (m := pattern.match(k))), default=layers)


def _has_part(sd: dict[str, torch.Tensor], part: str) -> bool:
    marker = {
        "text_encoder": "text_encoder.embeddings.word_embeddings.weight",
        "text_decoder": "text_decoder.bert.embeddings.word_embeddings.weight",
        "itc": "vision_proj.weight",
        "itm": "itm_head.weight",
    }[part]
    return marker in sd
