"""The data layer: readers for BLIP's formats, robust datasets, transforms, text cleaning, the synthetic world.

Typical use::

    from blip.data import read_karpathy_train, PairDataset, train_transform, collate, CountingLoader
    records = read_karpathy_train("coco_karpathy_train.json", image_root="coco/")
    loader = CountingLoader(DataLoader(PairDataset(records, train_transform(384)), batch_size=32,
                                       num_workers=8, collate_fn=collate))
    for batch in loader: ...          # batch["image"], batch["caption"], batch["image_id"]
    print(loader.counter.summary())   # skipped samples by reason
"""

from blip.data.datasets import ImageDataset, NLVR2Dataset, PairDataset, VideoDataset, VQADataset, eval_texts
from blip.data.readers import (
    read_answer_list,
    read_karpathy_eval,
    read_karpathy_train,
    read_msrvtt,
    read_nlvr2,
    read_pretrain_json,
    read_table,
    read_vqa,
    read_vqa_official,
)
from blip.data.robust import CountingLoader, DataError, Skip, SkipCounter, collate
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
from blip.data.text import pre_caption, pre_question
from blip.data.transforms import MEAN, STD, RandomAugment, eval_transform, pretrain_transform, train_transform
from blip.data.webdata import WebDatasetPairs

__all__ = [
    "CountingLoader",
    "DataError",
    "ImageDataset",
    "ImageSample",
    "MEAN",
    "NLVR2Dataset",
    "NLVR2Record",
    "NLVR2Sample",
    "PairDataset",
    "PairRecord",
    "PairSample",
    "RandomAugment",
    "RetrievalSet",
    "STD",
    "Skip",
    "SkipCounter",
    "VQADataset",
    "VQARecord",
    "VQASample",
    "VideoDataset",
    "VideoRecord",
    "VideoSample",
    "WebDatasetPairs",
    "collate",
    "eval_texts",
    "eval_transform",
    "pre_caption",
    "pre_question",
    "pretrain_transform",
    "read_answer_list",
    "read_karpathy_eval",
    "read_karpathy_train",
    "read_msrvtt",
    "read_nlvr2",
    "read_pretrain_json",
    "read_table",
    "read_vqa",
    "read_vqa_official",
    "train_transform",
]
