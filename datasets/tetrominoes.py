"""Tetrominoes (DeepMind multi_object_datasets) from the seed's HDF5 layout.

1,000,000 images of 35 x 35 with three pieces each. As in the Slot Attention paper and the
seed, the first 60,000 are the training set; the next 15,000 are ``val`` and the 15,000 after
those ``test`` (``--split val --val_samples 320`` gives the paper's 320 evaluation images,
the ones right after the training set). No crop; images and masks are resized with nearest
neighbour (the pieces are pixel-aligned squares).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from datasets.multi_object import MultiObjectHDF5
from datasets.tfrecord import FeatureSpec

IMAGE_SHAPE: tuple[int, int] = (35, 35)
MAX_NUM_ENTITIES: int = 4  # background + 3 pieces

# The features of tetrominoes_train.tfrecords (deepmind/multi_object_datasets, tetrominoes.py).
FEATURES: dict[str, FeatureSpec] = {
    "image": FeatureSpec((*IMAGE_SHAPE, 3), "bytes", "uint8"),
    "mask": FeatureSpec((MAX_NUM_ENTITIES, *IMAGE_SHAPE, 1), "bytes", "uint8"),
    "x": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "y": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "shape": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "color": FeatureSpec((MAX_NUM_ENTITIES, 3), "float", "float32"),
    "visibility": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
}


class Tetrominoes(MultiObjectHDF5):
    """Tetrominoes: train = first 60k, val = next 15k, test = the 15k after (of 1M).

    ``mask_class`` is 1 + the dataset's ``shape`` id of each piece (0 = background).
    """

    NAME: ClassVar[str] = "tetrominoes"
    FILE_NAME: ClassVar[str] = "tetrominoes.h5"
    TFRECORD_NAME: ClassVar[str] = "tetrominoes_train.tfrecords"
    FEATURES: ClassVar[dict[str, FeatureSpec]] = FEATURES
    SPLITS: ClassVar[dict[str, tuple[int, int]]] = {
        "train": (0, 60_000), "val": (60_000, 75_000), "test": (75_000, 90_000),
    }
    CROP = None
    IMAGE_RESIZE: ClassVar[str] = "nearest"

    def class_codes(self, shape: np.ndarray) -> np.ndarray:
        codes = np.rint(shape).astype(np.int64) + 1
        codes[:, 0] = 0  # the background entity
        return codes
