"""Crop and resize helpers: label maps follow torch's nearest-neighbour choice exactly."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from datasets.transforms import centre_crop_box, crop_resize_image, crop_resize_labels, image_to_tensor


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
