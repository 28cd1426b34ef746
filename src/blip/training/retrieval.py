"""Retrieval fine-tuning objective: ITC with image-id positives and an id queue, ITM with hard negatives from all
ranks (reference BLIP_Retrieval, negative_all_rank)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from blip.defaults import MOMENTUM, QUEUE_SIZE
from blip.distributed import gather
from blip.model.config import BlipConfig
from blip.training.contrastive import MomentumContrastive


class BlipRetrievalTrain(MomentumContrastive):
    """Retrieval model with momentum encoders and queues (feature and image-id); forward returns ITC + ITM."""

    POINTER = "ptr_queue"

    def __init__(
        self,
        cfg: BlipConfig,
        queue_size: int = QUEUE_SIZE,
        momentum: float = MOMENTUM,
        itm_negatives: str = "similarity",
    ):
        super().__init__(
            cfg.replace(parts=["text_encoder", "itc", "itm"], decoder_input="image", nlvr=False),
            queue_size,
            momentum,
            with_ids=True,
            itm_negatives=itm_negatives,
        )

    def forward(
        self,
        pixels: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_ids: torch.Tensor,
        alpha: float = 0.4,
        generator: torch.Generator | None = None,
        hardest_negatives: bool = False,
    ) -> dict[str, torch.Tensor]:
        """{"itc", "itm"} for a local batch; pairs with equal image_ids are positives of each other."""
        image_embeds = self.encode_image(pixels)
        image_feat = self.image_embed(image_embeds)
        text_feat = self.text_embed(input_ids, attention_mask)
        loss_itc, _, _ = self.itc(pixels, input_ids, attention_mask, image_feat, text_feat, alpha, ids=image_ids)
        with torch.no_grad():
            # The reference weighs negatives by online similarity to the whole batch, never a same-image pair.
            same = image_ids.view(-1, 1) == gather(image_ids).view(1, -1)
            w_i2t = F.softmax(image_feat @ gather(text_feat).t() / self.temp, dim=1).masked_fill(same, 0)
            w_t2i = F.softmax(text_feat @ gather(image_feat).t() / self.temp, dim=1).masked_fill(same, 0)
        loss_itm = self.itm(image_embeds, input_ids, attention_mask, w_i2t, w_t2i, generator, hardest_negatives)
        return {"itc": loss_itc, "itm": loss_itm}
