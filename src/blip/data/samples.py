"""The records readers return and the samples datasets yield; every task consumes one of these.

A *record* is light (an image path or bytes, texts, ids) so that millions fit in memory and pickle cheaply to
DataLoader workers. A *sample* is a record after decoding and transforms: the same fields with tensors in place
of image references. Texts in samples are cleaned (`pre_caption` / `pre_question`); texts in records are raw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# A path (str, relative paths already joined with the image root) or the encoded bytes of an image.
ImageRef = str | bytes


# ----------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PairRecord:
    """One image with one or more alternative texts (pretraining picks one per visit, as the reference does)."""

    image: ImageRef
    texts: tuple[str, ...]
    image_id: str


@dataclass
class RetrievalSet:
    """An evaluation split in the Karpathy protocol: images, all their texts, and the maps between them."""

    images: list[str]
    image_ids: list[str]
    texts: list[str]
    txt2img: list[int]  # text index -> index of its image
    img2txt: list[list[int]] = field(default_factory=list)  # image index -> indices of its texts


@dataclass(frozen=True)
class VQARecord:
    """A question about an image with its answers and their weights (annotator frequency; 0.2 for VG QA)."""

    image: ImageRef
    question: str
    answers: tuple[str, ...]
    weights: tuple[float, ...]
    question_id: str
    source: str = "vqa"  # "vqa" or "vg"


@dataclass(frozen=True)
class NLVR2Record:
    """A statement about an ordered pair of images, true or false."""

    images: tuple[ImageRef, ImageRef]
    statement: str
    label: bool
    pair_id: str


@dataclass(frozen=True)
class VideoRecord:
    """A video file with its captions."""

    video: str
    captions: tuple[str, ...]
    video_id: str


# ----------------------------------------------------------------------------------------------------- samples
@dataclass
class PairSample:
    """Image tensor (3, H, W), one cleaned caption, the image id (positives share it in retrieval training)."""

    image: torch.Tensor
    caption: str
    image_id: str


@dataclass
class ImageSample:
    """An image alone (retrieval and captioning evaluation), with its index in the evaluation set."""

    image: torch.Tensor
    index: int
    image_id: str


@dataclass
class VQASample:
    """Image tensor, cleaned question, answers with weights, question id."""

    image: torch.Tensor
    question: str
    answers: list[str]
    weights: list[float]
    question_id: str


@dataclass
class NLVR2Sample:
    """Two image tensors, cleaned statement, label 1 (true) or 0 (false)."""

    image0: torch.Tensor
    image1: torch.Tensor
    statement: str
    label: int
    pair_id: str


@dataclass
class VideoSample:
    """Frames (T, 3, H, W) sampled uniformly, cleaned captions, video id."""

    frames: torch.Tensor
    captions: list[str]
    video_id: str
