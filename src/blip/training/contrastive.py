"""What pretraining and retrieval fine-tuning share: momentum encoders, feature queues, ITC with soft targets.

Names are the reference's (`visual_encoder_m`, `image_queue`, `idx_queue`, ...), so its checkpoints resume here.
Distributed, every rank scores its own rows against the momentum features of ALL ranks (gathered), so N
processes compute what one process computes on the whole batch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from blip.distributed import gather, gather_padded, gather_with_grad, rank
from blip.model.blip import BlipModel
from blip.model.config import BlipConfig

# How ITM draws a negative for each pair: by ITC similarity (the paper's hard negatives), or uniformly.
ITM_NEGATIVES = ("similarity", "uniform")

MOMENTUM_PAIRS = (
    ("visual_encoder", "visual_encoder_m"),
    ("vision_proj", "vision_proj_m"),
    ("text_encoder", "text_encoder_m"),
    ("text_proj", "text_proj_m"),
)


class MomentumContrastive(BlipModel):
    """A BLIP with momentum copies of its unimodal encoders and queues of their features (and image ids)."""

    POINTER = "queue_ptr"  # the reference pretraining model's name; its retrieval model says "ptr_queue"

    def __init__(
        self,
        cfg: BlipConfig,
        queue_size: int,
        momentum: float,
        with_ids: bool = False,
        itm_negatives: str = "similarity",
    ):
        super().__init__(cfg)
        if itm_negatives not in ITM_NEGATIVES:
            raise ValueError(f"itm_negatives: {' or '.join(ITM_NEGATIVES)}, not {itm_negatives!r}")
        self.itm_negatives = itm_negatives
        self.momentum = momentum
        self.queue_size = queue_size
        for online, ema in MOMENTUM_PAIRS:
            setattr(self, ema, copy.deepcopy(getattr(self, online)).requires_grad_(False))
        d = cfg.embed_dim
        self.register_buffer("image_queue", F.normalize(torch.randn(d, queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(d, queue_size), dim=0))
        if with_ids:
            self.register_buffer("idx_queue", torch.full((1, queue_size), -100, dtype=torch.long))
        self.register_buffer(self.POINTER, torch.zeros(1, dtype=torch.long))

    @property
    def pointer(self) -> torch.Tensor:
        return getattr(self, self.POINTER)

    @torch.no_grad()
    def reset_momentum(self) -> None:
        """Make the momentum encoders exact copies of the online ones (after loading online weights)."""
        for online, ema in MOMENTUM_PAIRS:
            getattr(self, ema).load_state_dict(getattr(self, online).state_dict())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """EMA of the online encoders into the momentum ones."""
        for online, ema in MOMENTUM_PAIRS:
            for p, q in zip(getattr(self, online).parameters(), getattr(self, ema).parameters()):
                q.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write the (all-rank) momentum features, and image ids, into the ring queues."""
        n, ptr = image_feat.shape[0], int(self.pointer)
        slots = (torch.arange(n, device=image_feat.device) + ptr) % self.queue_size
        # Under bf16 autocast the features are bf16; the queues stay fp32 like the weights.
        self.image_queue[:, slots] = image_feat.t().to(self.image_queue.dtype)
        self.text_queue[:, slots] = text_feat.t().to(self.text_queue.dtype)
        if ids is not None:
            self.idx_queue[:, slots] = ids.view(1, -1)
        self.pointer[0] = (ptr + n) % self.queue_size

    def itc(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_feat: torch.Tensor,
        text_feat: torch.Tensor,
        alpha: float,
        ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ITC loss with momentum distillation; returns (loss, sim_i2t, sim_t2i) over [all-rank batch, queue].

        Positives are each pair itself, or with `ids` every pair (and queued feature) of the same image.
        """
        b = pixels.shape[0]
        rows = torch.arange(b, device=pixels.device) + rank() * b
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update()
            image_m = gather(F.normalize(self.vision_proj_m(self.visual_encoder_m(pixels)[:, 0]), dim=-1))
            text_m = self.text_encoder_m(input_ids, attention_mask)[:, 0]
            text_m = gather(F.normalize(self.text_proj_m(text_m), dim=-1))
            image_bank = torch.cat([image_m.t(), self.image_queue.clone()], dim=1)
            text_bank = torch.cat([text_m.t(), self.text_queue.clone()], dim=1)
            if ids is None:
                hard = torch.zeros(b, image_bank.shape[1], device=pixels.device)
                hard[torch.arange(b), rows] = 1
                all_ids = None
            else:
                all_ids = gather(ids)
                pos = (ids.view(-1, 1) == torch.cat([all_ids.view(1, -1), self.idx_queue.clone()], dim=1)).float()
                hard = pos / pos.sum(dim=1, keepdim=True)
            i2t_targets = alpha * F.softmax(image_m[rows] @ text_bank / self.temp, dim=1) + (1 - alpha) * hard
            t2i_targets = alpha * F.softmax(text_m[rows] @ image_bank / self.temp, dim=1) + (1 - alpha) * hard
        sim_i2t = image_feat @ text_bank / self.temp
        sim_t2i = text_feat @ image_bank / self.temp
        loss = (
            -(F.log_softmax(sim_i2t, 1) * i2t_targets).sum(1).mean()
            - (F.log_softmax(sim_t2i, 1) * t2i_targets).sum(1).mean()
        ) / 2
        self.enqueue(image_m, text_m, all_ids)
        return loss, sim_i2t, sim_t2i

    def itm(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        w_i2t: torch.Tensor,
        w_t2i: torch.Tensor,
        generator: torch.Generator | None = None,
        hardest: bool = False,
    ) -> torch.Tensor:
        """ITM loss over the B positives, a negative text per image and a negative image per text.

        Negatives come from every rank's batch with the given (B, all-rank batch) weights, or uniformly among the
        pairs those weights allow (zero weight: the pair itself, or its image's) when `itm_negatives` is "uniform";
        `hardest` takes the highest-weighted one instead of sampling (deterministic, for testing that N ranks equal
        one process).
        """
        b = image_embeds.shape[0]
        enc_ids = input_ids.clone()
        enc_ids[:, 0] = self.cfg.text.enc_id
        image_embeds_all = gather_with_grad(image_embeds)
        ids_all, mask_all = gather_padded(enc_ids, self.cfg.text.pad_id), gather_padded(attention_mask, 0)
        with torch.no_grad():
            if self.itm_negatives == "uniform":
                w_i2t, w_t2i = (w_i2t > 0).float(), (w_t2i > 0).float()
            if hardest:
                neg_text, neg_image = w_i2t.argmax(dim=1), w_t2i.argmax(dim=1)
            else:
                neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
                neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        width = ids_all.shape[1]
        pad = lambda t, v: F.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731 - local rows to all-rank width
        itm_ids = torch.cat([pad(enc_ids, self.cfg.text.pad_id)] * 2 + [ids_all[neg_text]])
        itm_mask = torch.cat([pad(attention_mask, 0)] * 2 + [mask_all[neg_text]])
        itm_images = torch.cat([image_embeds, image_embeds_all[neg_image], image_embeds])
        logits = self.itm_head(self.text_encoder(itm_ids, itm_mask, itm_images)[:, 0])
        labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(image_embeds.device)
        return F.cross_entropy(logits, labels)
