"""RAVENS robot data in the object-discovery seed's HDF5 format (docs/data.md, "RAVENS").

``--data_path`` holds ``ravens_*_train.h5`` and ``ravens_*_test.h5`` (the published
``ravens_robot_data_{train,test}.h5``, or generator chunks merged by
``scripts/prepare_ravens.py``). Each file has, with a leading growable axis:

- ``color`` [3 S, 480, 640, 3] uint8: three camera views per scene, scene-major and
  camera-minor (index ``3 * scene + camera``; cameras front, left, right);
- ``segm`` [3 S, 480, 640] uint8: PyBullet body ids (0 ground plane, then workspace, robot
  parts and the table objects); 255 where no body was hit;
- ``num_objects_on_table`` [S] integer: objects placed on the table.

There is no separate validation file: as in the seed, ``val`` (and ``test``) read the test file.
``max_objects`` keeps scenes with at most that many table objects (all three views together).
Crops (given for 480 x 640 and scaled with the image size): ``alternative_crop`` (the seed's
default) keeps rows 232 : H - 10 and columns 50 : W - 50, the 238 x 540 band of the lower
frame; otherwise a centred 480 x 500 crop. Both are squashed to a square (bilinear for images,
nearest neighbour for masks). ``camera`` picks one view per scene or ``all`` (three per scene);
the seed's choice is ``front`` with the alternative crop and ``all`` without it.

Items: ``image`` float [3, S, S] in [0, 1]; ``num_objects``; ``camera`` (0 front, 1 left,
2 right); ``index`` (row of the file); in val/test also ``mask_instance`` long [M, M] (the
segmentation ids, 0 = background) and ``mask_ignore`` bool [M, M] (id 255: no body).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.transforms import CropBox, crop_resize_image, crop_resize_labels, image_to_tensor
from ground.errors import UserError

CAMERAS: tuple[str, ...] = ("front", "left", "right")
CAMERA_CHOICES: tuple[str, ...] = (*CAMERAS, "all")
VIEWS_PER_SCENE = len(CAMERAS)
REFERENCE_SHAPE: tuple[int, int] = (480, 640)
ALTERNATIVE_CROP: CropBox = (232, 480 - 10, 50, 640 - 50)  # rows 232:-10, cols 50:-50
CENTRE_CROP_SIZE: tuple[int, int] = (480, 500)
NO_HIT = 255  # PyBullet's -1 ("no body") cast to uint8
FILE_OF_SPLIT: dict[str, str] = {"train": "train", "val": "test", "test": "test"}
LAYOUT_HINT = (
    "--data_path must hold ravens_robot_data_train.h5 and ravens_robot_data_test.h5 (the seed's published "
    "files, or generator output merged with: python scripts/prepare_ravens.py --train A.h5 B.h5 --test C.h5 --out DIR)"
)


def find_file(data_path: str | None, split: str) -> Path:
    """The single ``ravens_*_{train|test}.h5`` that ``split`` reads (val reads the test file)."""
    if split not in FILE_OF_SPLIT:
        raise UserError(f"unknown RAVENS split {split!r}; use one of {', '.join(FILE_OF_SPLIT)}")
    if not data_path:
        raise UserError(f"--dataset ravens needs --data_path; {LAYOUT_HINT}")
    folder = Path(data_path)
    if not folder.is_dir():
        raise UserError(f"--data_path {folder} is not a folder; {LAYOUT_HINT}")
    matches = sorted(folder.glob(f"ravens_*_{FILE_OF_SPLIT[split]}.h5"))
    if not matches:
        raise UserError(f"no ravens_*_{FILE_OF_SPLIT[split]}.h5 in {folder}; {LAYOUT_HINT}")
    if len(matches) > 1:
        raise UserError(f"{len(matches)} files match ravens_*_{FILE_OF_SPLIT[split]}.h5 in {folder} "
                        f"({', '.join(p.name for p in matches[:3])}); keep one (merge chunks with scripts/prepare_ravens.py)")
    return matches[0]


def check_file(path: Path) -> tuple[int, int, np.ndarray]:
    """Check keys, shapes and dtypes; return (height, width, per-scene object counts)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise UserError(f"{path} is not a readable HDF5 file ({err}); {LAYOUT_HINT}") from err
    with f:
        missing = [k for k in ("color", "segm", "num_objects_on_table") if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise UserError(f"{path} has no {', '.join(missing)} dataset (keys: {', '.join(sorted(f)) or 'none'}); "
                            f"not a RAVENS file; {LAYOUT_HINT}")
        color, segm, counts = f["color"], f["segm"], f["num_objects_on_table"]
        if color.ndim != 4 or color.shape[3] != 3 or color.dtype != np.uint8:
            raise UserError(f"{path}: 'color' is {color.dtype} {color.shape}, RAVENS needs uint8 [3 S, 480, 640, 3]")
        if segm.shape != color.shape[:3] or segm.dtype != np.uint8:
            raise UserError(f"{path}: 'segm' is {segm.dtype} {segm.shape}, RAVENS needs uint8 {color.shape[:3]}")
        if counts.ndim != 1 or color.shape[0] != VIEWS_PER_SCENE * counts.shape[0]:
            raise UserError(f"{path}: {color.shape[0]} images but {counts.shape[0]} scenes in 'num_objects_on_table'; "
                            f"every scene needs {VIEWS_PER_SCENE} views (front, left, right), the file is incomplete")
        return int(color.shape[1]), int(color.shape[2]), np.asarray(counts[:]).astype(np.int64)


def crop_box(height: int, width: int, alternative_crop: bool) -> CropBox:
    """The seed's crop for a 480 x 640 frame, scaled to ``height`` x ``width``."""
    ref_h, ref_w = REFERENCE_SHAPE
    if alternative_crop:
        top, bottom, left, right = ALTERNATIVE_CROP
    else:  # torchvision CenterCrop((480, 500)): offsets rounded as it does
        top, left = round((ref_h - CENTRE_CROP_SIZE[0]) / 2), round((ref_w - CENTRE_CROP_SIZE[1]) / 2)
        bottom, right = top + CENTRE_CROP_SIZE[0], left + CENTRE_CROP_SIZE[1]
    return (round(top * height / ref_h), round(bottom * height / ref_h),
            round(left * width / ref_w), round(right * width / ref_w))


def select_rows(counts: np.ndarray, camera: str, max_objects: int | None) -> np.ndarray:
    """File rows to use: the views of ``camera`` (or all three) of scenes with <= ``max_objects`` objects."""
    if camera not in CAMERA_CHOICES:
        raise UserError(f"unknown --ravens_camera {camera!r}; use one of {', '.join(CAMERA_CHOICES)}")
    scenes = np.arange(len(counts)) if max_objects is None else np.flatnonzero(counts <= max_objects)
    views = np.arange(VIEWS_PER_SCENE) if camera == "all" else np.array([CAMERAS.index(camera)])
    return (scenes[:, None] * VIEWS_PER_SCENE + views[None, :]).reshape(-1)


class Ravens(Dataset):
    """One split of the RAVENS robot data (val = the test file), read lazily."""

    def __init__(
        self,
        data_path: str | None,
        split: str = "train",
        image_size: int = 128,
        mask_size: int | None = None,
        max_objects: int | None = None,
        num_samples: int | None = None,
        alternative_crop: bool = True,
        camera: str | None = None,
    ) -> None:
        self.path = find_file(data_path, split)
        height, width, counts = check_file(self.path)
        self.camera = camera or ("front" if alternative_crop else "all")  # the seed's pairing
        self.rows = select_rows(counts, self.camera, max_objects)
        if len(self.rows) == 0:
            raise UserError(f"no scene of {self.path} has <= {max_objects} objects on the table; raise --max_n_objects")
        if num_samples is not None:
            self.rows = self.rows[:num_samples]
        self.scene_counts = counts
        self.split, self.image_size = split, image_size
        self.mask_size = image_size if mask_size is None else mask_size
        self.with_masks = split != "train"  # the seed's training split is images only
        self.crop = crop_box(height, width, alternative_crop)
        self._file: Any = None
        self._pid: int | None = None

    def _h5(self) -> Any:
        if self._file is None or self._pid != os.getpid():  # an HDF5 handle must not cross a fork
            import h5py

            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        f = self._h5()
        item: dict[str, Any] = {
            "image": crop_resize_image(image_to_tensor(f["color"][row]), self.crop, self.image_size),
            "num_objects": int(self.scene_counts[row // VIEWS_PER_SCENE]),
            "camera": row % VIEWS_PER_SCENE,
            "index": row,
        }
        if self.with_masks:
            # Ids are kept as they are (no one-hot of a fixed size): a scene with 8 table objects
            # uses ids beyond the seed's 12 classes.
            labels = crop_resize_labels(f["segm"][row], self.crop, self.mask_size)
            item["mask_instance"] = torch.from_numpy(np.where(labels == NO_HIT, 0, labels).astype(np.int64))
            item["mask_ignore"] = torch.from_numpy(labels == NO_HIT)
        return item
