"""The one generation loop: greedy, beam search and nucleus sampling over the MED decoder, batched.

The image (or, for VQA, the question) is encoded once; its cross-attention keys and values are computed once per
layer (`TextTransformer.cross_kv`) and shared by every beam and step, beams attending to them through the
query-folding in `model.text.Attention.cross`. Only the self-attention cache grows and is reordered.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from blip.model.text import KVCache, LayerKV, TextDecoder

NEG = -1.0e9
# Whether every sequence has ended is read on the host (a device synchronisation) only every this many steps:
# finished rows and closed sources are masked on the device meanwhile, so the output does not depend on it.
SYNC_EVERY = 4


@dataclass
class GenerationConfig:
    """How to decode. Lengths count the prompt tokens, as in the reference (max 20, min 5 with a 4-token prompt)."""

    strategy: str = "beam"  # "greedy", "beam" or "nucleus"
    num_beams: int = 3
    max_length: int = 20
    min_length: int = 5
    top_p: float = 0.9
    top_k: int = 50  # nucleus sampling keeps the top_k tokens first, as transformers 4.15's default warper; 0 = off
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    # Beam scores are divided by length ** length_penalty. "reference": length = all tokens before the end token,
    # prompt included (the transformers 4.15 scorer the released BLIP code ran); "transformers": generated tokens
    # including the end token (transformers >= 4.4x).
    length_norm: str = "reference"
    suppress_eos: bool = False  # never end early (benchmarks generate the full length)

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "beam", "nucleus"):
            raise ValueError(f"unknown generation strategy {self.strategy!r}")
        if self.length_norm not in ("reference", "transformers"):
            raise ValueError(f"length_norm must be 'reference' or 'transformers', not {self.length_norm!r}")


@dataclass
class Generated:
    """Sequences (N, L) with the prompt, and per sequence the sum of the model's token log-probabilities."""

    sequences: torch.Tensor
    logprob: torch.Tensor
    num_tokens: torch.Tensor  # generated tokens counted in logprob (end token included)
    score: torch.Tensor | None = None  # beam search: the length-normalised score the hypotheses were ranked by


def _process(scores: torch.Tensor, seqs: torch.Tensor, length: int, cfg: GenerationConfig, eos_id: int) -> torch.Tensor:
    """Repetition penalty (CTRL) on every token seen so far, then the end token blocked below min_length."""
    if cfg.repetition_penalty != 1.0:
        seen = torch.gather(scores, 1, seqs[:, :length])
        seen = torch.where(seen < 0, seen * cfg.repetition_penalty, seen / cfg.repetition_penalty)
        scores = scores.scatter(1, seqs[:, :length], seen)
    if length < cfg.min_length or cfg.suppress_eos:
        scores[:, eos_id] = float("-inf")
    return scores


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k highest logits (ties with the k-th kept too); top_k <= 0 keeps everything."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least one)."""
    sorted_logits, order = logits.sort(dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - top_p
    drop[:, -1] = False
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


@torch.no_grad()
def generate(
    decoder: TextDecoder,
    prompt: torch.Tensor,
    cross_kv: list[LayerKV],
    cross_mask: torch.Tensor | None,
    cfg: GenerationConfig,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
) -> Generated:
    """Decode from `prompt` (B, P) for B sources; returns B * num_return_sequences sequences (source-major)."""
    if cfg.strategy == "beam":
        return _beam_search(decoder, prompt, cross_kv, cross_mask, cfg, eos_id, pad_id)
    return _sample_or_greedy(decoder, prompt, cross_kv, cross_mask, cfg, eos_id, pad_id, generator)


def _sample_or_greedy(
    decoder: TextDecoder,
    prompt: torch.Tensor,
    cross_kv: list[LayerKV],
    cross_mask: torch.Tensor | None,
    cfg: GenerationConfig,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None,
) -> Generated:
    """Greedy or nucleus decoding; finished rows are padded and stop counting."""
    n = cfg.num_return_sequences if cfg.strategy == "nucleus" else 1
    prompt = prompt.repeat_interleave(n, dim=0)
    rows, p = prompt.shape
    seqs = torch.full((rows, max(cfg.max_length, p)), pad_id, dtype=torch.long, device=prompt.device)
    seqs[:, :p] = prompt
    logprob = torch.zeros(rows, device=prompt.device)
    num_tokens = torch.zeros(rows, dtype=torch.long, device=prompt.device)
    done = torch.zeros(rows, dtype=torch.bool, device=prompt.device)
    cache = KVCache(capacity=seqs.shape[1])
    step_input = prompt
    for length in range(p, cfg.max_length):
        logits = decoder(step_input, image_mask=cross_mask, cross_kv=cross_kv, cache=cache, last_only=True).float()
        token_logprobs = logits.log_softmax(dim=-1)
        scores = _process(logits, seqs, length, cfg, eos_id)
        if cfg.strategy == "greedy":
            token = scores.argmax(dim=-1)
        else:
            # transformers 4.15 sample(): processors (above), then the top-k warper, then top-p.
            probs = _top_p(_top_k(scores, cfg.top_k), cfg.top_p).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        logprob += torch.where(done, 0.0, token_logprobs.gather(1, token[:, None]).squeeze(1))
        num_tokens += (~done).long()
        seqs[:, length] = token
        done |= token == eos_id
        if (length - p) % SYNC_EVERY == SYNC_EVERY - 1 and bool(done.all()):
            seqs = seqs[:, : p + int(num_tokens.max())]
            break
        step_input = token[:, None]
    return Generated(seqs, logprob, num_tokens)


def _beam_search(
    decoder: TextDecoder,
    prompt: torch.Tensor,
    cross_kv: list[LayerKV],
    cross_mask: torch.Tensor | None,
    cfg: GenerationConfig,
    eos_id: int,
    pad_id: int,
) -> Generated:
    """Vectorised beam search keeping 2K candidates per step (so K live beams survive K end tokens)."""
    b, p = prompt.shape
    k = cfg.num_beams
    device = prompt.device
    max_len = max(cfg.max_length, p + 1)
    reference = cfg.length_norm == "reference"

    # The prompt is run once per source, then its cache is copied to the K beams.
    cache = KVCache(capacity=max_len)
    logits = decoder(prompt, image_mask=cross_mask, cross_kv=cross_kv, cache=cache, last_only=True).float()
    cache.reorder(torch.arange(b, device=device).repeat_interleave(k))
    logits = logits.repeat_interleave(k, dim=0)

    running = torch.full((b, k, max_len), pad_id, dtype=torch.long, device=device)
    running[:, :, :p] = prompt[:, None]
    running_scores = torch.full((b, k), NEG, device=device)
    running_scores[:, 0] = 0.0  # only the first beam's continuations are real at the start
    running_raw = torch.zeros(b, k, device=device)
    # The K best finished hypotheses per source: (scores, sequences, summed log-probs, lengths, real or empty).
    state = (
        torch.full((b, k), NEG, device=device),
        running.clone(),
        torch.zeros(b, k, device=device),
        torch.zeros(b, k, dtype=torch.long, device=device),
        torch.zeros(b, k, dtype=torch.bool, device=device),
    )
    open_batch = torch.ones(b, dtype=torch.bool, device=device)
    vocab = logits.shape[-1]
    top_k_mask = torch.arange(2 * k, device=device) < k

    for length in range(p, max_len):
        raw = logits.log_softmax(dim=-1)
        scores = _process(raw.clone(), running.view(b * k, max_len), length, cfg, eos_id)
        total = (scores + running_scores.view(-1, 1)).view(b, k * vocab)
        cand_scores, cand = total.topk(2 * k, dim=-1)
        cand_beam, cand_token = cand // vocab, cand % vocab
        cand_seqs = running.gather(1, cand_beam[:, :, None].expand(-1, -1, max_len)).clone()
        cand_seqs[:, :, length] = cand_token
        cand_raw = running_raw.gather(1, cand_beam) + raw.view(b, k * vocab).gather(1, cand)
        ends = cand_token == eos_id
        last_step = length + 1 >= max_len

        # Candidates that finish now: an end token among the top K, or (transformers, at the length limit) all top K.
        finishing = top_k_mask.expand(b, -1) if last_step and not reference else ends & top_k_mask
        if reference:
            # transformers 4.15: the hypothesis excludes the end token; a length-capped one is the full max_len.
            norm_len = torch.where(ends, length, length + 1).float()
        else:
            norm_len = torch.full_like(cand_scores, length + 1 - p)
        state = _keep_best(
            state,
            cand_scores / norm_len**cfg.length_penalty,
            cand_seqs,
            cand_raw,
            length + 1 - p,
            finishing & open_batch[:, None],
        )

        # The K best candidates that did not end continue.
        live = torch.where(ends, NEG, cand_scores).topk(k, dim=-1).indices
        running_scores = cand_scores.gather(1, live)
        running = cand_seqs.gather(1, live[:, :, None].expand(-1, -1, max_len))
        running_raw = cand_raw.gather(1, live)

        # Stop a source once its K finished hypotheses cannot be beaten (early_stopping=False heuristics).
        finished_scores, is_finished = state[0], state[4]
        worst = torch.where(is_finished.all(dim=1), finished_scores.min(dim=1).values, NEG)
        if reference:
            best_possible = cand_scores.max(dim=1).values / float(length) ** cfg.length_penalty
            open_batch &= ~(is_finished.all(dim=1) & (worst >= best_possible))
        else:
            best_possible = running_scores[:, 0] / float(length + 1 - p) ** cfg.length_penalty
            open_batch &= best_possible > worst
        if last_step:
            if reference:
                # 4.15's finalize(): only sources not done (the test above included this last step) add their
                # length-capped running beams.
                capped = running_scores / float(length + 1) ** cfg.length_penalty
                state = _keep_best(
                    state, capped, running, running_raw, length + 1 - p, open_batch[:, None].expand(-1, k)
                )
            break
        if (length - p) % SYNC_EVERY == SYNC_EVERY - 1 and not bool(open_batch.any()):
            break
        rows = (cand_beam.gather(1, live) + torch.arange(b, device=device)[:, None] * k).view(-1)
        cache.reorder(rows)
        step = running[:, :, length : length + 1].reshape(b * k, 1)
        logits = decoder(step, image_mask=cross_mask, cross_kv=cross_kv, cache=cache, last_only=True).float()

    finished_scores, finished, finished_raw, finished_len, _ = state
    n = cfg.num_return_sequences
    order = finished_scores.argsort(dim=1, descending=True)[:, :n]
    seqs = finished.gather(1, order[:, :, None].expand(-1, -1, max_len)).view(b * n, max_len)
    lengths = finished_len.gather(1, order).view(-1)
    width = int(lengths.max()) + p
    return Generated(
        seqs[:, :width], finished_raw.gather(1, order).view(-1), lengths, finished_scores.gather(1, order).view(-1)
    )


def _keep_best(
    state: tuple, scores: torch.Tensor, seqs: torch.Tensor, raw: torch.Tensor, num_tokens: int, adding: torch.Tensor
) -> tuple:
    """Merge the candidates flagged in `adding` into the K best finished hypotheses of each source."""
    finished_scores, finished, finished_raw, finished_len, is_finished = state
    k, max_len = finished_scores.shape[1], finished.shape[2]
    merged = torch.cat([finished_scores, torch.where(adding, scores, NEG)], dim=1)
    best = merged.topk(k, dim=-1).indices
    return (
        merged.gather(1, best),
        torch.cat([finished, seqs], dim=1).gather(1, best[:, :, None].expand(-1, -1, max_len)),
        torch.cat([finished_raw, raw], dim=1).gather(1, best),
        torch.cat([finished_len, torch.full_like(raw, num_tokens, dtype=torch.long)], dim=1).gather(1, best),
        torch.cat([is_finished, adding], dim=1).gather(1, best),
    )
