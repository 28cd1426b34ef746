"""On the synthetic world: text-to-image R@1 / R@10 of the search index equal the retrieval evaluator's."""

from __future__ import annotations

import os

import pytest
import torch

import blip
from blip.data.readers import read_karpathy_eval
from blip.data.text import pre_caption
from blip.evaluation.retrieval import positive_ranks, recall_at, retrieval_metrics
from blip.tasks.pretrain import pretrain
from blip.tasks.retrieval import two_stage_retrieval
from test_trainer import recipe

K_TEST = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic world without web images, so its test split has 40 images (200 texts)."""
    from blip.data.synth import generate

    out = tmp_path_factory.mktemp("synth40")
    generate(out, num_images=400, seed=3, noise=0.4, workers=1, web_fraction=0.0)
    return out


@pytest.fixture(scope="module")
def tiny_pretrained(world, tmp_path_factory):
    return blip.load(pretrain(recipe(world, tmp_path_factory.mktemp("pre"), 4)))


def search_ranks(index, model, rs, rerank_k: int) -> tuple[torch.Tensor, list[list[str]]]:
    """Each text's 0-based rank of its image among the index's top 10 (10 when absent), and the hits' keys."""
    ranks, keys = [], []
    for text, image in zip(rs.texts, rs.txt2img):
        found = [h.key for h in index.search(model, text=text, top_k=10, rerank_k=rerank_k)]
        target = os.path.abspath(rs.images[image])
        ranks.append(found.index(target) if target in found else 10)
        keys.append(found)
    return torch.tensor(ranks), keys


def recalls(ranks: torch.Tensor) -> dict[str, float]:
    return {"img_r1": recall_at(ranks, 1), "img_r10": recall_at(ranks, 10)}


def test_search_recalls_equal_the_retrieval_evaluator(world, tiny_pretrained, tmp_path):
    """Query by query, the index's ranks equal the evaluator's two-stage code run on the features the index holds.

    The index stores float16 vectors (README, "Search a collection"), so its reference is the evaluator fed those
    same features rounded to float16: against float32 features a weakly trained model's near-ties (cosines within
    float16's ~1e-3) may order differently, which says nothing about the search.
    """
    model = tiny_pretrained
    rs = read_karpathy_eval(world / "coco_karpathy_test.json", image_root=world)
    index = model.index(rs.images, tmp_path / "idx")
    assert len(index) == len(rs.images) == 40
    texts = [pre_caption(t, 30) for t in rs.texts]
    with torch.no_grad():
        embeds = model.model.encode_image(model.pixels(rs.images))
        feats = model.model.image_embed(embeds).float().half().float()

    # ITC alone: the evaluator's first stage, image-text cosines of the same features.
    itc_reference = positive_ranks((feats @ model.text_features(texts).t()).t(), [[i] for i in rs.txt2img])
    itc_ranks, itc_keys = search_ranks(index, model, rs, rerank_k=0)
    assert torch.equal(itc_ranks, itc_reference.clamp(max=10))  # query by query, so R@1 and R@10 too
    assert recalls(itc_ranks) == recalls(itc_reference)

    # ITC, then ITM re-ranking of each text's top k_test images, as `blip evaluate retrieval` scores them.
    i2t, t2i = two_stage_retrieval(model, feats, embeds, texts, K_TEST, 64)
    reference = retrieval_metrics(i2t, t2i, rs.img2txt, rs.txt2img)
    ranks, keys = search_ranks(index, model, rs, rerank_k=K_TEST)
    assert torch.equal(ranks, positive_ranks(t2i, [[i] for i in rs.txt2img]).clamp(max=10))
    assert recalls(ranks) == {k: reference[k] for k in ("img_r1", "img_r10")}
    assert keys != itc_keys  # the ITM head changed the rankings, so both paths were exercised
