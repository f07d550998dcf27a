"""DeepMind 3D Shapes (``3dshapes.h5``): images only, no masks (docs/data.md, "3D Shapes").

File: ``images`` [480000, 64, 64, 3] uint8 and ``labels`` [480000, 6] float64 (floor hue, wall
hue, object hue, scale, shape, orientation; raw factor values). The images are stored with
orientation varying fastest and floor hue slowest (48,000 images per floor hue).

Splits (``splits="seed"``, the default): the index ranges of the seed and SLATE, train
[0, 400000), val [400001, 430000), test [430001, 460000); indices 400000 and 430000 and the
last 20,000 are never used. Because of the storage order these are not i.i.d.: val holds only
floor hue 8 and test mostly floor hue 9, colours training sees little or never.
``splits="shuffled"`` takes the same split sizes from a fixed permutation (seed 0) of all
480,000 images instead. A file with fewer images (a test fixture) is split in proportion.

Images are read lazily (the training split would be 4.9 GB in memory) and resized bilinearly
only when ``image_size`` is not the file's 64 (the seed requires 64).
Items: ``image`` float [3, S, S] in [0, 1]; ``factors`` float [6] (``labels`` row); ``index``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.transforms import crop_resize_image, image_to_tensor
from ground.errors import UserError

FILE_NAME = "3dshapes.h5"
FULL_SIZE = 480_000
# The seed's ranges as (first boundary, skipped rows, last boundary): train [0, 400000),
# val [400001, 430000), test [430001, 460000); smaller files scale the boundaries, keep the skips.
SEED_SPLITS: dict[str, tuple[int, int, int]] = {"train": (0, 0, 400_000), "val": (400_000, 1, 430_000),
                                                "test": (430_000, 1, 460_000)}
SPLIT_MODES: tuple[str, ...] = ("seed", "shuffled")
NUM_FACTORS = 6
LAYOUT_HINT = (
    f"--data_path must be {FILE_NAME} or its folder (download it from the 3d-shapes Google Cloud bucket: "
    f"https://storage.googleapis.com/3d-shapes/{FILE_NAME})"
)


def resolve_file(data_path: str | None) -> Path:
    """``3dshapes.h5`` named by ``--data_path`` (the file or its folder)."""
    if not data_path:
        raise UserError(f"--dataset shapes3d needs --data_path; {LAYOUT_HINT}")
    path = Path(data_path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise UserError(f"{path} not found; {LAYOUT_HINT}")
    return path


def check_file(path: Path) -> int:
    """Check keys, shapes and dtypes of a 3D Shapes file; return its image count."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{path} is not a readable HDF5 file ({err}); download it again ({LAYOUT_HINT})") from err
    with f:
        missing = [k for k in ("images", "labels") if k not in f or not isinstance(f[k], h5py.Dataset)]
        if missing:
            raise UserError(f"{path} has no {' or '.join(missing)} dataset (keys: {', '.join(sorted(f)) or 'none'}); "
                            f"not a 3D Shapes file; {LAYOUT_HINT}")
        images, labels = f["images"], f["labels"]
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise UserError(f"{path}: 'images' is {images.dtype} {images.shape}, 3D Shapes needs uint8 [N, 64, 64, 3]")
        if labels.shape != (images.shape[0], NUM_FACTORS):
            raise UserError(f"{path}: 'labels' has shape {labels.shape}, expected ({images.shape[0]}, {NUM_FACTORS}); "
                            "the file is truncated or not 3D Shapes")
        return int(images.shape[0])


def split_indices(total: int, split: str, mode: str = "seed") -> np.ndarray:
    """Image indices of ``split``: the seed's ranges (scaled for files smaller than 480,000) or the
    same sizes from a fixed permutation (``mode="shuffled"``)."""
    if split not in SEED_SPLITS:
        raise UserError(f"unknown 3D Shapes split {split!r}; use one of {', '.join(SEED_SPLITS)}")
    if mode not in SPLIT_MODES:
        raise UserError(f"unknown --shapes3d_splits {mode!r}; use one of {', '.join(SPLIT_MODES)}")
    first, skipped, last = SEED_SPLITS[split]
    start, stop = first * total // FULL_SIZE + skipped, last * total // FULL_SIZE
    if stop <= start:
        raise UserError(f"the 3D Shapes file has {total} images, too few for a {split} split (the full file has {FULL_SIZE})")
    if mode == "seed":
        return np.arange(start, stop)
    return np.sort(np.random.default_rng(0).permutation(total)[start:stop])


class Shapes3D(Dataset):
    """One split of 3D Shapes, read lazily from the HDF5 file."""

    NO_MASKS_REASON: ClassVar[str] = "3D Shapes has no segmentation masks"

    def __init__(self, data_path: str | None, split: str = "train", image_size: int = 64,
                 num_samples: int | None = None, splits: str = "seed") -> None:
        self.path = resolve_file(data_path)
        total = check_file(self.path)
        self.indices = split_indices(total, split, splits)
        if num_samples is not None:
            self.indices = self.indices[:num_samples]
        self.split, self.image_size = split, image_size
        self._file: Any = None
        self._pid: int | None = None

    def _datasets(self) -> tuple[Any, Any]:
        if self._file is None or self._pid != os.getpid():  # an HDF5 handle must not cross a fork
            import h5py

            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file["images"], self._file["labels"]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.indices[index])
        images, labels = self._datasets()
        image = crop_resize_image(image_to_tensor(images[row]), None, self.image_size)
        return {"image": image, "factors": torch.from_numpy(labels[row].astype(np.float32)), "index": row}
