"""Image-text retrieval evaluation: ITC over everything, then ITM re-ranking of each query's top k_test."""

from __future__ import annotations

from typing import Any

import torch

from blip.api import Blip
from blip.data.readers import read_karpathy_eval
from blip.data.samples import RetrievalSet
from blip.data.text import pre_caption
from blip.evaluation.retrieval import retrieval_metrics, two_stage_scores
from blip.images import load_image


@torch.no_grad()
def retrieval_scores(model: Blip, rs: RetrievalSet, k_test: int = 256, batch_size: int = 64,
                     max_words: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(image->text, text->image) score matrices of the reference's two-stage protocol."""
    m, device = model.model, model.device
    texts = [pre_caption(t, max_words) for t in rs.texts]
    ids, mask = model.tokenizer(texts, max_length=35)
    ids, mask = ids.to(device), mask.to(device)
    text_feats = torch.cat([m.text_embed(ids[s : s + 256], mask[s : s + 256]) for s in range(0, len(ids), 256)])
    embeds, image_feats = [], []
    for s in range(0, len(rs.images), batch_size):
        pixels = torch.stack([model.transform(load_image(p)) for p in rs.images[s : s + batch_size]]).to(device)
        with model._autocast():
            e = m.encode_image(pixels)
            embeds.append(e)
            image_feats.append(m.image_embed(e).float())
    image_embeds, image_feats = torch.cat(embeds), torch.cat(image_feats)
    sims = image_feats @ text_feats.t()

    def itm(images: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(images), batch_size):
            i, t = images[s : s + batch_size].to(device), text_idx[s : s + batch_size].to(device)
            with model._autocast():
                out.append(m.itm_logits(image_embeds[i], ids[t], mask[t])[:, 1].float())
        return torch.cat(out)

    return two_stage_scores(sims, k_test, itm, rows_per_call=max(1, batch_size // max(1, min(k_test, len(texts)))))


def evaluate_retrieval(model: Blip, annotation: str, image_root: str = "", k_test: int = 256,
                       batch_size: int = 64) -> dict[str, Any]:
    """Karpathy-protocol recalls (txt_r1 ... r_mean) of a model on a val/test annotation file."""
    rs = read_karpathy_eval(annotation, image_root=image_root)
    i2t, t2i = retrieval_scores(model, rs, k_test=k_test, batch_size=batch_size)
    return retrieval_metrics(i2t, t2i, rs.img2txt, rs.txt2img)
