"""BlipModel: the ViT, the MED text transformer in its three uses, and the ITC / ITM / LM heads."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from blip.model.config import BlipConfig
from blip.model.text import TextDecoder, TextTransformer
from blip.model.vision import VisionEncoder


class BlipModel(nn.Module):
    """The parts a BLIP checkpoint holds, under the reference code's names; which parts exist is `cfg.parts`."""

    def __init__(self, cfg: BlipConfig):
        super().__init__()
        self.cfg = cfg
        width, hidden = cfg.vision.width, cfg.text.hidden
        self.visual_encoder = VisionEncoder(cfg.vision)
        if "text_encoder" in cfg.parts:
            self.text_encoder = TextTransformer(
                cfg.text, encoder_width=width, twin=cfg.nlvr, merge_from=cfg.nlvr_merge_from
            )
        if "text_decoder" in cfg.parts:
            # The VQA answer decoder reads the question encoder's states, which are text-wide (reference BLIP_VQA).
            reads = hidden if cfg.decoder_input == "question" else width
            self.text_decoder = TextDecoder(cfg.text, encoder_width=reads)
        if "itc" in cfg.parts:
            self.vision_proj = nn.Linear(width, cfg.embed_dim)
            self.text_proj = nn.Linear(hidden, cfg.embed_dim)
            self.temp = nn.Parameter(torch.tensor(0.07))
        if "itm" in cfg.parts:
            self.itm_head = nn.Linear(hidden, 2)
        if cfg.nlvr:
            self.cls_head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        for name, module in self.named_children():
            if name != "visual_encoder":  # timm initialises the ViT its own way
                module.apply(partial(_bert_init, std=cfg.text.init_std))
        if cfg.vision.init_std != 0.02:  # timm's own std otherwise
            for module in self.visual_encoder.modules():
                if isinstance(module, nn.Linear):
                    nn.init.trunc_normal_(module.weight, std=cfg.vision.init_std)

    def has(self, part: str) -> bool:
        """Whether this model carries a part (text_encoder, text_decoder, itc, itm)."""
        return part in self.cfg.parts

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, 1 + patches, width), CLS first."""
        return self.visual_encoder(pixels)

    def image_embed(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC image feature from the CLS token."""
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC text feature from the unimodal encoder's [CLS] output."""
        hidden = self.text_encoder(input_ids, attention_mask)
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def encode_grounded(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Image-grounded encoder states; position 0 is replaced by [ENC] as in the reference."""
        ids = input_ids.clone()
        ids[:, 0] = self.cfg.text.enc_id
        return self.text_encoder(ids, attention_mask, image_embeds)

    def itm_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """ITM logits (B, 2), index 1 = match; text rows may be R per image row."""
        return self.itm_head(self.encode_grounded(input_ids, attention_mask, image_embeds)[:, 0])

    def nlvr_logits(
        self,
        image_embeds0: torch.Tensor,
        image_embeds1: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """NLVR2 logits (B, 2), index 1 = the statement is true of the image pair."""
        ids = input_ids.clone()
        ids[:, 0] = self.cfg.text.enc_id
        states = self.text_encoder(ids, attention_mask, (image_embeds0, image_embeds1))
        return self.cls_head(states[:, 0])


def _bert_init(module: nn.Module, std: float) -> None:
    """BERT's initialisation (normal std, zero biases, unit LayerNorm): training from scratch diverges without it."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        nn.init.zeros_(module.weight[module.padding_idx])
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
