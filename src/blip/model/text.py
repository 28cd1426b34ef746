"""MED: the BERT-shaped text transformer used as unimodal encoder, image-grounded encoder and causal decoder.

Parameter names follow the reference BLIP (and transformers' BLIP), so checkpoints load without renaming:
embeddings.*, encoder.layer.N.{attention,crossattention}.{self.{query,key,value},output.{dense,LayerNorm}},
encoder.layer.N.{intermediate.dense,output.{dense,LayerNorm}}; the decoder adds cls.predictions.*.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blip.model.config import TextConfig

# (key, value) per layer, each (B, heads, length, head_dim)
LayerKV = tuple[torch.Tensor, torch.Tensor]


class KVCache:
    """Self-attention keys and values of the tokens decoded so far, one entry per layer.

    With a `capacity` (the longest sequence to be decoded) each layer's buffers are allocated once and every step
    writes its keys/values in place, so decoding does no concatenation per step; without one they grow by doubling.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.layers: list[LayerKV | None] = []
        self.length = 0  # tokens stored in every layer (advanced once per forward, after the last layer)

    def update(self, index: int, k: torch.Tensor, v: torch.Tensor) -> LayerKV:
        """Write this step's k, v for layer `index` after the stored tokens and return views of the whole history."""
        while len(self.layers) <= index:
            self.layers.append(None)
        end = self.length + k.shape[2]
        buffers = self.layers[index]
        if buffers is None or buffers[0].shape[2] < end:
            size = max(end, self.capacity or 0, 2 * buffers[0].shape[2] if buffers is not None else 0)
            grown = tuple(x.new_empty(x.shape[0], x.shape[1], size, x.shape[3]) for x in (k, v))
            if buffers is not None:
                for new, old in zip(grown, buffers):
                    new[:, :, : self.length] = old[:, :, : self.length]
            buffers = self.layers[index] = grown
        buffers[0][:, :, self.length : end] = k
        buffers[1][:, :, self.length : end] = v
        return buffers[0][:, :, :end], buffers[1][:, :, :end]

    def advance(self, steps: int) -> None:
        """Count `steps` more stored tokens (every layer has written them)."""
        self.length += steps

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and duplicate) batch rows, as beam search does when beams are re-ranked (no host synchronisation)."""
        self.layers = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.layers]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, heads, T, D/heads)."""
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


class QKV(nn.Module):
    """Query/key/value projections (BERT's `attention.self`); key/value read `kv_width`-wide inputs."""

    def __init__(self, hidden: int, kv_width: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_width, hidden)
        self.value = nn.Linear(kv_width, hidden)


class AddNorm(nn.Module):
    """BERT's post-norm output block: LayerNorm(residual + dropout(dense(x)))."""

    def __init__(self, in_dim: int, hidden: int, eps: float, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class Attention(nn.Module):
    """Multi-head self- or cross-attention on torch's scaled_dot_product_attention, then AddNorm."""

    def __init__(self, cfg: TextConfig, kv_width: int):
        super().__init__()
        self.heads = cfg.heads
        self.attention_dropout = cfg.attention_dropout
        self.self = QKV(cfg.hidden, kv_width)
        self.output = AddNorm(cfg.hidden, cfg.hidden, cfg.layer_norm_eps, cfg.dropout)
        # Opt-in (blip/gradcam.py): when a list, cross() appends its attention probabilities, still in the autograd
        # graph (scaled_dot_product_attention does not return them).
        self.record_probs: list[torch.Tensor] | None = None

    def kv(self, source: torch.Tensor) -> LayerKV:
        """Keys and values of `source` tokens, split into heads."""
        return _heads(self.self.key(source), self.heads), _heads(self.self.value(source), self.heads)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of x's queries to (k, v); x's rows may be R consecutive rows per row of k and v."""
        b, t, d = x.shape
        q = _heads(self.self.query(x), self.heads)
        rows = k.shape[0]
        dropout = self.attention_dropout if self.training else 0.0
        if rows == b:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            # Several beams (or answers) share one image: fold them into the query length so every beam attends to
            # the same keys/values without copying them (the reference repeats the image tokens per beam).
            r = b // rows
            q = q.reshape(rows, r, self.heads, t, -1).transpose(1, 2).reshape(rows, self.heads, r * t, -1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            out = out.reshape(rows, self.heads, r, t, -1).transpose(1, 2).reshape(b, self.heads, t, -1)
        return self.output(out.transpose(1, 2).reshape(b, t, d), x)

    def cross_kv(self, source: torch.Tensor) -> LayerKV:
        """Keys and values of image tokens for decoding: keys (B, heads, N, head_dim) laid out transposed in memory,
        so that q @ k^T in `cross` streams them contiguously at every step."""
        k, v = self.kv(source)
        return k.transpose(-2, -1).contiguous().transpose(-2, -1), v.contiguous()

    def cross(self, x: torch.Tensor, kv: LayerKV, mask: torch.Tensor | None) -> torch.Tensor:
        """Cross-attention to keys/values from kv() or cross_kv(); x's rows may be R consecutive rows per row of kv."""
        k, v = kv
        if self.record_probs is None and k.stride(-1) == 1:
            # kv()'s layout (training, single passes such as ITM): scaled_dot_product_attention is fastest there.
            return self.attend(x, k, v, mask)
        # cross_kv()'s layout (decoding), or Grad-CAM: softmax(q k^T / sqrt(d)) v written out, as transformers' BLIP
        # computes it. On CPU this is 2-3x faster than scaled_dot_product_attention for a decoding step's few
        # queries per image (benchmarks/bench_speed.py, profile), and it gives Grad-CAM the probabilities.
        b, t, d = x.shape
        rows, r = k.shape[0], b // k.shape[0]
        q = _heads(self.self.query(x), self.heads)
        # The R beams of one image share its keys/values: folded into the query length they read them once per
        # image instead of once per beam (the reference repeats the image tokens per beam); rows are independent.
        q = q.reshape(rows, r, self.heads, t, -1).transpose(1, 2).reshape(rows, self.heads, r * t, -1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = scores.float().softmax(-1)
        if self.record_probs is not None:
            self.record_probs.append(probs)  # (images, heads, R * T, N): R = 1 in Grad-CAM
        probs = F.dropout(probs, self.attention_dropout, self.training).to(v.dtype)
        out = (probs @ v).reshape(rows, self.heads, r, t, -1).permute(0, 2, 3, 1, 4)
        return self.output(out.reshape(b, t, d), x)


class TwinCrossAttention(nn.Module):
    """NLVR2's cross-attention to two images: a branch per image (`self0`/`self1`, `dense0`/`dense1`), outputs
    averaged, or in the upper layers concatenated and merged by `merge_layer` (reference nlvr_encoder)."""

    def __init__(self, cfg: TextConfig, kv_width: int, merge: bool):
        super().__init__()
        self.heads = cfg.heads
        self.attention_dropout = cfg.attention_dropout
        self.self0, self.self1 = QKV(cfg.hidden, kv_width), QKV(cfg.hidden, kv_width)
        self.output = nn.Module()
        self.output.dense0 = nn.Linear(cfg.hidden, cfg.hidden)
        self.output.dense1 = nn.Linear(cfg.hidden, cfg.hidden)
        if merge:
            self.output.merge_layer = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.output.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.output.dropout = nn.Dropout(cfg.dropout)
        self.merge = merge

    def kv(self, sources: tuple[torch.Tensor, torch.Tensor]) -> tuple[LayerKV, LayerKV]:
        """Keys and values of both images' tokens, each through its own branch."""
        return tuple(
            (_heads(p.key(src), self.heads), _heads(p.value(src), self.heads))
            for p, src in zip((self.self0, self.self1), sources)
        )  # type: ignore[return-value]

    def cross(self, x: torch.Tensor, kv: tuple[LayerKV, LayerKV], mask: torch.Tensor | None) -> torch.Tensor:
        """Attend to each image with its branch, then average or merge, then dropout, residual, LayerNorm."""
        b, t, d = x.shape
        dropout = self.attention_dropout if self.training else 0.0
        outs = []
        for proj, dense, (k, v) in zip((self.self0, self.self1), (self.output.dense0, self.output.dense1), kv):
            ctx = F.scaled_dot_product_attention(
                _heads(proj.query(x), self.heads), k, v, attn_mask=mask, dropout_p=dropout
            )
            outs.append(dense(ctx.transpose(1, 2).reshape(b, t, d)))
        merged = self.output.merge_layer(torch.cat(outs, dim=-1)) if self.merge else (outs[0] + outs[1]) / 2
        return self.output.LayerNorm(x + self.output.dropout(merged))


class Layer(nn.Module):
    """Self-attention, optional cross-attention to image tokens, feed-forward; each post-norm."""

    def __init__(self, cfg: TextConfig, encoder_width: int | None, twin: bool = False, merge: bool = False):
        super().__init__()
        self.attention = Attention(cfg, cfg.hidden)
        if encoder_width is not None:
            self.crossattention = (
                TwinCrossAttention(cfg, encoder_width, merge) if twin else Attention(cfg, encoder_width)
            )
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output = AddNorm(cfg.intermediate, cfg.hidden, cfg.layer_norm_eps, cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        cross: LayerKV | None,
        cross_mask: torch.Tensor | None,
        cache: KVCache | None,
        index: int,
    ) -> torch.Tensor:
        k, v = self.attention.kv(x)
        if cache is not None:
            k, v = cache.update(index, k, v)
        x = self.attention.attend(x, k, v, self_mask)
        if cross is not None:
            x = self.crossattention.cross(x, cross, cross_mask)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class Embeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm, dropout (BLIP's BERT has no token types)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        return self.dropout(self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions)))


class TextTransformer(nn.Module):
    """One BERT used three ways: no image (unimodal), image + bidirectional (encoder), image + causal (decoder)."""

    def __init__(self, cfg: TextConfig, encoder_width: int | None, twin: bool = False, merge_from: int = 6):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = nn.Module()
        # NLVR2 (twin): layers from `merge_from` on merge the two branches by concatenation, lower ones average them
        # (the reference: from layer 6, whatever the depth).
        self.encoder.layer = nn.ModuleList(
            Layer(cfg, encoder_width, twin, merge=twin and i >= merge_from) for i in range(cfg.layers)
        )

    def cross_kv(self, image_embeds: torch.Tensor) -> list[LayerKV]:
        """Cross-attention keys/values of the image tokens for every layer: computed once, reused by every step."""
        return [layer.crossattention.cross_kv(image_embeds) for layer in self.encoder.layer]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
        image_mask: torch.Tensor | None = None,
        *,
        cross_kv: list[LayerKV] | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Hidden states (B, T, hidden). Unimodal when neither image_embeds nor cross_kv is given.

        attention_mask (B, T_total) and image_mask (B_img, N) hold 1 for tokens to attend, 0 for padding; rows of
        input_ids may be R consecutive rows per image (beams), in which case image tensors have B/R rows.
        """
        past = cache.length if cache is not None else 0
        x = self.embeddings(input_ids, start=past)
        self_mask = _self_attention_mask(attention_mask, x.shape[1], past, causal, x.device)
        cross_mask = None if image_mask is None else image_mask[:, None, None, :].bool()
        if cross_kv is None and image_embeds is not None:
            cross_kv = [None] * len(self.encoder.layer)  # computed layer by layer below (training path)
        for i, layer in enumerate(self.encoder.layer):
            cross = None
            if cross_kv is not None:
                cross = cross_kv[i] if cross_kv[i] is not None else layer.crossattention.kv(image_embeds)
            x = layer(x, self_mask, cross, cross_mask, cache, i)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return x


def _self_attention_mask(
    attention_mask: torch.Tensor | None, t: int, past: int, causal: bool, device: torch.device
) -> torch.Tensor | None:
    """Boolean (B or 1, 1, T, past + T) mask: True where a query may attend; None when everything is visible."""
    mask = None
    if causal and t > 1:
        mask = torch.ones(t, past + t, dtype=torch.bool, device=device).tril(diagonal=past)[None, None]
    if attention_mask is not None and not bool(attention_mask.all()):
        keys = attention_mask[:, None, None, :].bool()
        mask = keys if mask is None else mask & keys
    return mask


class LMPredictions(nn.Module):
    """BERT's prediction head: dense, GELU, LayerNorm, then the (tied) vocabulary projection with its own bias."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.transform.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden, cfg.vocab_size)
        self.bias = self.decoder.bias  # the reference registers the same bias under both names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transform.LayerNorm(F.gelu(self.transform.dense(x)))
        return self.decoder(x)


class TextDecoder(nn.Module):
    """Image-grounded decoder: `bert` (causal MED) + `cls.predictions` LM head tied to the word embeddings."""

    def __init__(self, cfg: TextConfig, encoder_width: int):
        super().__init__()
        self.bert = TextTransformer(cfg, encoder_width)
        self.cls = nn.ModuleDict({"predictions": LMPredictions(cfg)})
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        *,
        cross_kv: list[LayerKV] | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Next-token logits (B, T, vocab), or (B, vocab) for the last position only when decoding."""
        h = self.bert(input_ids, attention_mask, image_embeds, image_mask, cross_kv=cross_kv, causal=True, cache=cache)
        return self.cls.predictions(h[:, -1] if last_only else h)
