"""Crop and resize helpers shared by the pixel-space datasets (images and label maps alike)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# (top, bottom, left, right) in pixels, end-exclusive, like ``image[top:bottom, left:right]``.
CropBox = tuple[int, int, int, int]


def centre_crop_box(height: int, width: int, side: int) -> CropBox:
    """The square ``side`` x ``side`` box in the middle of a ``height`` x ``width`` image."""
    top, left = (height - side) // 2, (width - side) // 2
    return top, top + side, left, left + side


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, C] -> float [C, H, W] in [0, 1] (the project's image convention)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def crop_resize_image(image: torch.Tensor, box: CropBox | None, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Crop a [C, H, W] float image and resize it to ``size`` x ``size``.

    ``mode`` ``bilinear`` uses no antialiasing (as TF ``tf.image.resize`` and torchvision 0.14
    tensors did in the reference pipelines); ``nearest`` repeats pixels (Tetrominoes).
    """
    if box is not None:
        top, bottom, left, right = box
        image = image[:, top:bottom, left:right]
    if image.shape[-2:] == (size, size):
        return image.contiguous()
    if mode == "nearest":
        return F.interpolate(image[None], size=(size, size), mode="nearest")[0]
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def nearest_grid(box: CropBox | None, height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows and columns that crop + nearest-neighbour resizing to ``size`` x ``size`` reads.

    Uses the same choice as ``F.interpolate(mode="nearest")``: output pixel i reads input
    pixel ``floor(i * in / out)`` of the crop. Picking these pixels first lets a stack of
    per-entity masks be reduced to labels on the small grid only.
    """
    top, bottom, left, right = (0, height, 0, width) if box is None else box
    crop_h, crop_w = bottom - top, right - left
    # float32 scale, as torch computes it, so both pick the same pixels at exact boundaries.
    rows = np.minimum((np.arange(size, dtype=np.float32) * np.float32(crop_h / size)).astype(np.int64), crop_h - 1)
    cols = np.minimum((np.arange(size, dtype=np.float32) * np.float32(crop_w / size)).astype(np.int64), crop_w - 1)
    return rows + top, cols + left


def crop_resize_labels(labels: np.ndarray, box: CropBox | None, size: int) -> np.ndarray:
    """Crop an integer label map [H, W] and resize it to ``size`` x ``size`` (nearest neighbour)."""
    rows, cols = nearest_grid(box, labels.shape[0], labels.shape[1], size)
    return labels[rows][:, cols]  # two 1-D takes: ~5x faster than one 2-D fancy index
