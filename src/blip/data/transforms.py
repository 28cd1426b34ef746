"""Image transforms of the BLIP reference: train (crop, flip, RandomAugment), eval (bicubic resize), normalisation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

# BLIP's op list (the reference's RandomAugment restricted to these ten ops).
BLIP_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)
MAX_LEVEL = 10.0
FILL = (128, 128, 128)  # grey fill for pixels uncovered by geometric ops, as in the reference
TRANSLATE_PIXELS = 10.0  # the reference's translate_const: at most 10 px whatever the image size


def _signed(value: float) -> float:
    """`value` with a random sign (the reference flips the sign of geometric magnitudes with probability 1/2)."""
    return -value if torch.rand(()) < 0.5 else value


class RandomAugment:
    """BLIP's RandAugment: `n` ops drawn with replacement, each applied with probability 1/2, at level `m` of 10.

    Levels map as in the reference: enhancement factor 0.1 + 1.8 * m/10 (so 1.0, a no-op, at m=5), shear
    0.3 * m/10, translation 10 px * m/10, rotation 30 deg * m/10. Shear is about the top-left corner and rotation
    about the centre, as the reference's OpenCV warps do; both use bilinear interpolation.
    """

    def __init__(self, n: int = 2, m: float = 5, ops: tuple[str, ...] = BLIP_OPS):
        unknown = set(ops) - set(BLIP_OPS)
        if unknown:
            raise ValueError(f"unknown RandomAugment ops: {sorted(unknown)}")
        self.n, self.m, self.ops = n, m, tuple(ops)

    def apply(self, img: Image.Image, op: str) -> Image.Image:
        """Apply one op at this transform's level (random sign for the geometric ops)."""
        level = self.m / MAX_LEVEL
        if op == "Identity":
            return img
        if op == "AutoContrast":
            return TF.autocontrast(img)
        if op == "Equalize":
            return TF.equalize(img)
        if op == "Brightness":
            return TF.adjust_brightness(img, 0.1 + 1.8 * level)
        if op == "Sharpness":
            return TF.adjust_sharpness(img, 0.1 + 1.8 * level)
        bilinear = InterpolationMode.BILINEAR
        if op in ("ShearX", "ShearY"):
            # torchvision takes shear as an angle; the reference's factor s is tan(angle).
            angle = float(torch.rad2deg(torch.atan(torch.tensor(_signed(0.3 * level)))))
            shear = [angle, 0.0] if op == "ShearX" else [0.0, angle]
            return TF.affine(
                img,
                angle=0.0,
                translate=[0, 0],
                scale=1.0,
                shear=shear,
                interpolation=bilinear,
                fill=list(FILL),
                center=[0, 0],
            )
        if op in ("TranslateX", "TranslateY"):
            shift = int(round(_signed(TRANSLATE_PIXELS * level)))
            translate = [shift, 0] if op == "TranslateX" else [0, shift]
            return TF.affine(
                img,
                angle=0.0,
                translate=translate,
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=bilinear,
                fill=list(FILL),
            )
        return TF.rotate(img, _signed(30.0 * level), interpolation=bilinear, fill=list(FILL))

    def __call__(self, img: Image.Image) -> Image.Image:
        """Augment a PIL image."""
        for i in torch.randint(len(self.ops), (self.n,)).tolist():
            if torch.rand(()) < 0.5:
                img = self.apply(img, self.ops[i])
        return img

    def __repr__(self) -> str:
        return f"RandomAugment(n={self.n}, m={self.m}, ops={list(self.ops)})"


def normalize() -> transforms.Normalize:
    """Normalisation with BLIP's (CLIP's) mean and std."""
    return transforms.Normalize(MEAN, STD)


def train_transform(
    size: int = 224, min_scale: float = 0.5, flip: bool = True, randaug: bool = True
) -> Callable[[Image.Image], torch.Tensor]:
    """Training transform: bicubic RandomResizedCrop (min_scale 0.2 pretraining, 0.5 fine-tuning), flip, RandAugment."""
    steps: list[Callable] = [
        transforms.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=InterpolationMode.BICUBIC)
    ]
    if flip:
        steps.append(transforms.RandomHorizontalFlip())
    if randaug:
        steps.append(RandomAugment(2, 5))
    steps += [transforms.ToTensor(), normalize()]
    return transforms.Compose(steps)


def eval_transform(size: int = 384) -> Callable[[Image.Image], torch.Tensor]:
    """Evaluation transform: bicubic resize to a square (aspect ratio not kept, as in the reference), normalise."""
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            normalize(),
        ]
    )


def pretrain_transform(size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """The pretraining transform: train_transform with crop scale (0.2, 1)."""
    return train_transform(size, min_scale=0.2)
