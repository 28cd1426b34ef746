"""Image-text retrieval: two-stage (ITC then ITM) score matrices and recall@K as the BLIP reference reports it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

from blip.distributed import is_distributed, rank, world_size

# Scores (image indices, text indices) pairwise: both are 1-D long tensors of the same length P; returns P scores.
PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Rank given to a query with no ground truth at all: beyond every cutoff, as the reference's 1e20.
NOT_FOUND = torch.iinfo(torch.int64).max


@torch.no_grad()
def two_stage_scores(
    sims_i2t: torch.Tensor,
    k: int,
    itm_scores: PairScorer,
    *,
    rows_per_call: int = 1,
    fill_value: float = -100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final (image->text, text->image) score matrices: ITM + ITC on each row's ITC top-k, `fill_value` elsewhere.

    Under torch.distributed every rank re-ranks a contiguous block of each matrix's rows and all ranks return the
    full matrices (the reference's evaluation split); `sims_i2t` must be the same full matrix on every rank.
    """
    if sims_i2t.dim() != 2:
        raise ValueError(f"sims_i2t must be 2-D (images x texts), got shape {tuple(sims_i2t.shape)}")
    if k < 1 or rows_per_call < 1:
        raise ValueError("k and rows_per_call must be positive")
    scores_i2t = _rerank_rows(sims_i2t, k, itm_scores, rows_per_call, fill_value)
    scores_t2i = _rerank_rows(
        sims_i2t.t(), k, lambda texts, images: itm_scores(images, texts), rows_per_call, fill_value
    )
    return scores_i2t, scores_t2i


def _rank_rows(n_rows: int) -> range:
    """This rank's contiguous block of query rows (all rows outside torch.distributed), as the reference splits."""
    step = -(-n_rows // world_size())
    return range(min(n_rows, rank() * step), min(n_rows, (rank() + 1) * step))


def _rerank_rows(
    sims: torch.Tensor, k: int, score_pairs: PairScorer, rows_per_call: int, fill_value: float
) -> torch.Tensor:
    # Row r of `sims` is a query; its top-k columns get score_pairs(r, column) + similarity, as in the reference.
    n_rows, n_cols = sims.shape
    k = min(k, n_cols)
    mine = _rank_rows(n_rows)
    # Other ranks' rows are 0 here, so a SUM over ranks adds exact zeros to each rank's own (filled) rows.
    out = torch.zeros((n_rows, n_cols), dtype=sims.dtype, device=sims.device)
    out[mine.start : mine.stop] = fill_value
    for start in range(mine.start, mine.stop, rows_per_call):
        block = sims[start : min(start + rows_per_call, mine.stop)]
        top_sim, top_idx = block.topk(k, dim=1)
        rows = torch.arange(start, start + block.shape[0], device=sims.device).repeat_interleave(k)
        pair_scores = score_pairs(rows, top_idx.reshape(-1))
        if pair_scores.numel() != rows.numel():
            raise ValueError(f"itm_scores returned {pair_scores.numel()} scores for {rows.numel()} pairs")
        pair_scores = pair_scores.reshape(block.shape[0], k).to(device=out.device, dtype=out.dtype)
        out[start : start + block.shape[0]].scatter_(1, top_idx, pair_scores + top_sim)
    if is_distributed():
        dist.all_reduce(out)
    return out


@torch.no_grad()
def positive_ranks(
    scores: torch.Tensor | np.ndarray,
    positives: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
    *,
    chunk_size: int = 256,
) -> torch.Tensor:
    """0-based rank of each row's best-scored positive column (NOT_FOUND for a row without positives)."""
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D, got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        scores = scores.float()
    n_rows, n_cols = scores.shape
    positives = _as_list(positives, n_rows)
    ranks = torch.empty(n_rows, dtype=torch.int64)
    # Row chunks bound the memory to chunk_size x n_cols whatever the matrix size (5k x 25k for COCO).
    for start in range(0, n_rows, chunk_size):
        block = scores[start : start + chunk_size]
        rows = positives[start : start + chunk_size]
        counts = torch.tensor([len(p) for p in rows], dtype=torch.int64)
        cols = torch.tensor([c for p in rows for c in p], dtype=torch.int64)
        if cols.numel() and (cols.min() < 0 or cols.max() >= n_cols):
            raise ValueError(f"a positive index is outside 0..{n_cols - 1}")
        is_positive = torch.zeros(block.shape, dtype=torch.bool, device=block.device)
        row_of_col = torch.arange(block.shape[0]).repeat_interleave(counts)
        is_positive[row_of_col.to(block.device), cols.to(block.device)] = True
        best = block.masked_fill(~is_positive, float("-inf")).amax(dim=1, keepdim=True)
        # Rank = how many wrong candidates score at least as high as the best right one. Ties count against the
        # model (the reference's argsort leaves their order unspecified), so a constant matrix earns nothing.
        block_ranks = ((block >= best) & ~is_positive).sum(dim=1).cpu()
        block_ranks[counts == 0] = NOT_FOUND
        ranks[start : start + block.shape[0]] = block_ranks
    return ranks


def recall_at(ranks: torch.Tensor, k: int) -> float:
    """Percentage of queries whose rank is below k (R@k)."""
    return 100.0 * (ranks < k).sum().item() / ranks.numel()


def retrieval_metrics(
    scores_i2t: torch.Tensor | np.ndarray,
    scores_t2i: torch.Tensor | np.ndarray,
    img2txt: Sequence[Sequence[int]] | Mapping[int, Sequence[int]],
    txt2img: Sequence[int] | Mapping[int, int],
    *,
    chunk_size: int = 256,
) -> dict[str, float]:
    """Text and image R@1/5/10 in percent and their means, with the key names of the reference `itm_eval`."""
    scores_i2t, scores_t2i = torch.as_tensor(scores_i2t), torch.as_tensor(scores_t2i)
    if scores_i2t.dim() != 2 or scores_t2i.shape != scores_i2t.shape[::-1]:
        raise ValueError(
            f"expected scores_i2t (images x texts) and scores_t2i (texts x images), "
            f"got {tuple(scores_i2t.shape)} and {tuple(scores_t2i.shape)}"
        )
    n_images, n_texts = scores_i2t.shape
    if n_images == 0 or n_texts == 0:
        raise ValueError("retrieval metrics need at least one image and one text")
    # An image is found when any one of its captions is; a caption has exactly one image.
    txt_ranks = positive_ranks(scores_i2t, img2txt, chunk_size=chunk_size)
    img_ranks = positive_ranks(scores_t2i, [[i] for i in _as_list(txt2img, n_texts)], chunk_size=chunk_size)
    result = {f"txt_r{k}": recall_at(txt_ranks, k) for k in (1, 5, 10)}
    result["txt_r_mean"] = (result["txt_r1"] + result["txt_r5"] + result["txt_r10"]) / 3
    result.update({f"img_r{k}": recall_at(img_ranks, k) for k in (1, 5, 10)})
    result["img_r_mean"] = (result["img_r1"] + result["img_r5"] + result["img_r10"]) / 3
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return result


def _as_list(mapping_or_list: Sequence | Mapping, n: int) -> list:
    # The reference datasets keep img2txt / txt2img as dicts keyed 0..n-1; accept those as well as lists.
    if isinstance(mapping_or_list, Mapping):
        try:
            items = [mapping_or_list[i] for i in range(n)]
        except KeyError as err:
            raise ValueError(f"index map has no entry for {err.args[0]} (need keys 0..{n - 1})") from None
    else:
        items = list(mapping_or_list)
    if len(items) != n:
        raise ValueError(f"index map has {len(items)} entries for {n} score rows")
    return items
