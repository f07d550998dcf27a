"""CLEVR with masks (DeepMind multi_object_datasets) from the seed's HDF5 layout.

``--dataset clevr`` uses every scene (3-10 objects), ``clevr6`` scenes with at most 6 and
``clevr10`` at most 10 visible foreground objects. The count is the number of foreground
entities with ``visibility`` 1: entity 0 is the background and is not counted (the seed
counted it, so its "CLEVR6" held scenes with at most 5 objects). Images are cropped to rows
29:221, cols 64:256 (the IODINE / Slot Attention crop, 192 x 192, deliberately not centred)
and resized bilinearly; masks get the same crop and nearest-neighbour resizing.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from datasets.multi_object import MultiObjectHDF5
from datasets.tfrecord import FeatureSpec
from datasets.transforms import CropBox

IMAGE_SHAPE: tuple[int, int] = (240, 320)
MAX_NUM_ENTITIES: int = 11  # background + up to 10 objects
MAX_OBJECTS: dict[str, int | None] = {"clevr": None, "clevr6": 6, "clevr10": 10}

# The features of clevr_with_masks_train.tfrecords (deepmind/multi_object_datasets,
# clevr_with_masks.py); the HDF5 file has one dataset per feature with a leading N axis.
FEATURES: dict[str, FeatureSpec] = {
    "image": FeatureSpec((*IMAGE_SHAPE, 3), "bytes", "uint8"),
    "mask": FeatureSpec((MAX_NUM_ENTITIES, *IMAGE_SHAPE, 1), "bytes", "uint8"),
    "x": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "y": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "z": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "pixel_coords": FeatureSpec((MAX_NUM_ENTITIES, 3), "float", "float32"),
    "rotation": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
    "size": FeatureSpec((MAX_NUM_ENTITIES,), "bytes", "uint8"),
    "material": FeatureSpec((MAX_NUM_ENTITIES,), "bytes", "uint8"),
    "shape": FeatureSpec((MAX_NUM_ENTITIES,), "bytes", "uint8"),
    "color": FeatureSpec((MAX_NUM_ENTITIES,), "bytes", "uint8"),
    "visibility": FeatureSpec((MAX_NUM_ENTITIES,), "float", "float32"),
}


class ClevrWithMasks(MultiObjectHDF5):
    """CLEVR with masks: 100,000 scenes of 240 x 320, split 70k train / 15k val / 15k test.

    ``mask_class`` is the dataset's ``shape`` code of each object (1..3; 0 = background).
    """

    NAME: ClassVar[str] = "clevr"
    FILE_NAME: ClassVar[str] = "clevr_with_masks.h5"
    TFRECORD_NAME: ClassVar[str] = "clevr_with_masks_train.tfrecords"
    FEATURES: ClassVar[dict[str, FeatureSpec]] = FEATURES
    # The seed skips indices 70,000 and 85,000 (off by one); these ranges do not.
    SPLITS: ClassVar[dict[str, tuple[int, int]]] = {
        "train": (0, 70_000), "val": (70_000, 85_000), "test": (85_000, 100_000),
    }
    CROP: ClassVar[CropBox | None] = (29, 221, 64, 256)
    IMAGE_RESIZE: ClassVar[str] = "bilinear"

    def class_codes(self, shape: np.ndarray) -> np.ndarray:
        codes = shape.astype(np.int64)
        codes[:, 0] = 0  # the background entity
        return codes
