"""Transforms match the reference's definitions (checked on pixels, against geometry worked out by hand)."""

import numpy as np
import pytest
import torch
from PIL import Image

from blip.data.transforms import MEAN, STD, RandomAugment, eval_transform, pretrain_transform, train_transform


def blob_image(x, y, size=64):
    arr = np.zeros((size, size, 3), np.uint8)
    arr[y - 1 : y + 2, x - 1 : x + 2] = 255
    return Image.fromarray(arr)


def centroid(img):
    arr = np.asarray(img)[..., 0].astype(float)
    arr = np.where(arr > 200, arr, 0)  # the blob, not the grey fill
    ys, xs = np.nonzero(arr)
    w = arr[ys, xs]
    return (xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()


def test_brightness_and_sharpness_at_magnitude_5_are_identity():
    # The reference maps level 5 of 10 to the enhancement factor 0.1 + 1.8 * 0.5 = 1.0.
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    aug = RandomAugment(2, 5)
    for op in ("Brightness", "Sharpness", "Identity"):
        assert np.array_equal(np.asarray(aug.apply(img, op)), np.asarray(img))


def test_translate_moves_5_pixels_and_fills_grey():
    torch.manual_seed(0)
    out = np.asarray(RandomAugment(2, 5).apply(blob_image(30, 20), "TranslateX"))
    cx, cy = centroid(out)
    assert abs(abs(cx - 30) - 5) < 0.01 and abs(cy - 20) < 0.01
    # The uncovered 5-column strip is the reference's grey (128, 128, 128).
    strip = out[:, :5] if cx > 30 else out[:, -5:]
    assert (strip == 128).all()


def test_rotate_is_15_degrees_about_the_centre():
    torch.manual_seed(0)
    out = RandomAugment(2, 5).apply(blob_image(52, 32), "Rotate")  # 20 px right of the centre (32, 32)
    cx, cy = centroid(out)
    angle = np.degrees(np.arctan2(-(cy - 32), cx - 32))
    assert abs(abs(angle) - 15) < 1.5 and abs(np.hypot(cx - 32, cy - 32) - 20) < 1


def test_shear_x_is_0_15_about_the_top_left_corner():
    torch.manual_seed(0)
    aug = RandomAugment(2, 5)
    top = centroid(aug.apply(blob_image(20, 1), "ShearX"))
    torch.manual_seed(0)  # same sign for the second blob
    low = centroid(aug.apply(blob_image(20, 41), "ShearX"))
    assert abs(top[0] - 20) < 0.5
    assert abs(abs(low[0] - 20) - 0.15 * 41) < 0.6 and abs(low[1] - 41) < 0.5


def test_autocontrast_and_equalize_stretch_the_range():
    arr = np.linspace(50, 100, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    aug = RandomAugment(2, 5)
    for op in ("AutoContrast", "Equalize"):
        out = np.asarray(aug.apply(Image.fromarray(arr), op))
        assert out.min() < 10 and out.max() > 245


def test_ops_fire_with_probability_one_half_each():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    aug = RandomAugment(2, 5, ops=("AutoContrast",))  # changes this image whenever applied
    torch.manual_seed(0)
    changed = sum(not np.array_equal(np.asarray(aug(img)), np.asarray(img)) for _ in range(2000))
    assert abs(changed / 2000 - 0.75) < 0.04  # P(at least one of two coin flips) = 3/4
    with pytest.raises(ValueError):
        RandomAugment(ops=("Solarize",))


def test_eval_transform_is_bicubic_resize_and_normalise():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    out = eval_transform(24)(img)
    ref = np.asarray(img.resize((24, 24), Image.BICUBIC), dtype=np.float32) / 255
    ref = (ref - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    assert out.shape == (3, 24, 24)
    assert np.allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_train_transforms_shapes_and_crop_scales():
    img = Image.new("RGB", (100, 80), (200, 10, 10))
    torch.manual_seed(0)
    assert pretrain_transform(48)(img).shape == (3, 48, 48)
    t = train_transform(32, min_scale=0.5)
    crop = t.transforms[0]
    assert crop.scale == (0.5, 1.0) and pretrain_transform(32).transforms[0].scale == (0.2, 1.0)
    assert crop.interpolation.value == "bicubic"
    # A flat red image stays flat red through every op except the grey fill of geometric ops.
    out = t(img)
    red = (200 / 255 - MEAN[0]) / STD[0]
    assert ((out[0] - red).abs() < 1e-4).float().mean() > 0.5
