"""Torch datasets that decode records into samples; a bad sample comes back as a `Skip` marker, never an exception.

Use them with `torch.utils.data.DataLoader(..., collate_fn=blip.data.collate)` wrapped in `CountingLoader`.
Randomness (caption choice, flips, pair swaps) uses torch's RNG, which DataLoader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from blip.data.robust import SKIPPABLE, Skip, skip_from
from blip.data.samples import (
    ImageSample,
    NLVR2Record,
    NLVR2Sample,
    PairRecord,
    PairSample,
    RetrievalSet,
    VideoRecord,
    VideoSample,
    VQARecord,
    VQASample,
)
from blip.data.text import pre_caption, pre_question, swap_left_right
from blip.data.video import load_frames
from blip.images import load_image

Transform = Callable[[Image.Image], torch.Tensor]


def _coin() -> bool:
    """A fair coin from torch's (per-worker seeded) RNG."""
    return bool(torch.rand(()) < 0.5)


class PairDataset(Dataset):
    """Image-text pairs for pretraining, captioning and retrieval training.

    `prompt` is prepended to the cleaned caption (captioning uses "a picture of "). With `mirror=True` the dataset
    flips half the images itself and swaps "left"/"right" in their captions, so positions stay true; build the
    transform with flip=False then. The reference flips without touching the text (mirror=False).
    """

    def __init__(
        self,
        records: Sequence[PairRecord],
        transform: Transform,
        max_words: int = 30,
        prompt: str = "",
        mirror: bool = False,
    ):
        self.records, self.transform, self.max_words = records, transform, max_words
        self.prompt, self.mirror = prompt, mirror

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PairSample | Skip:
        """The decoded, transformed pair, or Skip."""
        rec = self.records[index]
        text = rec.texts[int(torch.randint(len(rec.texts), ()))] if len(rec.texts) > 1 else rec.texts[0]
        caption = pre_caption(text, self.max_words)
        if not caption:
            return Skip("empty_text", f"{rec.image_id}: caption is empty after cleaning: {text!r}")
        try:
            image = load_image(rec.image)
        except SKIPPABLE as e:
            return skip_from(e)
        if self.mirror and _coin():
            image, caption = TF.hflip(image), swap_left_right(caption)
        return PairSample(self.transform(image), self.prompt + caption, rec.image_id)


class ImageDataset(Dataset):
    """The images of a retrieval / captioning evaluation set, each with its index in the set."""

    def __init__(self, retrieval_set: RetrievalSet, transform: Transform):
        self.set, self.transform = retrieval_set, transform

    def __len__(self) -> int:
        return len(self.set.images)

    def __getitem__(self, index: int) -> ImageSample | Skip:
        """The transformed image, or Skip (the index field lets evaluation notice the gap)."""
        try:
            image = load_image(self.set.images[index])
        except SKIPPABLE as e:
            return skip_from(e)
        return ImageSample(self.transform(image), index, self.set.image_ids[index])


def eval_texts(retrieval_set: RetrievalSet, max_words: int = 30) -> list[str]:
    """The cleaned texts of an evaluation set, in set order (the reference cleans them with max 30 words)."""
    return [pre_caption(t, max_words) for t in retrieval_set.texts]


class VQADataset(Dataset):
    """VQA samples: image, cleaned question, raw answers with their weights."""

    def __init__(self, records: Sequence[VQARecord], transform: Transform, max_words: int = 50):
        self.records, self.transform, self.max_words = records, transform, max_words

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VQASample | Skip:
        """The decoded question sample, or Skip."""
        rec = self.records[index]
        question = pre_question(rec.question, self.max_words)
        if not question:
            return Skip("empty_text", f"question {rec.question_id} is empty after cleaning")
        try:
            image = load_image(rec.image)
        except SKIPPABLE as e:
            return skip_from(e)
        return VQASample(self.transform(image), question, list(rec.answers), list(rec.weights), rec.question_id)


class NLVR2Dataset(Dataset):
    """NLVR2 samples. In training, half the pairs are swapped with "left"/"right" exchanged, as the reference does."""

    def __init__(self, records: Sequence[NLVR2Record], transform: Transform, max_words: int = 40, train: bool = False):
        self.records, self.transform, self.max_words, self.train = records, transform, max_words, train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> NLVR2Sample | Skip:
        """The decoded pair sample, or Skip if either image is bad."""
        rec = self.records[index]
        statement = pre_caption(rec.statement, self.max_words)
        if not statement:
            return Skip("empty_text", f"statement {rec.pair_id} is empty after cleaning")
        try:
            image0, image1 = (self.transform(load_image(p)) for p in rec.images)
        except SKIPPABLE as e:
            return skip_from(e)
        if self.train and _coin():
            image0, image1, statement = image1, image0, swap_left_right(statement)
        return NLVR2Sample(image0, image1, statement, int(rec.label), rec.pair_id)


class VideoDataset(Dataset):
    """Videos as `num_frames` uniformly sampled frames, each through the (eval) transform."""

    def __init__(self, records: Sequence[VideoRecord], transform: Transform, num_frames: int = 8, max_words: int = 40):
        self.records, self.transform = records, transform
        self.num_frames, self.max_words = num_frames, max_words

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VideoSample | Skip:
        """The decoded frames with cleaned captions, or Skip."""
        rec = self.records[index]
        try:
            frames = load_frames(rec.video, self.num_frames)
        except SKIPPABLE as e:
            return skip_from(e)
        captions = [pre_caption(t, self.max_words) for t in rec.captions]
        return VideoSample(torch.stack([self.transform(f) for f in frames]), captions, rec.video_id)
