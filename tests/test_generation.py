"""Generation rules checked on hand-computed cases: beam length normalisation, top-p, repetition penalty."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from blip.generation import GenerationConfig, _process, _top_p, generate

EOS, X, Z, P = 1, 2, 5, 4


class TableDecoder(nn.Module):
    """A decoder whose next-token distribution depends only on the last token (a Markov table)."""

    def __init__(self):
        super().__init__()
        probs = torch.full((6, 6), 1 / 6)
        probs[P] = torch.tensor([0, 0.368, 0.5, 0, 0, 0.132])
        probs[X] = torch.tensor([0, 0.3305, 0, 0, 0, 0.6695])
        self.logp = probs.clamp_min(1e-12).log()

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
        return self.logp[ids[:, -1]]


def beam(length_norm: str) -> list[int]:
    cfg = GenerationConfig(num_beams=2, max_length=7, min_length=0, length_norm=length_norm)
    out = generate(TableDecoder(), torch.tensor([[P] * 4]), [], None, cfg, EOS, 0)
    return [t for t in out.sequences[0].tolist() if t != 0]


def test_beam_length_normalisation_reference_vs_transformers():
    # Hypotheses: A = prompt + [EOS] with log p -1.0; B = prompt + [X, EOS] with log p -1.8.
    # transformers divides by generated tokens incl. EOS: A -1.0/1, B -1.8/2 = -0.9 -> B.
    # The reference (transformers 4.15) divides by all tokens before EOS: A -1.0/4 = -0.25, B -1.8/5 = -0.36 -> A.
    assert beam("transformers") == [P] * 4 + [X, EOS]
    assert beam("reference") == [P] * 4 + [EOS]


def test_beam_logprob_is_the_model_probability_of_the_winner():
    cfg = GenerationConfig(num_beams=2, max_length=7, min_length=0, length_norm="transformers")
    out = generate(TableDecoder(), torch.tensor([[P] * 4]), [], None, cfg, EOS, 0)
    assert float(out.logprob[0]) == pytest.approx(math.log(0.5) + math.log(0.3305), abs=1e-4)
    assert int(out.num_tokens[0]) == 2


def test_greedy_stops_at_end_token_and_pads():
    cfg = GenerationConfig(strategy="greedy", max_length=9, min_length=0)
    seqs = generate(TableDecoder(), torch.tensor([[P] * 4, [Z] * 4]), [], None, cfg, EOS, 0).sequences.tolist()
    assert seqs[0][:6] == [P] * 4 + [X, Z]  # greedy follows the argmax: P->X (0.5), X->Z (0.67)


def test_min_length_blocks_the_end_token():
    cfg = GenerationConfig(strategy="greedy", max_length=8, min_length=6)
    scores = torch.zeros(1, 6)
    assert _process(scores.clone(), torch.tensor([[P] * 4]), 4, cfg, EOS)[0, EOS] == float("-inf")
    assert _process(scores.clone(), torch.tensor([[P] * 6]), 6, cfg, EOS)[0, EOS] == 0


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = torch.isfinite(_top_p(logits, 0.7))[0].tolist()
    assert kept == [True, True, False, False]
    assert torch.isfinite(_top_p(logits, 0.1))[0].tolist() == [True, False, False, False]


def test_repetition_penalty_is_ctrl_style():
    cfg = GenerationConfig(repetition_penalty=2.0, min_length=0)
    scores = torch.tensor([[1.0, -1.0, 4.0, -3.0]])
    out = _process(scores.clone(), torch.tensor([[0, 1]]), 2, cfg, eos_id=3)
    assert out.tolist() == [[0.5, -2.0, 4.0, -3.0]]  # seen tokens: positive divided, negative multiplied
