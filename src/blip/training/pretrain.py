"""BLIP's pretraining objective: ITC with momentum distillation and queues, ITM with hard negatives, LM.

Names are the reference's (`visual_encoder_m`, `image_queue`, ...), so its pretraining checkpoints resume here.
Distributed, every rank scores its own rows against the momentum features of ALL ranks and draws ITM hard
negatives from all ranks (their image embeddings gathered with gradients), so N processes compute what one
process computes on the whole batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blip.model.blip import BlipModel
from blip.model.config import PARTS, BlipConfig
from blip.model.losses import lm_loss
from blip.training.distributed import gather, gather_padded, gather_with_grad, rank

MOMENTUM_PAIRS = (("visual_encoder", "visual_encoder_m"), ("vision_proj", "vision_proj_m"),
                  ("text_encoder", "text_encoder_m"), ("text_proj", "text_proj_m"))


@dataclass
class PretrainLosses:
    """The three losses and their sum."""

    itc: torch.Tensor
    itm: torch.Tensor
    lm: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.itc + self.itm + self.lm


class BlipPretrain(BlipModel):
    """A full BLIP plus momentum encoders and feature queues; forward returns the pretraining losses."""

    def __init__(self, cfg: BlipConfig, queue_size: int = 57600, momentum: float = 0.995):
        super().__init__(cfg.replace(parts=list(PARTS), decoder_input="image"))
        self.momentum = momentum
        self.queue_size = queue_size
        share_encoder_decoder(self.text_encoder, self.text_decoder.bert)
        self.text_decoder.cls.predictions.decoder.weight = self.text_encoder.embeddings.word_embeddings.weight
        for online, ema in MOMENTUM_PAIRS:
            setattr(self, ema, copy.deepcopy(getattr(self, online)).requires_grad_(False))
        d = cfg.embed_dim
        self.register_buffer("image_queue", F.normalize(torch.randn(d, queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(d, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA of the online encoders into the momentum ones."""
        for online, ema in MOMENTUM_PAIRS:
            for p, q in zip(getattr(self, online).parameters(), getattr(self, ema).parameters()):
                q.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor) -> None:
        """Write the (all-rank) momentum features into the ring queues."""
        n, ptr = image_feat.shape[0], int(self.queue_ptr)
        idx = (torch.arange(n, device=image_feat.device) + ptr) % self.queue_size
        self.image_queue[:, idx] = image_feat.t()
        self.text_queue[:, idx] = text_feat.t()
        self.queue_ptr[0] = (ptr + n) % self.queue_size

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                alpha: float = 0.4, generator: torch.Generator | None = None,
                hardest_negatives: bool = False) -> PretrainLosses:
        """Losses for a local batch of image-caption pairs (input_ids start with [CLS]).

        ITM negatives are sampled by similarity as in the paper; `hardest_negatives` takes the most similar one
        instead (deterministic, for testing that N ranks equal one process).
        """
        cfg = self.cfg.text
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        b = pixels.shape[0]
        image_embeds = self.encode_image(pixels)
        image_feat = self.image_embed(image_embeds)
        text_feat = self.text_embed(input_ids, attention_mask)

        # ITC as the reference: online features against the momentum features of the whole (all-rank) batch
        # plus the queue, with targets softened by the momentum model's own similarities.
        offset = rank() * b
        rows = torch.arange(b, device=pixels.device) + offset
        with torch.no_grad():
            self.momentum_update()
            image_feat_m = gather(F.normalize(self.vision_proj_m(self.visual_encoder_m(pixels)[:, 0]), dim=-1))
            text_m = self.text_encoder_m(input_ids, attention_mask)
            text_feat_m = gather(F.normalize(self.text_proj_m(text_m[:, 0]), dim=-1))
            image_bank = torch.cat([image_feat_m.t(), self.image_queue.clone()], dim=1)
            text_bank = torch.cat([text_feat_m.t(), self.text_queue.clone()], dim=1)
            hard = torch.zeros(b, image_bank.shape[1], device=pixels.device)
            hard[torch.arange(b), rows] = 1
            i2t_targets = alpha * F.softmax(image_feat_m[rows] @ text_bank / self.temp, dim=1) + (1 - alpha) * hard
            t2i_targets = alpha * F.softmax(text_feat_m[rows] @ image_bank / self.temp, dim=1) + (1 - alpha) * hard
        sim_i2t = image_feat @ text_bank / self.temp
        sim_t2i = text_feat @ image_bank / self.temp
        loss_itc = (-(F.log_softmax(sim_i2t, 1) * i2t_targets).sum(1).mean()
                    - (F.log_softmax(sim_t2i, 1) * t2i_targets).sum(1).mean()) / 2
        self.enqueue(image_feat_m, text_feat_m)
        n_all = image_feat_m.shape[0]

        # ITM: for each image a hard negative text and for each text a hard negative image, from all ranks.
        enc_ids = input_ids.clone()
        enc_ids[:, 0] = cfg.enc_id
        image_embeds_all = gather_with_grad(image_embeds)
        ids_all, mask_all = gather_padded(enc_ids, cfg.pad_id), gather_padded(attention_mask, 0)
        with torch.no_grad():
            w_i2t = F.softmax(sim_i2t[:, :n_all].float(), dim=1) + 1e-4
            w_t2i = F.softmax(sim_t2i[:, :n_all].float(), dim=1) + 1e-4
            w_i2t[torch.arange(b), rows] = 0
            w_t2i[torch.arange(b), rows] = 0
            if hardest_negatives:
                neg_text, neg_image = w_i2t.argmax(dim=1), w_t2i.argmax(dim=1)
            else:
                neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
                neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        itm_ids = torch.cat([enc_ids, enc_ids, ids_all[neg_text]])
        itm_mask = torch.cat([attention_mask, attention_mask, mask_all[neg_text]])
        itm_images = torch.cat([image_embeds, image_embeds_all[neg_image], image_embeds])
        itm_logits = self.itm_head(self.text_encoder(itm_ids, itm_mask, itm_images)[:, 0])
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(pixels.device)
        loss_itm = F.cross_entropy(itm_logits, labels)

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
