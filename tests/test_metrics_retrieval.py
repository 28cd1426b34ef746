"""Retrieval recall@K and two-stage (ITC top-k + ITM) score matrices."""

import numpy as np
import pytest
import torch

from blip.evaluation.retrieval import NOT_FOUND, positive_ranks, retrieval_metrics, two_stage_scores


def _scores_from_orders(orders: list[list[int]]) -> np.ndarray:
    """Score rows that rank the listed columns first to last (descending scores, no ties)."""
    n = len(orders[0])
    scores = np.zeros((len(orders), n), dtype=np.float32)
    for row, order in enumerate(orders):
        assert sorted(order) == list(range(n))
        scores[row, order] = np.arange(n, 0, -1)
    return scores


def _reference_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
    """The reference itm_eval loops (argsort per row), used as an independent check on tie-free matrices."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in img2txt[index])
    tr = [100.0 * np.sum(ranks < k) / len(ranks) for k in (1, 5, 10)]
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir = [100.0 * np.sum(ranks < k) / len(ranks) for k in (1, 5, 10)]
    return {"txt_r1": tr[0], "txt_r5": tr[1], "txt_r10": tr[2], "img_r1": ir[0], "img_r5": ir[1], "img_r10": ir[2]}


# 5 images with 3 captions each: image i owns texts 3i, 3i+1, 3i+2.
IMG2TXT = [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(5)]
TXT2IMG = [t // 3 for t in range(15)]


def test_recalls_on_hand_built_matrices():
    others = lambda keep: [t for t in range(15) if t not in keep]  # noqa: E731
    i2t_orders = [
        # image 0: its caption 1 comes first -> best rank 0 (R@1, R@5, R@10)
        [1] + others([1]),
        # image 1: five wrong texts, then caption 4 -> rank 5 (R@10 only; rank 5 is the 6th place)
        [0, 1, 2, 6, 7, 4] + others([0, 1, 2, 6, 7, 4]),
        # image 2: three wrong texts, then captions 8 and 6 -> best rank 3 (R@5 and R@10)
        [0, 1, 2, 8, 6] + others([0, 1, 2, 8, 6]),
        # image 3: its captions at places 9, 10, 11 -> best rank 9 (R@10 only)
        others([9, 10, 11])[:9] + [11, 9, 10] + others([9, 10, 11])[9:],
        # image 4: its captions come last -> rank 12 (nothing)
        others([12, 13, 14]) + [12, 13, 14],
    ]
    # Texts 0-8 find their image first; texts 9-14 find it second (rank 1) among the 5 images.
    t2i_orders = []
    for t in range(15):
        own = TXT2IMG[t]
        wrong = [i for i in range(5) if i != own]
        t2i_orders.append([own] + wrong if t < 9 else wrong[:1] + [own] + wrong[1:])
    metrics = retrieval_metrics(_scores_from_orders(i2t_orders), _scores_from_orders(t2i_orders), IMG2TXT, TXT2IMG)

    # By hand: text ranks are 0, 5, 3, 9, 12 -> R@1 1/5, R@5 2/5, R@10 4/5.
    assert metrics["txt_r1"] == pytest.approx(20.0)
    assert metrics["txt_r5"] == pytest.approx(40.0)
    assert metrics["txt_r10"] == pytest.approx(80.0)
    assert metrics["txt_r_mean"] == pytest.approx((20 + 40 + 80) / 3)
    # Image ranks: nine 0s and six 1s -> R@1 9/15; with 5 images every text is within 5 and 10.
    assert metrics["img_r1"] == pytest.approx(60.0)
    assert metrics["img_r5"] == pytest.approx(100.0)
    assert metrics["img_r10"] == pytest.approx(100.0)
    assert metrics["img_r_mean"] == pytest.approx((60 + 100 + 100) / 3)
    assert metrics["r_mean"] == pytest.approx(((20 + 40 + 80) / 3 + (60 + 100 + 100) / 3) / 2)
    assert list(metrics) == [
        "txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean",
    ]  # fmt: skip


def test_ranks_take_the_best_of_several_captions():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3]])
    # Positives 2 and 4 sit at places 2 and 4 of the descending order (0.9, 0.7, 0.5, 0.3, 0.1).
    assert positive_ranks(scores, [[4, 2]]).tolist() == [2]
    assert positive_ranks(scores, [[1]]).tolist() == [0]
    assert positive_ranks(scores, [[0]]).tolist() == [4]


def test_matches_reference_loops_on_random_matrices_in_chunks():
    gen = torch.Generator().manual_seed(0)
    n_img, per_image = 23, 5
    n_txt = n_img * per_image
    # Shuffle which texts belong to which image so captions are not contiguous.
    perm = torch.randperm(n_txt, generator=gen).tolist()
    img2txt = {i: perm[i * per_image : (i + 1) * per_image] for i in range(n_img)}
    txt2img = {t: i for i, texts in img2txt.items() for t in texts}
    # Make the right answers likely enough that every recall is strictly between 0 and 100.
    i2t = torch.randn(n_img, n_txt, generator=gen, dtype=torch.float64)
    t2i = torch.randn(n_txt, n_img, generator=gen, dtype=torch.float64)
    for i, texts in img2txt.items():
        i2t[i, texts] += 1.5
        t2i[texts, i] += 1.5
    expected = _reference_itm_eval(i2t.numpy(), t2i.numpy(), txt2img, img2txt)
    for chunk_size in (1, 7, 1000):
        got = retrieval_metrics(i2t.numpy(), t2i, img2txt, txt2img, chunk_size=chunk_size)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (key, chunk_size)
    assert 0 < expected["txt_r1"] < 100 and 0 < expected["img_r1"] < 100


def test_ties_count_against_the_model_and_missing_ground_truth_is_never_found():
    constant = torch.zeros(3, 6)
    assert positive_ranks(constant, [[0, 1], [2, 3], [4, 5]]).tolist() == [4, 4, 4]
    assert positive_ranks(torch.tensor([[1.0, 2.0]]), [[]]).tolist() == [NOT_FOUND]
    with pytest.raises(ValueError):
        positive_ranks(constant, [[0], [1]])
    with pytest.raises(ValueError):
        positive_ranks(constant, [[6], [0], [0]])


def _naive_two_stage(sims, k, itm):
    """Per-row loops as in the reference evaluation, for comparison."""
    n_img, n_txt = sims.shape
    i2t = torch.full((n_img, n_txt), -100.0, dtype=sims.dtype)
    for i in range(n_img):
        top_sim, top_idx = sims[i].topk(k)
        i2t[i, top_idx] = torch.stack([itm(i, int(t)) for t in top_idx]) + top_sim
    t2i = torch.full((n_txt, n_img), -100.0, dtype=sims.dtype)
    for t in range(n_txt):
        top_sim, top_idx = sims[:, t].topk(k)
        t2i[t, top_idx] = torch.stack([itm(int(i), t) for i in top_idx]) + top_sim
    return i2t, t2i


def test_two_stage_scores_rescore_only_the_top_k():
    gen = torch.Generator().manual_seed(1)
    sims = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    itm_table = torch.randn(6, 9, generator=gen, dtype=torch.float64)
    calls = []

    def itm_scores(images, texts):
        calls.append(len(images))
        return itm_table[images, texts]

    expected = _naive_two_stage(sims, 4, lambda i, t: itm_table[i, t])
    for rows_per_call in (1, 4, 100):
        calls.clear()
        got = two_stage_scores(sims, 4, itm_scores, rows_per_call=rows_per_call)
        torch.testing.assert_close(got[0], expected[0])
        torch.testing.assert_close(got[1], expected[1])
        # Each call carries rows_per_call queries' k pairs (the last call may carry fewer).
        assert max(calls) == min(rows_per_call, 9) * 4
        assert sum(calls) == (6 + 9) * 4
    i2t, t2i = two_stage_scores(sims, 4, itm_scores)
    assert ((i2t == -100.0).sum(dim=1) == 9 - 4).all() and ((t2i == -100.0).sum(dim=1) == 6 - 4).all()


def test_two_stage_scores_clip_k_and_check_the_callback():
    sims = torch.tensor([[0.2, 0.1], [0.0, 0.3]])
    i2t, t2i = two_stage_scores(sims, 10, lambda images, texts: torch.zeros(len(images)))
    torch.testing.assert_close(i2t, sims)
    torch.testing.assert_close(t2i, sims.t())
    with pytest.raises(ValueError, match="returned 1 scores"):
        two_stage_scores(sims, 2, lambda images, texts: torch.zeros(1))


def test_two_stage_feeds_recall_end_to_end():
    # A perfect ITM head (10 for a matching pair) rescues captions that ITC ranked second.
    sims = torch.tensor([[0.5, 0.9, 0.1, 0.0], [0.9, 0.1, 0.5, 0.2]])
    img2txt, txt2img = [[0, 1], [2, 3]], [0, 0, 1, 1]
    before = retrieval_metrics(sims, sims.t(), img2txt, txt2img)
    assert before["txt_r1"] == 50.0
    owner = torch.tensor(txt2img)
    i2t, t2i = two_stage_scores(sims, 2, lambda images, texts: 10.0 * (owner[texts] == images))
    after = retrieval_metrics(i2t, t2i, img2txt, txt2img)
    assert after["txt_r1"] == 100.0 and after["img_r1"] == 100.0
