"""Image and label-map geometry shared by the dataset loaders.

Real-image loaders (COCO, VOC, MOVi):

The published pipelines (SPOT; docs/data.md#real-datasets) resize the short side (torchvision
``Resize(int)``: the long side is truncated) and crop the centre (torchvision ``CenterCrop``:
offsets rounded with Python's ``round``). Label maps are resized with PIL ``NEAREST``, which
picks source pixel ``floor((i + 0.5) * in / out)`` (summed step by step); this module picks the
same pixels with numpy index arrays and only computes the cropped window, so a 320-px mask
costs one gather per map.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# PIL raises these on unreadable or truncated files (SyntaxError for some malformed headers).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class CorruptImageError(Exception):
    """A file that PIL could not decode; carries the path and PIL's reason."""


@contextlib.contextmanager
def decoding(path: str | os.PathLike) -> Iterator[None]:
    """Turn PIL's errors while reading ``path`` into :class:`CorruptImageError`.

    Only the file access is wrapped, so a bug elsewhere in a loader still raises normally
    instead of being mistaken for a corrupt file and skipped.
    """
    try:
        yield
    except IMAGE_ERRORS as err:
        raise CorruptImageError(f"{path}: {type(err).__name__}: {err}") from err


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to ``size`` (torchvision semantics)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def center_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """(top, left) of a centred ``crop`` x ``crop`` window (torchvision ``CenterCrop``)."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


@functools.lru_cache(maxsize=1024)
def _nearest_indices(in_len: int, out_len: int) -> tuple[int, ...]:
    scale = in_len / out_len
    position = scale * 0.5
    index = []
    for _ in range(out_len):
        # Pillow steps the source coordinate by repeated addition, and that rounding decides
        # ties such as 11.999... vs 12; summing the same way reproduces its picks exactly.
        index.append(min(int(position), in_len - 1))
        position += scale
    return tuple(index)


def nearest_indices(in_len: int, out_len: int) -> np.ndarray:
    """Source index of each output pixel of a PIL NEAREST resize from ``in_len`` to ``out_len``."""
    return np.asarray(_nearest_indices(in_len, out_len), dtype=np.int64)


def label_window(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column source indices of "short side to ``size`` (nearest), centre crop ``size``".

    Applying them as ``labels[rows][:, cols]`` (or ``labels[np.ix_(rows, cols)]``) gives the
    same pixels as resizing the whole map with PIL NEAREST and cropping, because nearest
    resizing only selects pixels. Any per-pixel operation (painting, counting overlaps)
    therefore commutes with it.
    """
    new_h, new_w = short_side_size(height, width, size)
    top, left = center_offsets(new_h, new_w, size)
    rows = nearest_indices(height, new_h)[top : top + size]
    cols = nearest_indices(width, new_w)[left : left + size]
    return rows, cols


def resize_crop_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """A label map resized (short side, nearest) and centre-cropped to ``size`` x ``size``."""
    rows, cols = label_window(labels.shape[0], labels.shape[1], size)
    return labels[np.ix_(rows, cols)]


def load_short_side(
    path: str | os.PathLike, size: int, resample: int = Image.Resampling.BILINEAR
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an RGB image and resize its short side to ``size``; also returns its original (h, w).

    JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that stays at least as large as
    the target, which decodes far fewer pixels; the result is then resized to exactly the size
    a full decode would give, so the geometry (and the mask alignment) does not change.
    """
    with decoding(path), Image.open(path) as image:
        original = (image.height, image.width)
        height, width = short_side_size(image.height, image.width, size)
        if image.format == "JPEG":
            image.draft("RGB", (width, height))
        rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), resample)
    return rgb, original


def crop(image: Image.Image, top: int, left: int, size: int) -> Image.Image:
    """A ``size`` x ``size`` window of ``image``."""
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image, flip: bool = False) -> torch.Tensor:
    """RGB PIL image -> float tensor [3, H, W] in [0, 1] (the encoder normalises).

    Built in numpy: in the main process torch would fill the tensor with its thread pool.
    """
    array = np.asarray(image, dtype=np.uint8)
    if flip:
        array = array[:, ::-1]
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    return torch.from_numpy(np.multiply(chw, 1.0 / 255.0, dtype=np.float32))


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Integer label map -> int64 tensor (the dtype the metrics and collate expect)."""
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def bool_to_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))


# Horizontal-flip probability of the augmented training loaders (COCO, VOC; the feature cache too).
HFLIP_PROB = 0.5


def augmentation_rng(index: int) -> np.random.Generator:
    """Random source for the augmentation of sample ``index`` in the current pass.

    In a DataLoader worker it depends only on the loader's base seed (drawn from the training
    loop's per-epoch generator) and the index, not on which worker loads the sample or where
    the epoch started, so a run resumed mid-epoch sees the same crops and flips as an
    uninterrupted one. In the main process (``--num_workers 0``) it draws from torch's global
    RNG, whose state the checkpoints store.
    """
    info = torch.utils.data.get_worker_info()
    seed = int(torch.randint(2**62, ())) if info is None else info.seed - info.id
    return np.random.default_rng([seed, index])


def crop_view(
    image: Image.Image,
    size: int,
    random_crop: bool = False,
    flip_prob: float = 0.0,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """A ``size`` x ``size`` crop (centred, or uniformly placed) as a tensor, flipped with ``flip_prob``.

    ``rng`` (see :func:`augmentation_rng`) is needed only for the random choices.
    """
    if (random_crop or flip_prob > 0) and rng is None:
        raise ValueError("crop_view: random_crop or flip_prob needs an rng")
    if random_crop:
        top = int(rng.integers(0, image.height - size + 1))
        left = int(rng.integers(0, image.width - size + 1))
    else:
        top, left = center_offsets(image.height, image.width, size)
    flip = flip_prob > 0 and float(rng.random()) < flip_prob
    return to_tensor(crop(image, top, left, size), flip)


# --- Pixel-space datasets (CLEVR, Tetrominoes, ClevrTex): TF/torch resize conventions ---

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
