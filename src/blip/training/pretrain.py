"""BLIP's pretraining objective: ITC with momentum distillation and queues, ITM with hard negatives, LM.

ITM hard negatives are drawn from all ranks (their image embeddings gathered with gradients), so N processes
compute what one process computes on the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blip.defaults import MOMENTUM, QUEUE_SIZE
from blip.distributed import rank, world_size
from blip.model.config import PARTS, BlipConfig
from blip.model.losses import lm_loss
from blip.training.contrastive import MomentumContrastive


@dataclass
class PretrainLosses:
    """The three losses and their sum."""

    itc: torch.Tensor
    itm: torch.Tensor
    lm: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.itc + self.itm + self.lm


class BlipPretrain(MomentumContrastive):
    """A full BLIP plus momentum encoders and feature queues; forward returns the pretraining losses."""

    def __init__(
        self,
        cfg: BlipConfig,
        queue_size: int = QUEUE_SIZE,
        momentum: float = MOMENTUM,
        itm_negatives: str = "similarity",
    ):
        super().__init__(
            cfg.replace(parts=list(PARTS), decoder_input="image"), queue_size, momentum, itm_negatives=itm_negatives
        )
        share_encoder_decoder(self.text_encoder, self.text_decoder.bert)
        self.text_decoder.cls.predictions.decoder.weight = self.text_encoder.embeddings.word_embeddings.weight

    def forward(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        alpha: float = 0.4,
        generator: torch.Generator | None = None,
        hardest_negatives: bool = False,
    ) -> PretrainLosses:
        """Losses for a local batch of image-caption pairs (input_ids start with [CLS]).

        ITM negatives are sampled by similarity as in the paper; `hardest_negatives` takes the most similar one
        instead (deterministic, for testing that N ranks equal one process).
        """
        cfg = self.cfg.text
        b = pixels.shape[0]
        rows = torch.arange(b, device=pixels.device) + rank() * b
        image_embeds = self.encode_image(pixels)
        image_feat = self.image_embed(image_embeds)
        text_feat = self.text_embed(input_ids, attention_mask)
        loss_itc, sim_i2t, sim_t2i = self.itc(pixels, input_ids, attention_mask, image_feat, text_feat, alpha)
        n_all = b * world_size()

        # ITM negatives by similarity to the momentum features of the whole batch (+1e-4 as the reference).
        with torch.no_grad():
            w_i2t = F.softmax(sim_i2t[:, :n_all].float(), dim=1) + 1e-4
            w_t2i = F.softmax(sim_t2i[:, :n_all].float(), dim=1) + 1e-4
            w_i2t[torch.arange(b), rows] = 0
            w_t2i[torch.arange(b), rows] = 0
        loss_itm = self.itm(image_embeds, input_ids, attention_mask, w_i2t, w_t2i, generator, hardest_negatives)

        # LM: [DEC] first, padding ignored, label smoothing 0.1, mean over target tokens.
        dec_ids = input_ids.clone()
        dec_ids[:, 0] = cfg.dec_id
        logits = self.text_decoder(dec_ids, attention_mask, image_embeds)
        tokens = attention_mask[:, 1:].sum()
        loss_lm = lm_loss(logits, dec_ids, attention_mask, self.cfg.label_smoothing).sum() / tokens
        return PretrainLosses(loss_itc, loss_itm, loss_lm)


def share_encoder_decoder(encoder: nn.Module, decoder_bert: nn.Module) -> None:
    """Make the decoder use the encoder's embeddings, cross-attention and FFN; only self-attention stays its own."""
    decoder_bert.embeddings = encoder.embeddings
    for enc_layer, dec_layer in zip(encoder.encoder.layer, decoder_bert.encoder.layer):
        dec_layer.crossattention = enc_layer.crossattention
        dec_layer.intermediate = enc_layer.intermediate
        dec_layer.output = enc_layer.output
