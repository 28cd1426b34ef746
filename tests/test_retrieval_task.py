"""Two-stage retrieval scores equal ITM match logit + ITC cosine from transformers' BLIP, pair by pair."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import blip
from blip.data.samples import RetrievalSet
from blip.tasks.retrieval import retrieval_scores
from conftest import ENC


def test_two_stage_scores_match_transformers(hf_models, tmp_path):
    hf, folder = hf_models["retrieval"]
    model = blip.load(folder)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    texts = ["a red square", "two blue circles", "a dog", "the green triangle on the left", "a cat", "three"]
    rs = RetrievalSet(
        images=paths,
        image_ids=["0", "1", "2"],
        texts=texts,
        txt2img=[0, 0, 1, 1, 2, 2],
        img2txt=[[0, 1], [2, 3], [4, 5]],
    )
    i2t, t2i = retrieval_scores(model, rs, k_test=100, batch_size=4)
    ids, mask = model.tokenizer(texts, max_length=35)
    enc = ids.clone()
    enc[:, 0] = ENC
    with torch.no_grad():
        for i, p in enumerate(paths):
            px = model.pixels([p] * len(texts))
            itm = hf(input_ids=enc, pixel_values=px, attention_mask=mask).itm_score[:, 1]
            itc = hf(input_ids=ids, pixel_values=px, attention_mask=mask, use_itm_head=False).itm_score[0]
            assert torch.allclose(i2t[i], itm + itc, atol=1e-4)
            assert torch.allclose(t2i[:, i], itm + itc, atol=1e-4)
    # With k_test = 1 only each query's best ITC match is re-ranked; the rest keep the floor score.
    i2t_k1, _ = retrieval_scores(model, rs, k_test=1, batch_size=4)
    assert ((i2t_k1 > -100).sum(dim=1) == 1).all()
