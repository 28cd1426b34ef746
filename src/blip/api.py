"""The loaded-model object users call: caption, ask, match, and image / text / multimodal features."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from blip.checkpoint import LoadReport
from blip.data.text import pre_question
from blip.data.transforms import eval_transform
from blip.defaults import PROMPT, TEXT_TOKENS
from blip.errors import BlipError, ImageError
from blip.generation import GenerationConfig, generate
from blip.gradcam import GradCam, default_layer, itm_gradcam, split_maps
from blip.images import ImageSource, load_image
from blip.model.blip import BlipModel
from blip.model.losses import lm_loss
from blip.tokenizer import Tokenizer

if TYPE_CHECKING:
    from blip.index import Index


@dataclass
class Caption:
    """A caption with its confidence: summed and mean token log-probability, and ITM match probability if known."""

    text: str
    logprob: float
    mean_logprob: float
    itm: float | None = None
    ids: list[int] = field(default_factory=list)  # the generated sequence, prompt and end token included
    score: float | None = None  # beam search: the length-normalised score the beams were ranked by
    error: str | None = None  # why the image could not be used (on_error="report"); text is then empty


@dataclass
class Answer:
    """A VQA answer with its log-probability (generation) or ranking score (answer list)."""

    text: str
    logprob: float
    error: str | None = None  # why the image could not be used (on_error="report"); text is then empty


# One image, or a sequence of them: a path is not iterated as characters.
Images = ImageSource | Sequence[ImageSource]
Texts = str | Sequence[str]


def _images(images: Images) -> list[ImageSource]:
    """A single image (path, bytes, PIL image, one array or tensor) as a list of one; a sequence as a list."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim <= 3:  # (H, W[, 3]) or (3, H, W)
        return [images]
    return list(images)


def _texts_list(texts: Texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _usable(images: list[ImageSource]) -> tuple[list[Image.Image], list[int], dict[int, str]]:
    """Decode each image: the good ones, their positions, and the bad ones' messages by position."""
    good, where, errors = [], [], {}
    for i, im in enumerate(images):
        try:
            good.append(load_image(im))
            where.append(i)
        except ImageError as e:
            errors[i] = str(e)
    return good, where, errors


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "report"):
        raise BlipError(f"on_error must be 'raise' or 'report', not {on_error!r}")


@dataclass
class Verdict:
    """An NLVR2 prediction: whether the statement is true of the image pair, and the classifier's probability."""

    true: bool
    probability: float


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Blip:
    """A BLIP model with its tokenizer and image transform, ready for inference."""

    def __init__(
        self,
        model: BlipModel,
        tokenizer: Tokenizer,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        report: LoadReport | None = None,
    ):
        if dtype not in ("float32", "bfloat16"):
            raise BlipError(f"dtype must be float32 or bfloat16, not {dtype!r}")
        if len(tokenizer) > model.cfg.text.vocab_size:
            raise BlipError(
                f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {model.cfg.text.vocab_size}"
            )
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

    def compile(self, backend: str = "inductor") -> Blip:
        """torch.compile the vision encoder and the decoder step in place (compiled on first use; see BENCHMARKS.md)."""
        self.model.visual_encoder.compile(backend=backend)
        if self.model.has("text_decoder"):
            # The step's sequence and cache lengths change every step: compile once for all lengths.
            self.model.text_decoder.compile(backend=backend, dynamic=True)
        return self

    def _need(self, part: str, what: str) -> None:
        if not self.model.has(part):
            raise BlipError(f"{what} needs a model with a {part}; this one has {', '.join(self.cfg.parts)}")

    def pixels(self, images: Sequence[ImageSource | np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Load and transform images to a (B, 3, S, S) tensor on the model's device.

        Besides paths, bytes and PIL images: uint8 arrays (H, W, 3) or (H, W) and uint8 tensors (3, H, W) are
        transformed like decoded images; float tensors (3, S, S) are taken as already transformed (normalised).
        """
        return torch.stack([self._pixel(im) for im in images]).to(self.device)

    def _pixel(self, image: ImageSource | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor) and image.is_floating_point():
            size = self.cfg.vision.image_size
            if tuple(image.shape) != (3, size, size):
                raise BlipError(
                    f"a float image tensor must be normalised pixels (3, {size}, {size}), not {tuple(image.shape)}"
                )
            return image.to(self.device)
        if isinstance(image, torch.Tensor):
            image = image.permute(1, 2, 0).cpu().numpy() if image.dim() == 3 else image.cpu().numpy()
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
                raise BlipError(
                    f"an image array must be uint8 (H, W, 3) or (H, W), not {image.dtype} {tuple(image.shape)}"
                )
            image = Image.fromarray(image)
        return self.transform(load_image(image))

    def _texts(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenizer(list(texts), max_length=max_length)
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def image_embeds(self, images: Images) -> torch.Tensor:
        """All ViT tokens (B, 1 + patches, width)."""
        with self.autocast():
            return self.model.encode_image(self.pixels(_images(images))).float()

    @torch.no_grad()
    def image_features(self, images: Images, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised ITC image features (B, embed_dim): cosine with text_features is the ITC score."""
        self._need("itc", "image features")
        images = _images(images)
        out = []
        for s in _batches(len(images), batch_size):
            with self.autocast():
                out.append(self.model.image_embed(self.model.encode_image(self.pixels(images[s]))).float())
        return torch.cat(out)

    @torch.no_grad()
    def text_features(self, texts: Texts, batch_size: int = 256, max_length: int = TEXT_TOKENS) -> torch.Tensor:
        """L2-normalised ITC text features (B, embed_dim) from the unimodal encoder."""
        self._need("itc", "text features")
        texts = _texts_list(texts)
        out = []
        for s in _batches(len(texts), batch_size):
            with self.autocast():
                out.append(self.model.text_embed(*self._texts(texts[s], max_length)).float())
        return torch.cat(out)

    @torch.no_grad()
    def multimodal_features(self, images: Images, texts: Texts, max_length: int = TEXT_TOKENS) -> torch.Tensor:
        """Image-grounded encoder output at [ENC] (B, hidden) for paired images and texts."""
        self._need("text_encoder", "multimodal features")
        images, texts = _pair(images, texts)
        with self.autocast():
            states = self.model.encode_grounded(*self._texts(texts, max_length), self._encode_paired(images))
        return states[:, 0].float()

    @torch.no_grad()
    def text_states(self, texts: Sequence[str], max_length: int = TEXT_TOKENS) -> torch.Tensor:
        """Unimodal text encoder states (B, T, hidden), [CLS] first, padded to the longest (no ITC heads needed)."""
        self._need("text_encoder", "text states")
        with self.autocast():
            return self.model.text_encoder(*self._texts(texts, max_length)).float()

    @torch.no_grad()
    def multimodal_states(
        self, images: Sequence[ImageSource], texts: Sequence[str], max_length: int = TEXT_TOKENS
    ) -> torch.Tensor:
        """Image-grounded encoder states (B, T, hidden) for paired images and texts, [ENC] first, padded."""
        self._need("text_encoder", "multimodal states")
        images, texts = _pair(images, texts)
        with self.autocast():
            return self.model.encode_grounded(*self._texts(texts, max_length), self._encode_paired(images)).float()

    @torch.no_grad()
    def itm_logits(
        self, images: Sequence[ImageSource], texts: Sequence[str], max_length: int = TEXT_TOKENS
    ) -> torch.Tensor:
        """ITM head logits (N, 2) for paired images and texts, index 1 = match (softmax gives match's 'itm')."""
        self._need("itm", "ITM logits")
        images, texts = _pair(images, texts)
        ids, mask = self._texts(texts, max_length)
        with self.autocast():
            return self.model.itm_logits(self._encode_paired(images), ids, mask).float()

    @torch.no_grad()
    def nlvr(
        self,
        images0: Sequence[ImageSource],
        images1: Sequence[ImageSource],
        statements: Sequence[str],
        max_length: int = 40,
        batch_size: int = 16,
    ) -> list[Verdict]:
        """NLVR2: is each statement true of its (left, right) image pair? One statement may cover many pairs."""
        if not self.cfg.nlvr:
            raise BlipError("nlvr needs an NLVR2 checkpoint (twin cross-attention and a cls_head)")
        if len(images0) != len(images1):
            raise BlipError(f"got {len(images0)} left images and {len(images1)} right images")
        pairs, statements = _pair(list(zip(images0, images1)), statements)
        out = []
        for s in _batches(len(pairs), batch_size):
            left, right = zip(*pairs[s])
            ids, mask = self._texts(statements[s], max_length)
            with self.autocast():
                e0, e1 = self.model.encode_image(self.pixels(list(left) + list(right))).chunk(2)
                probs = self.model.nlvr_logits(e0, e1, ids, mask).float().softmax(-1)[:, 1]
            out += [Verdict(bool(p > 0.5), float(p)) for p in probs]
        return out

    def _encode_paired(self, images: list[Any]) -> torch.Tensor:
        """ViT states of a paired image list, each distinct image object encoded once (one image asked many questions
        or matched with many texts is repeated by _pair: its copies share one forward pass)."""
        first: dict[int, int] = {}
        unique: list[Any] = []
        for im in images:
            if id(im) not in first:
                first[id(im)] = len(unique)
                unique.append(im)
        embeds = self.model.encode_image(self.pixels(unique))
        if len(unique) == len(images):
            return embeds
        return embeds[torch.tensor([first[id(im)] for im in images], device=embeds.device)]

    @torch.no_grad()
    def match(
        self, images: Images, texts: Texts, max_length: int = TEXT_TOKENS, batch_size: int = 16, on_error: str = "raise"
    ) -> list[dict[str, Any]]:
        """Per (image, text) pair: 'itm' match probability (ITM head) and 'itc' cosine similarity (not a probability).

        Give equal-length lists, or one image and many texts, or many images and one text. With on_error="report"
        an unusable image gives {"error": why} in its place instead of raising.
        """
        _check_on_error(on_error)
        images, texts = _pair(images, texts)
        if on_error == "report":
            good, where, errors = _usable(images)
            scores = iter(self.match(good, [texts[i] for i in where], max_length, batch_size) if good else [])
            return [{"error": errors[i]} if i in errors else next(scores) for i in range(len(images))]
        results = []
        for s in _batches(len(texts), batch_size):
            ids, mask = self._texts(texts[s], max_length)
            with self.autocast():
                embeds = self._encode_paired(images[s])
                row: dict[str, torch.Tensor] = {}
                if self.model.has("itm"):
                    row["itm"] = self.model.itm_logits(embeds, ids, mask).float().softmax(-1)[:, 1]
                if self.model.has("itc"):
                    row["itc"] = (
                        self.model.image_embed(embeds).float() * self.model.text_embed(ids, mask).float()
                    ).sum(-1)
            if not row:
                raise BlipError("match needs a model with an ITM or ITC head (a retrieval or pretrained checkpoint)")
            results += [{k: float(v[i]) for k, v in row.items()} for i in range(len(ids))]
        return results

    def index(self, sources: Sequence[str], out: str | os.PathLike, batch_size: int = 32, **options: Any) -> Index:
        """Embed every image of sources (files, folders, list files, shards) into the index at out (incremental)."""
        from blip.index import build_index

        return build_index(self, sources, out, batch_size=batch_size, **options)

    def gradcam(
        self, image: ImageSource, text: str | Sequence[str], layer: int | None = None, max_length: int = TEXT_TOKENS
    ) -> GradCam | list[GradCam]:
        """ITM Grad-CAM of one image with a text (a GradCam) or with each of several texts (a list), at one
        cross-attention layer of the image-grounded encoder (default: the middle one, LAVIS's 6 of 12)."""
        self._need("itm", "Grad-CAM")
        texts = [text] if isinstance(text, str) else list(text)
        layer = default_layer(self.model) if layer is None else layer
        ids, mask = self._texts(texts, max_length)
        with self.autocast():
            with torch.no_grad():  # the maps need gradients inside the text encoder only
                embeds = self.model.encode_image(self.pixels([image])).expand(len(texts), -1, -1)
            maps, logits = itm_gradcam(self.model, embeds, ids, mask, layer)
        maps, itm = maps.float().cpu(), logits.float().softmax(-1)[:, 1]
        out = []
        for i, length in enumerate(mask.sum(1).tolist()):
            enc, mean, per_token = split_maps(maps[i], length)
            tokens = [self.tokenizer.tok.id_to_token(t) for t in ids[i, 1 : length - 1].tolist()]
            out.append(GradCam(tokens, enc, mean, per_token, float(itm[i]), layer))
        return out[0] if isinstance(text, str) else out

    @torch.no_grad()
    def caption(
        self,
        images: Images,
        prompt: str = PROMPT,
        strategy: str = "beam",
        num_beams: int = 3,
        max_length: int = 20,
        min_length: int = 5,
        top_p: float = 0.9,
        top_k: int = 50,
        repetition_penalty: float | None = None,
        num_captions: int = 1,
        batch_size: int = 8,
        generator: torch.Generator | None = None,
        progress: Any = None,
        on_error: str = "raise",
        **options: Any,
    ) -> list[Caption]:
        """Caption one image or many (num_captions per image, image-major); lengths count the prompt, as in the
        reference. With on_error="report" an unusable image gives Captions with `error` set instead of raising."""
        self._need("text_decoder", "captioning")
        _check_on_error(on_error)
        images = _images(images)
        if on_error == "report":
            good, _, errors = _usable(images)
            done = iter(
                self.caption(
                    good,
                    prompt,
                    strategy,
                    num_beams,
                    max_length,
                    min_length,
                    top_p,
                    top_k,
                    repetition_penalty,
                    num_captions,
                    batch_size,
                    generator,
                    progress,
                    **options,
                )
                if good
                else []
            )
            return [
                Caption("", -math.inf, -math.inf, error=errors[i]) if i in errors else next(done)
                for i in range(len(images))
                for _ in range(num_captions)
            ]
        if self.cfg.decoder_input != "image":
            raise BlipError("this is a VQA model: its decoder reads questions, not images; use ask()")
        if repetition_penalty is None:  # the reference's defaults: 1.0 for beam search, 1.1 for nucleus sampling
            repetition_penalty = 1.1 if strategy == "nucleus" else 1.0
        gen = GenerationConfig(
            strategy=strategy,
            num_beams=num_beams,
            max_length=max_length,
            min_length=min_length,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            num_return_sequences=num_captions,
            **options,
        )
        prompt_ids = self.tokenizer.encode(prompt)[:-1]  # drop [SEP]: the caption continues the prompt
        prompt_ids[0] = self.tokenizer.dec_id
        out: list[Caption] = []
        for s in _batches(len(images), batch_size):
            pixels = self.pixels(images[s])
            with self.autocast():
                embeds = self.model.encode_image(pixels)
                cross_kv = self.model.text_decoder.bert.cross_kv(embeds)
                prompt_t = torch.tensor([prompt_ids] * len(pixels), device=self.device)
                result = generate(
                    self.model.text_decoder,
                    prompt_t,
                    cross_kv,
                    None,
                    gen,
                    self.tokenizer.sep_id,
                    self.tokenizer.pad_id,
                    generator,
                )
                texts = [self.tokenizer.decode(seq[len(prompt_ids) :]) for seq in result.sequences]
                itm = None
                if self.model.has("itm"):
                    ids, mask = self._texts(texts, TEXT_TOKENS)
                    # num_captions rows per image share its keys/values (model/text.py folds them), not copies
                    itm = self.model.itm_logits(embeds, ids, mask).float().softmax(-1)[:, 1]
            for i, text in enumerate(texts):
                lp, n = float(result.logprob[i]), max(1, int(result.num_tokens[i]))
                ids = result.sequences[i, : len(prompt_ids) + int(result.num_tokens[i])].tolist()
                score = None if result.score is None else float(result.score[i])
                out.append(Caption(text, lp, lp / n, None if itm is None else float(itm[i]), ids, score))
            if progress is not None:
                progress.update(len(pixels))
        return out

    @torch.no_grad()
    def ask(
        self,
        images: Images,
        questions: Texts,
        answers: Sequence[str] | None = None,
        num_beams: int = 3,
        max_length: int = 10,
        k_test: int = 128,
        batch_size: int = 8,
        progress: Any = None,
        top: int | None = None,
        mask_question_padding: bool = True,
        on_error: str = "raise",
        **options: Any,
    ) -> list[Answer] | list[list[Answer]]:
        """Answer questions about images: generate (beam search), or rank a given answer list (reference k_test).

        With an answer list and `top`, each question gets its `top` best answers, best first, with their scores.
        mask_question_padding=False decodes as the reference's generate does, attending to the question's padding
        (answers then depend on the other questions of the batch); `options` go to GenerationConfig. With
        on_error="report" an unusable image gives an Answer with `error` set instead of raising.
        """
        self._need_vqa("ask()")
        _check_on_error(on_error)
        images, questions = _pair(images, questions)
        if on_error == "report":
            good, where, errors = _usable(images)
            done = iter(
                self.ask(
                    good,
                    [questions[i] for i in where],
                    answers,
                    num_beams,
                    max_length,
                    k_test,
                    batch_size,
                    progress,
                    top,
                    mask_question_padding,
                    **options,
                )
                if good
                else []
            )
            # with `top`, every question gets a list, so an unusable image gets a list of its one error answer
            failed = {i: Answer("", -math.inf, error=e) for i, e in errors.items()}
            return [([failed[i]] if top else failed[i]) if i in failed else next(done) for i in range(len(images))]
        out: list[Answer] = []
        for s in _batches(len(questions), batch_size):
            with self.autocast():
                embeds = self._encode_paired(images[s])
            out += self.ask_embeds(
                embeds, questions[s], answers, num_beams, max_length, k_test, top, mask_question_padding, **options
            )
            if progress is not None:
                progress.update(len(embeds))
        return out

    @torch.no_grad()
    def ask_embeds(
        self,
        image_embeds: torch.Tensor,
        questions: Sequence[str],
        answers: Sequence[str] | None = None,
        num_beams: int = 3,
        max_length: int = 10,
        k_test: int = 128,
        top: int | None = None,
        mask_question_padding: bool = True,
        **options: Any,
    ) -> list[Answer] | list[list[Answer]]:
        """ask() on ViT tokens (B, L, width) already computed, one batch: e.g. video frames' tokens concatenated."""
        self._need_vqa("ask()")
        if len(image_embeds) != len(questions):
            raise BlipError(f"got {len(image_embeds)} image embeddings and {len(questions)} questions")
        ids, mask = self._texts([pre_question(q) for q in questions], TEXT_TOKENS)
        with self.autocast():
            states = self.model.encode_grounded(ids, mask, image_embeds)
            if answers is None:
                # The reference's generate attends to every question position, padding included.
                cross_mask = mask if mask_question_padding else torch.ones_like(mask)
                return self._generate_answers(states, cross_mask, num_beams, max_length, **options)
            return self._rank_answers(states, mask, answers, k_test, top)

    def _need_vqa(self, what: str) -> None:
        self._need("text_encoder", "VQA")
        self._need("text_decoder", "VQA")
        if self.cfg.decoder_input != "question":
            raise BlipError(f"this model's decoder reads images, not questions: load a VQA checkpoint for {what}")

    def _generate_answers(self, states, mask, num_beams: int, max_length: int, **options: Any) -> list[Answer]:
        gen = GenerationConfig(
            **{"strategy": "beam", "num_beams": num_beams, "max_length": max_length, "min_length": 1, **options}
        )
        cross_kv = self.model.text_decoder.bert.cross_kv(states)
        start = torch.full((len(states), 1), self.tokenizer.dec_id, device=self.device)
        result = generate(
            self.model.text_decoder, start, cross_kv, mask, gen, self.tokenizer.sep_id, self.tokenizer.pad_id
        )
        return [Answer(self.tokenizer.decode(seq), float(lp)) for seq, lp in zip(result.sequences, result.logprob)]

    def _rank_answers(
        self, states, mask, answers: Sequence[str], k_test: int, top: int | None = None
    ) -> list[Answer] | list[list[Answer]]:
        """The reference's rank_answer: top-k answers by first-token probability, then by full LM loss.

        The best answer per question, or with `top` that many of the k_test candidates, best first.
        """
        # 512 in the reference (BERT's positions); a smaller model must not index past its own.
        ans_ids, ans_mask = self._texts(list(answers), min(512, self.cfg.text.max_positions))
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
        if top is not None:
            ranked = scores.argsort(dim=1, descending=True)[:, :top]
            return [[Answer(answers[int(top_ids[i, j])], float(scores[i, j])) for j in ranked[i]] for i in range(q)]
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


def _pair(images: Images, texts: Texts) -> tuple[list[Any], list[str]]:
    """Broadcast one image over many texts or one text over many images; otherwise lengths must agree."""
    images, texts = _images(images), _texts_list(texts)
    if len(images) == 1 and len(texts) > 1:
        images = images * len(texts)
    elif len(texts) == 1 and len(images) > 1:
        texts = texts * len(images)
    if len(images) != len(texts):
        raise BlipError(f"got {len(images)} images and {len(texts)} texts; give equal numbers, or one of either")
    return images, texts
