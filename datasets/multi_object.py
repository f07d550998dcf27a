"""DeepMind multi_object_datasets (CLEVR with masks, Tetrominoes) converted to HDF5.

The HDF5 layout is the one of the seed's converted files (and of ``scripts/convert_multi_object.py``):
one dataset per ``tf.train.Example`` feature with a leading sample axis, e.g. ``image``
[N, H, W, 3] uint8 and ``mask`` [N, E, H, W, 1] uint8 (one 0/255 mask per entity, entity 0 =
the background), plus per-entity attributes such as ``visibility`` [N, E] float32.

Splits are contiguous index ranges (see each dataset's ``SPLITS``). A file with fewer samples
than the splits need (a test fixture, a partial conversion) is split in the same proportions.
The image size may differ from DeepMind's (small test fixtures, rescaled copies): the crop is
then scaled with it; the entity count, the attributes and all dtypes must match.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.tfrecord import FeatureSpec
from datasets.transforms import CropBox, crop_resize_image, image_to_tensor, nearest_grid
from ground.errors import UserError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class MultiObjectHDF5(Dataset):
    """Base class: one converted multi_object_datasets HDF5 file, one split, optional object-count filter.

    Items: ``image`` float [3, S, S] in [0, 1]; ``mask_instance`` long [M, M] (0 = background,
    k = entity k of the file); ``mask_class`` long [M, M] (0 = background, see ``class_codes``);
    ``mask_ignore`` bool [M, M] (all False); ``num_objects`` (visible foreground entities per
    ``visibility``); ``index`` (row in the HDF5 file).
    """

    NAME: ClassVar[str]
    FILE_NAME: ClassVar[str]  # expected file inside --data_path
    TFRECORD_NAME: ClassVar[str]
    FEATURES: ClassVar[dict[str, FeatureSpec]]  # the DeepMind Example features, HDF5 keys alike
    SPLITS: ClassVar[dict[str, tuple[int, int]]]  # [start, stop) of each split in a full file
    CROP: ClassVar[CropBox | None] = None
    IMAGE_RESIZE: ClassVar[str] = "bilinear"
    # Keys a loader reads; the other features are converted and kept but not needed here.
    REQUIRED: ClassVar[tuple[str, ...]] = ("image", "mask", "visibility", "shape")

    def __init__(
        self,
        data_path: str,
        split: str = "train",
        image_size: int = 128,
        mask_size: int | None = None,
        max_objects: int | None = None,
        num_samples: int | None = None,
        with_masks: bool = True,
    ) -> None:
        if split not in SPLIT_NAMES:
            raise UserError(f"unknown {self.NAME} split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
        if num_samples is not None and num_samples < 1:
            raise UserError(f"the number of samples must be >= 1, got {num_samples}")
        self.path = self.resolve_path(data_path)
        self.split = split
        self.image_size = image_size
        self.mask_size = image_size if mask_size is None else mask_size
        self.max_objects = max_objects
        self.with_masks = with_masks
        self._h5: dict[str, Any] | None = None
        self._h5_file: Any = None
        self._h5_pid: int | None = None
        total = self._check_layout()
        self.crop = self.crop_box()
        self.indices, self.object_counts = self._select(total, num_samples)

    # ------------------------------------------------------------------ layout checks

    @classmethod
    def converter_hint(cls) -> str:
        return (
            f"python scripts/convert_multi_object.py --dataset {cls.NAME} "
            f"--tfrecord {cls.TFRECORD_NAME} --out {cls.FILE_NAME}"
        )

    @classmethod
    def resolve_path(cls, data_path: str) -> str:
        """``--data_path`` may name the HDF5 file or the folder that holds it."""
        if not data_path:
            raise UserError(
                f"--data_path is required for {cls.NAME}: the folder holding {cls.FILE_NAME} "
                f"(convert DeepMind's TFRecords with: {cls.converter_hint()})"
            )
        if os.path.isdir(data_path):
            path = os.path.join(data_path, cls.FILE_NAME)
            if not os.path.isfile(path):
                found = sorted(name for name in os.listdir(data_path) if name.endswith((".h5", ".hdf5")))
                extra = f" (it has {', '.join(found[:3])}; pass that file as --data_path)" if found else ""
                raise UserError(
                    f"{path} not found{extra}; convert DeepMind's TFRecords with: {cls.converter_hint()}"
                )
            return path
        if os.path.isfile(data_path):
            return data_path
        raise UserError(f"--data_path {data_path} does not exist; it must be {cls.FILE_NAME} or its folder")

    def _check_layout(self) -> int:
        """Check keys, per-sample shapes and dtypes against the DeepMind layout; return N."""
        import h5py

        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise UserError(f"{self.path} is not a readable HDF5 file ({err}); reconvert it with: {self.converter_hint()}") from err
        with f:
            missing = [key for key in self.REQUIRED if key not in f]
            if missing:
                raise UserError(
                    f"{self.path} has no {', '.join(missing)} dataset (keys: {', '.join(sorted(f.keys())) or 'none'}); "
                    f"not a {self.NAME} HDF5 file, convert one with: {self.converter_hint()}"
                )
            image = f["image"]
            height, width = image.shape[1:3] if isinstance(image, h5py.Dataset) and image.ndim == 4 else (0, 0)
            lengths = set()
            for key in self.REQUIRED:
                spec, dset = self.FEATURES[key], f[key]
                # The image size may differ from the DeepMind one (test fixtures, rescaled
                # copies); the entity count and everything else may not.
                expected = self._expected_shape(key, height, width)
                if not isinstance(dset, h5py.Dataset) or tuple(dset.shape[1:]) != expected:
                    got = tuple(dset.shape[1:]) if isinstance(dset, h5py.Dataset) else "a group"
                    raise UserError(
                        f"{self.path}: {key!r} has per-sample shape {got}, {self.NAME} needs {expected} "
                        f"(DeepMind: {spec.shape}); wrong file for --dataset {self.NAME}?"
                    )
                if dset.dtype != np.dtype(spec.dtype):
                    raise UserError(f"{self.path}: {key!r} has dtype {dset.dtype}, {self.NAME} needs {spec.dtype}")
                lengths.add(dset.shape[0])
            if len(lengths) != 1:
                raise UserError(f"{self.path}: datasets disagree on the sample count ({sorted(lengths)}); the conversion is incomplete, redo it")
            self.source_shape = (int(height), int(width))
            return lengths.pop()

    def _expected_shape(self, key: str, height: int, width: int) -> tuple[int, ...]:
        shape = self.FEATURES[key].shape
        if key == "image":
            return (height, width, 3) if height and width else shape
        if key == "mask":
            return (shape[0], height, width, 1)
        return shape

    def crop_box(self) -> CropBox | None:
        """``CROP`` (given for the DeepMind image size) scaled to this file's image size."""
        if self.CROP is None:
            return None
        ref_height, ref_width = self.FEATURES["image"].shape[:2]
        height, width = self.source_shape
        top, bottom, left, right = self.CROP
        return (
            round(top * height / ref_height), round(bottom * height / ref_height),
            round(left * width / ref_width), round(right * width / ref_width),
        )

    def _split_range(self, total: int) -> tuple[int, int]:
        """[start, stop) of this split; proportional for files smaller than the full splits."""
        full = max(stop for _, stop in self.SPLITS.values())
        start, stop = self.SPLITS[self.split]
        if total < full:
            start, stop = start * total // full, stop * total // full
        if stop <= start:
            raise UserError(
                f"{self.path} has {total} samples, too few for a {self.split} split "
                f"(a full file has {full}: {self.split} = [{self.SPLITS[self.split][0]}, {self.SPLITS[self.split][1]}))"
            )
        return start, stop

    def _select(self, total: int, num_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the split's samples with at most ``max_objects`` visible foreground objects."""
        import h5py

        start, stop = self._split_range(total)
        with h5py.File(self.path, "r") as f:
            visibility = f["visibility"][start:stop]
            classes = self.class_codes(f["shape"][start:stop])
        # Entity 0 is the background: counting it would make "CLEVR6" keep <= 5 objects.
        counts = (visibility[:, 1:] > 0.5).sum(axis=1)
        indices = np.arange(start, stop)
        if self.max_objects is not None:
            keep = counts <= self.max_objects
            indices, counts, classes = indices[keep], counts[keep], classes[keep]
            if len(indices) == 0:
                raise UserError(
                    f"no {self.split} scene of {self.path} has <= {self.max_objects} objects; "
                    f"use a dataset name without an object limit"
                )
        if num_samples is not None:
            indices, counts, classes = indices[:num_samples], counts[:num_samples], classes[:num_samples]
        self.entity_classes = classes  # [n, E], read once: items then need no attribute reads
        return indices, counts

    # ------------------------------------------------------------------------ reading

    def _file(self) -> dict[str, Any]:
        """The HDF5 datasets by key, opened lazily and once per process (handles must not cross a fork)."""
        if self._h5 is None or self._h5_pid != os.getpid():
            import h5py

            self._h5_file = h5py.File(self.path, "r")  # kept: closing it would close the datasets
            # Looking a dataset up by name costs ~0.1 ms, a noticeable share of a small item.
            self._h5 = {key: self._h5_file[key] for key in self.REQUIRED}
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"], state["_h5_file"], state["_h5_pid"] = None, None, None  # spawned workers reopen the file
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def class_codes(self, shape: np.ndarray) -> np.ndarray:
        """Class id per entity [n, E] from the ``shape`` attribute [n, E]; 0 for the background.

        This default gives every object class 1; datasets override it with their shape ids.
        """
        codes = np.ones(shape.shape[:2], dtype=np.int64)
        codes[:, 0] = 0
        return codes

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.indices[index])
        f = self._file()
        image = image_to_tensor(f["image"][row])
        item: dict[str, Any] = {
            "image": crop_resize_image(image, self.crop, self.image_size, self.IMAGE_RESIZE),
            "num_objects": int(self.object_counts[index]),
            "index": row,
        }
        if self.with_masks:
            top, bottom, left, right = self.crop or (0, self.source_shape[0], 0, self.source_shape[1])
            masks = f["mask"][row, :, top:bottom, left:right, 0]  # [E, h, w], 0/255, cropped
            rows, cols = nearest_grid(None, bottom - top, right - left, self.mask_size)
            # Entities partition the image; argmax picks the covering entity (0 where none).
            # Picking the resized grid first makes the argmax several times cheaper.
            labels = masks[:, rows][:, :, cols].argmax(axis=0)
            item["mask_instance"] = torch.from_numpy(labels.astype(np.int64))
            item["mask_class"] = torch.from_numpy(self.entity_classes[index][labels])
            item["mask_ignore"] = torch.from_numpy(np.zeros(labels.shape, dtype=bool))
        return item
