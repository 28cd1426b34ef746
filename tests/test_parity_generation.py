"""Generation against the reference's own rules: transformers 4.15's beam scorer (written out below from its
process / finalize / BeamHypotheses semantics) and transformers' sampler with its top-k and top-p warpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from blip.checkpoint import load_checkpoint
from blip.generation import GenerationConfig, _top_k, generate
from conftest import CLS, DEC, SEP

EOS, PAD = 1, 0  # the Markov tables' ids (the transformers model uses conftest's SEP and PAD)


class TableDecoder(nn.Module):
    """A decoder whose next-token log-probabilities depend only on the last token (a Markov table), or on the
    sequence length and the last token (a (length, vocab, vocab) table: no ties between reordered paths)."""

    def __init__(self, logp: torch.Tensor):
        super().__init__()
        self.logp = logp
        self.length = 0

    def forward(
        self,
        ids,
        attention_mask=None,
        image_embeds=None,
        image_mask=None,
        *,
        cross_kv=None,
        cache=None,
        last_only=False,
    ):
        # The loop feeds the prompt once, then one token per step (its cache holds the rest).
        self.length = ids.shape[1] if ids.shape[1] > 1 else self.length + 1
        return table(self.logp, self.length)[ids[:, -1]]


def table(logp: torch.Tensor, length: int) -> torch.Tensor:
    return logp[length] if logp.dim() == 3 else logp


def reference_beam_search(
    logp: torch.Tensor, prompt: list[int], num_beams: int, max_length: int
) -> tuple[list[int], float]:
    """transformers 4.15 beam_search + BeamSearchScorer (early_stopping=False, length_penalty 1), one source."""
    beams = [(list(prompt), 0.0)] + [(list(prompt), -1e9)] * (num_beams - 1)
    hyps: list[tuple[float, list[int]]] = []
    worst, done = 1e9, False

    def add(seq: list[int], total: float) -> None:
        nonlocal worst
        score = total / len(seq)
        if len(hyps) < num_beams or score > worst:
            hyps.append((score, seq))
            if len(hyps) > num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(hyps))
                del hyps[ranked[0][1]]
                worst = ranked[1][0]
            else:
                worst = min(score, worst)

    cur_len = len(prompt)
    while cur_len < max_length:
        cands = sorted(
            (
                (total + float(table(logp, len(seq))[seq[-1], t]), b, t)
                for b, (seq, total) in enumerate(beams)
                for t in range(logp.shape[1])
            ),
            key=lambda c: -c[0],
        )[: 2 * num_beams]
        nxt = []
        for rank, (total, b, t) in enumerate(cands):
            if t == EOS:
                if rank < num_beams:
                    add(beams[b][0], total)  # the hypothesis excludes the end token
            else:
                nxt.append((beams[b][0] + [t], total))
            if len(nxt) == num_beams:
                break
        done = done or (len(hyps) >= num_beams and worst >= cands[0][0] / cur_len)
        beams = nxt
        cur_len += 1
        if done:
            break
    if not done:  # finalize(): only a source that is not done adds its running (length-capped) beams
        for seq, total in beams:
            add(seq, total)
    score, best = max(hyps, key=lambda h: h[0])
    return best + ([EOS] if len(best) < max_length else []), score


def ours(logp: torch.Tensor, prompt: list[int], num_beams: int, max_length: int) -> tuple[list[int], float]:
    cfg = GenerationConfig(num_beams=num_beams, max_length=max_length, min_length=0)
    out = generate(TableDecoder(logp), torch.tensor([prompt]), [], None, cfg, EOS, PAD)
    return [t for t in out.sequences[0].tolist() if t != PAD], float(out.score[0])


def markov(rows: dict[int, dict[int, float]], vocab: int = 5) -> torch.Tensor:
    """Log-probability table: rows given as {token: probability}; other rows uniform over non-pad tokens."""
    probs = torch.full((vocab, vocab), 1.0 / (vocab - 1))
    probs[:, PAD] = 0.0
    for row, dist in rows.items():
        probs[row] = 0.0
        for token, p in dist.items():
            probs[row, token] = p
    return probs.clamp_min(1e-12).log()


P, X, Y = 2, 3, 4


def test_beam_done_at_last_step_keeps_its_finished_hypotheses():
    # Prompt P P P, 2 beams, max_length 6 (three steps); 4.15 scores a finished hypothesis total / len(without EOS).
    # Step 1 (cur_len 3): P->X 0.58 and P->EOS 0.36 lead; A = P P P + EOS finishes: ln 0.36 / 3 = -0.3405.
    # Step 2 (cur_len 4): X->P 0.48 and X->Y 0.31 lead, no end token in the top 2; running: P P P X P, P P P X Y.
    # Step 3 (cur_len 5, the last): Y->EOS gives the best candidate, total ln(.58 * .31 * .95) = -1.767, so
    # B = P P P X Y + EOS scores -1.767 / 5 = -0.3534; second is the live X P X, total ln(.58 * .48 * .58) = -1.824.
    # Two hypotheses, worst B = -0.3534 >= best candidate -1.767 / 5: is_done becomes true at this step, so 4.15's
    # finalize() does NOT add the capped P P P X P X (-1.824 / 6 = -0.3039, better than A). The answer is A.
    logp = markov(
        {
            P: {EOS: 0.36, X: 0.58, Y: 0.04, P: 0.02},
            X: {P: 0.48, Y: 0.31, X: 0.13, EOS: 0.08},
            Y: {EOS: 0.95, X: 0.03, P: 0.01, Y: 0.01},
        }
    )
    seq, score = ours(logp, [P, P, P], 2, 6)
    assert seq == [P, P, P, EOS]
    assert score == pytest.approx(math.log(0.36) / 3, abs=1e-5)
    assert reference_beam_search(logp, [P, P, P], 2, 6) == (seq, pytest.approx(score, abs=1e-5))


@pytest.mark.parametrize("num_beams,max_length", [(2, 6), (3, 7), (2, 8)])
def test_beam_search_equals_the_reference_scorer_on_random_tables(num_beams, max_length):
    generator = torch.Generator().manual_seed(num_beams * 100 + max_length)
    for _ in range(150):
        logits = torch.randn(max_length, 6, 6, generator=generator) * 2
        logits[..., PAD] = -1e9
        logp = logits.log_softmax(-1)
        seq, score = ours(logp, [2, 2, 2], num_beams, max_length)
        ref_seq, ref_score = reference_beam_search(logp, [2, 2, 2], num_beams, max_length)
        assert seq == ref_seq
        assert score == pytest.approx(ref_score, abs=1e-4)


def test_top_k_keeps_the_k_highest_logits():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.3]])
    assert torch.isfinite(_top_k(logits, 2))[0].tolist() == [False, True, False, True, False]
    assert torch.equal(_top_k(logits, 0), logits)


@pytest.mark.parametrize("top_k", [3, 50])
def test_nucleus_sampling_equals_transformers_sampler(hf_models, pixels, top_k):
    """Same weights, seed and processors: repetition penalty, min length, then top-k, then top-p (0.9)."""
    hf, folder = hf_models["caption"]
    model, _, _ = load_checkpoint(folder)
    with torch.no_grad():
        kv = model.text_decoder.bert.cross_kv(model.encode_image(pixels))

    def sample(seed: int, k: int) -> list[list[int]]:
        torch.manual_seed(seed)
        gen = GenerationConfig(
            strategy="nucleus", top_k=k, top_p=0.9, repetition_penalty=1.1, max_length=20, min_length=5
        )
        out = generate(model.text_decoder, torch.tensor([[DEC, 5, 6, 7]] * 3), kv, None, gen, SEP, PAD)
        return [row[: row.index(SEP) + 1] if SEP in row else row for row in out.sequences.tolist()]

    differs_without_top_k = False
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            ref = hf.generate(
                pixel_values=pixels,
                input_ids=torch.tensor([[CLS, 5, 6, 7, SEP]] * 3),
                do_sample=True,
                top_k=top_k,
                top_p=0.9,
                repetition_penalty=1.1,
                max_length=20,
                min_length=5,
            )
        ref_ids = [row[: row.index(SEP) + 1] if SEP in row else row for row in ref.tolist()]
        assert sample(seed, top_k) == ref_ids
        differs_without_top_k |= sample(seed, 0) != ref_ids
    if top_k == 3:  # a binding top-k must change the draws, or this test would not see a missing warper
        assert differs_without_top_k
