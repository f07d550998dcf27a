"""Geometry helpers of the real-image loaders against PIL and torchvision conventions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from datasets.transforms import centre_crop_box, crop_resize_image, crop_resize_labels, crop_view, image_to_tensor, label_window, load_short_side, resize_crop_labels, short_side_size


@pytest.mark.parametrize("height,width,size", [(30, 40, 24), (48, 32, 20), (37, 53, 50), (17, 17, 40), (480, 640, 320)])
def test_label_window_equals_pil_nearest_then_centre_crop(height: int, width: int, size: int) -> None:
    labels = np.random.default_rng(0).integers(0, 200, size=(height, width)).astype(np.int32)
    new_h, new_w = short_side_size(height, width, size)
    resized = np.asarray(Image.fromarray(labels).resize((new_w, new_h), Image.Resampling.NEAREST))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    np.testing.assert_array_equal(resize_crop_labels(labels, size), resized[top : top + size, left : left + size])
    rows, cols = label_window(height, width, size)
    assert len(rows) == len(cols) == size


def test_short_side_matches_torchvision() -> None:
    from torchvision.transforms import functional as F

    for height, width in ((480, 640), (427, 640), (640, 359), (375, 500)):
        image = Image.new("RGB", (width, height))
        assert F.resize(image, 224).size == short_side_size(height, width, 224)[::-1]


def test_reduced_jpeg_decode_keeps_geometry_and_looks_the_same(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((400, 300), Image.Resampling.BICUBIC).save(tmp_path / "a.jpg", quality=95)
    fast, original = load_short_side(tmp_path / "a.jpg", 64)
    with Image.open(tmp_path / "a.jpg") as image:
        full = image.convert("RGB").resize(fast.size, Image.Resampling.BILINEAR)
    assert original == (300, 400) and fast.size == full.size == (85, 64)
    difference = np.abs(np.asarray(fast, np.float32) - np.asarray(full, np.float32)).mean()
    assert difference < 3.0  # of 255: DCT-domain downscaling vs a full decode


def test_crop_view_centre_and_flip() -> None:
    array = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    image = Image.fromarray(array)
    centre = crop_view(image, 4)
    expected = torch.from_numpy(array[1:5, 2:6].transpose(2, 0, 1).astype(np.float32) / 255)
    torch.testing.assert_close(centre, expected)
    rng = np.random.default_rng(0)
    torch.testing.assert_close(crop_view(image, 4, flip_prob=1.0, rng=rng), expected.flip(-1))
    for _ in range(5):
        assert crop_view(image, 4, random_crop=True, rng=rng).shape == (3, 4, 4)
    with pytest.raises(ValueError, match="needs an rng"):
        crop_view(image, 4, random_crop=True)


def test_nearest_indices_match_pil_on_many_sizes() -> None:
    from datasets.transforms import nearest_indices

    rng = np.random.default_rng(1)
    for in_len, out_len in rng.integers(1, 700, size=(200, 2)):
        row = np.arange(in_len, dtype=np.int32)[None, :]
        picked = np.asarray(Image.fromarray(row).resize((int(out_len), 1), Image.Resampling.NEAREST))[0]
        np.testing.assert_array_equal(nearest_indices(int(in_len), int(out_len)), picked)


def test_labels_resize_like_torch_nearest() -> None:
    rng = np.random.default_rng(0)
    for height, width, size in ((192, 192, 128), (35, 35, 128), (35, 35, 64), (240, 320, 100), (38, 38, 32)):
        labels = rng.integers(0, 11, (height, width))
        expected = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=(size, size), mode="nearest")
        np.testing.assert_array_equal(crop_resize_labels(labels, None, size), expected[0, 0].long().numpy())


def test_crop_and_image_conversion() -> None:
    assert centre_crop_box(240, 320, 192) == (24, 216, 64, 256)
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    tensor = image_to_tensor(image)
    assert tensor.shape == (3, 6, 8) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[:, 1, 2], torch.from_numpy(image[1, 2]).float() / 255)
    cropped = crop_resize_image(tensor, (1, 5, 2, 6), 4)  # crop only: no resampling
    torch.testing.assert_close(cropped, tensor[:, 1:5, 2:6])
    assert crop_resize_image(tensor, (1, 5, 2, 6), 8, "nearest").shape == (3, 8, 8)
    np.testing.assert_array_equal(crop_resize_labels(image[..., 0], (1, 5, 2, 6), 4), image[1:5, 2:6, 0])
