"""The loaded-model object users call: caption, ask, match, and image / text / multimodal features."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from blip.checkpoint import LoadReport
from blip.data.text import pre_question
from blip.data.transforms import eval_transform
from blip.errors import BlipError
from blip.generation import GenerationConfig, generate
from blip.images import ImageSource, load_image
from blip.model.blip import BlipModel
from blip.model.losses import lm_loss
from blip.tokenizer import Tokenizer


@dataclass
class Caption:
    """A caption with its confidence: summed and mean token log-probability, and ITM match probability if known."""

    text: str
    logprob: float
    mean_logprob: float
    itm: float | None = None


@dataclass
class Answer:
    """A VQA answer with its log-probability (generation) or ranking score (answer list)."""

    text: str
    logprob: float


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Blip:
    """A BLIP model with its tokenizer and image transform, ready for inference."""

    def __init__(self, model: BlipModel, tokenizer: Tokenizer, device: str | torch.device = "cpu",
                 dtype: str = "float32", report: LoadReport | None = None):
        if dtype not in ("float32", "bfloat16"):
            raise BlipError(f"dtype must be float32 or bfloat16, not {dtype!r}")
        if len(tokenizer) > model.cfg.text.vocab_size:
            raise BlipError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is "
                            f"{model.cfg.text.vocab_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if dtype == "bfloat16":
            _cast_to_bf16(self.model)
        self.tokenizer = tokenizer
        self.dtype = dtype
        self.report = report  # what the checkpoint loader did (format, ignored keys, defaults)
        self.transform = eval_transform(model.cfg.vision.image_size)

    @property
    def cfg(self):
        return self.model.cfg

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision context for this model's forward passes (bf16 autocast, or nothing)."""
        # bf16: weights cast once (_cast_to_bf16) and autocast on top, so matmuls run in bf16 without re-casting the
        # weights, while LayerNorm, softmax and fp32 inputs follow autocast's rules (LayerNorm and softmax in fp32).
        # Measured on a Zen 4 CPU (BENCHMARKS.md, issue 15), this beat autocast alone and a cast alone.
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def compile(self, backend: str = "inductor") -> "Blip":
        """torch.compile the vision encoder and the decoder step in place (compiled on first use; see BENCHMARKS.md)."""
        self.model.visual_encoder.compile(backend=backend)
        if self.model.has("text_decoder"):
            # The step's sequence and cache lengths change every step: compile once for all lengths.
            self.model.text_decoder.compile(backend=backend, dynamic=True)
        return self

    def _need(self, part: str, what: str) -> None:
        if not self.model.has(part):
            raise BlipError(f"{what} needs a model with a {part}; this one has {', '.join(self.cfg.parts)}")

    def pixels(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Load and transform images to a (B, 3, S, S) tensor on the model's device."""
        return torch.stack([self.transform(load_image(im)) for im in images]).to(self.device)

    def _texts(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(list(texts), max_length=max_length)
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def image_embeds(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """All ViT tokens (B, 1 + patches, width)."""
        with self.autocast():
            return self.model.encode_image(self.pixels(images)).float()

    @torch.no_grad()
    def image_features(self, images: Sequence[ImageSource], batch_size: int = 32) -> torch.Tensor:
        """L2-normalised ITC image features (B, embed_dim): cosine with text_features is the ITC score."""
        self._need("itc", "image features")
        out = []
        for s in _batches(len(images), batch_size):
            with self.autocast():
                out.append(self.model.image_embed(self.model.encode_image(self.pixels(images[s]))).float())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str], batch_size: int = 256, max_length: int = 35) -> torch.Tensor:
        """L2-normalised ITC text features (B, embed_dim) from the unimodal encoder."""
        self._need("itc", "text features")
        out = []
        for s in _batches(len(texts), batch_size):
            with self.autocast():
                out.append(self.model.text_embed(*self._texts(texts[s], max_length)).float())
        return torch.cat(out)

    @torch.no_grad()
    def multimodal_features(self, images: Sequence[ImageSource], texts: Sequence[str],
                            max_length: int = 35) -> torch.Tensor:
        """Image-grounded encoder output at [ENC] (B, hidden) for paired images and texts."""
        self._need("text_encoder", "multimodal features")
        images, texts = _pair(images, texts)
        with self.autocast():
            states = self.model.encode_grounded(*self._texts(texts, max_length),
                                                self.model.encode_image(self.pixels(images)))
        return states[:, 0].float()

    @torch.no_grad()
    def match(self, images: Sequence[ImageSource], texts: Sequence[str], max_length: int = 35,
              batch_size: int = 16) -> list[dict[str, float]]:
        """Per (image, text) pair: 'itm' match probability (ITM head) and 'itc' cosine similarity (not a probability).

        Give equal-length lists, or one image and many texts, or many images and one text.
        """
        images, texts = _pair(images, texts)
        results = []
        for s in _batches(len(texts), batch_size):
            ids, mask = self._texts(texts[s], max_length)
            with self.autocast():
                embeds = self.model.encode_image(self.pixels(images[s]))
                row: dict[str, torch.Tensor] = {}
                if self.model.has("itm"):
                    row["itm"] = self.model.itm_logits(embeds, ids, mask).float().softmax(-1)[:, 1]
                if self.model.has("itc"):
                    row["itc"] = (self.model.image_embed(embeds).float() * self.model.text_embed(ids, mask).float()).sum(-1)
            if not row:
                raise BlipError("match needs a model with an ITM or ITC head (a retrieval or pretrained checkpoint)")
            results += [{k: float(v[i]) for k, v in row.items()} for i in range(len(ids))]
        return results

    @torch.no_grad()
    def caption(self, images: Sequence[ImageSource], prompt: str = "a picture of ", strategy: str = "beam",
                num_beams: int = 3, max_length: int = 20, min_length: int = 5, top_p: float = 0.9,
                repetition_penalty: float | None = None, num_captions: int = 1, batch_size: int = 8,
                generator: torch.Generator | None = None, progress: Any = None, **options: Any) -> list[Caption]:
        """Caption images (num_captions per image, image-major); lengths count the prompt, as in the reference."""
        self._need("text_decoder", "captioning")
        if self.cfg.decoder_input != "image":
            raise BlipError("this is a VQA model: its decoder reads questions, not images; use ask()")
        if repetition_penalty is None:  # the reference's defaults: 1.0 for beam search, 1.1 for nucleus sampling
            repetition_penalty = 1.1 if strategy == "nucleus" else 1.0
        gen = GenerationConfig(strategy=strategy, num_beams=num_beams, max_length=max_length, min_length=min_length,
                               top_p=top_p, repetition_penalty=repetition_penalty,
                               num_return_sequences=num_captions, **options)
        prompt_ids = self.tokenizer.encode(prompt)[:-1]  # drop [SEP]: the caption continues the prompt
        prompt_ids[0] = self.tokenizer.dec_id
        out: list[Caption] = []
        for s in _batches(len(images), batch_size):
            pixels = self.pixels(images[s])
            with self.autocast():
                embeds = self.model.encode_image(pixels)
                cross_kv = self.model.text_decoder.bert.cross_kv(embeds)
                prompt_t = torch.tensor([prompt_ids] * len(pixels), device=self.device)
                result = generate(self.model.text_decoder, prompt_t, cross_kv, None, gen, self.tokenizer.sep_id,
                                  self.tokenizer.pad_id, generator)
                texts = [self.tokenizer.decode(seq[len(prompt_ids):]) for seq in result.sequences]
                itm = None
                if self.model.has("itm"):
                    ids, mask = self._texts(texts, 35)
                    itm = self.model.itm_logits(embeds.repeat_interleave(len(texts) // len(pixels), 0), ids,
                                                mask).float().softmax(-1)[:, 1]
            for i, text in enumerate(texts):
                lp, n = float(result.logprob[i]), max(1, int(result.num_tokens[i]))
                out.append(Caption(text, lp, lp / n, None if itm is None else float(itm[i])))
            if progress is not None:
                progress.update(len(pixels))
        return out

    @torch.no_grad()
    def ask(self, images: Sequence[ImageSource], questions: Sequence[str], answers: Sequence[str] | None = None,
            num_beams: int = 3, max_length: int = 10, k_test: int = 128, batch_size: int = 8,
            progress: Any = None) -> list[Answer]:
        """Answer questions about images: generate (beam search), or rank a given answer list (reference k_test)."""
        self._need_vqa("ask()")
        images, questions = _pair(images, questions)
        out: list[Answer] = []
        for s in _batches(len(questions), batch_size):
            with self.autocast():
                embeds = self.model.encode_image(self.pixels(images[s]))
            out += self.ask_embeds(embeds, questions[s], answers, num_beams, max_length, k_test)
            if progress is not None:
                progress.update(len(embeds))
        return out

    @torch.no_grad()
    def ask_embeds(self, image_embeds: torch.Tensor, questions: Sequence[str], answers: Sequence[str] | None = None,
                   num_beams: int = 3, max_length: int = 10, k_test: int = 128) -> list[Answer]:
        """ask() on ViT tokens (B, L, width) already computed, one batch: e.g. video frames' tokens concatenated."""
        self._need_vqa("ask()")
        if len(image_embeds) != len(questions):
            raise BlipError(f"got {len(image_embeds)} image embeddings and {len(questions)} questions")
        ids, mask = self._texts([pre_question(q) for q in questions], 35)
        with self.autocast():
            states = self.model.encode_grounded(ids, mask, image_embeds)
            if answers is None:
                return self._generate_answers(states, mask, num_beams, max_length)
            return self._rank_answers(states, mask, answers, k_test)

    def _need_vqa(self, what: str) -> None:
        self._need("text_encoder", "VQA")
        self._need("text_decoder", "VQA")
        if self.cfg.decoder_input != "question":
            raise BlipError(f"this model's decoder reads images, not questions: load a VQA checkpoint for {what}")

    def _generate_answers(self, states, mask, num_beams: int, max_length: int) -> list[Answer]:
        gen = GenerationConfig(strategy="beam", num_beams=num_beams, max_length=max_length, min_length=1)
        cross_kv = self.model.text_decoder.bert.cross_kv(states)
        start = torch.full((len(states), 1), self.tokenizer.dec_id, device=self.device)
        result = generate(self.model.text_decoder, start, cross_kv, mask, gen,
                          self.tokenizer.sep_id, self.tokenizer.pad_id)
        return [Answer(self.tokenizer.decode(seq), float(lp)) for seq, lp in zip(result.sequences, result.logprob)]

    def _rank_answers(self, states, mask, answers: Sequence[str], k_test: int) -> list[Answer]:
        """The reference's rank_answer: top-k answers by first-token probability, then by full LM loss."""
        ans_ids, ans_mask = self._texts(list(answers), 512)
        ans_ids[:, 0] = self.tokenizer.dec_id
        q = len(states)
        decoder = self.model.text_decoder
        cross_kv = decoder.bert.cross_kv(states)
        qmask = mask
        start = torch.full((q, 1), self.tokenizer.dec_id, device=self.device)
        first = decoder(start, image_mask=qmask, cross_kv=cross_kv, last_only=True).float().softmax(-1)
        k = min(k_test, len(answers))
        top_probs, top_ids = first.index_select(1, ans_ids[:, 1]).topk(k, dim=1)
        cand_ids = ans_ids[top_ids.view(-1)]
        cand_mask = ans_mask[top_ids.view(-1)]
        logits = decoder(cand_ids, cand_mask, image_mask=qmask, cross_kv=cross_kv).float()
        scores = -lm_loss(logits, cand_ids, cand_mask, label_smoothing=self.cfg.label_smoothing).view(q, k)
        best = scores.argmax(dim=1)
        return [Answer(answers[int(top_ids[i, best[i]])], float(scores[i, best[i]])) for i in range(q)]


def _cast_to_bf16(model: torch.nn.Module) -> None:
    """Cast every weight to bf16 in place except LayerNorms' (autocast runs LayerNorm in fp32 on fp32 weights)."""
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            continue
        for p in module.parameters(recurse=False):
            p.data = p.data.to(torch.bfloat16)
        for name, b in module.named_buffers(recurse=False):
            if b.is_floating_point():
                setattr(module, name, b.to(torch.bfloat16))


def _pair(images: Sequence[Any], texts: Sequence[str]) -> tuple[list[Any], list[str]]:
    """Broadcast one image over many texts or one text over many images; otherwise lengths must agree."""
    images, texts = list(images), list(texts)
    if len(images) == 1 and len(texts) > 1:
        images = images * len(texts)
    elif len(texts) == 1 and len(images) > 1:
        texts = texts * len(images)
    if len(images) != len(texts):
        raise BlipError(f"got {len(images)} images and {len(texts)} texts; give equal numbers, or one of either")
    return images, texts
