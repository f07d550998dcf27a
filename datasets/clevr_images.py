"""Original CLEVR (v1.0): images only, no segmentation masks (docs/data.md, "CLEVR (original)").

Layout (``CLEVR_v1.0.zip`` unzipped; ``--data_path`` is the ``CLEVR_v1.0`` folder or its parent)::

    images/{train,val,test}/CLEVR_{split}_NNNNNN.png      (RGBA, 320 x 480)
    scenes/CLEVR_train_scenes.json, scenes/CLEVR_val_scenes.json   (no test scenes file)

As in the object-discovery seed's 2021 pipeline (and the official Slot Attention default,
no crop), the alpha channel is dropped and the whole 320 x 480 frame is resized bilinearly to
``image_size`` x ``image_size`` (the 3:2 aspect ratio is squashed). ``max_objects`` keeps the
scenes whose scene file lists at most that many objects (the seed used ``num_slots - 1``); the
test split has no scene file, so it cannot be filtered. Paths are sorted by name.

Items: ``image`` float [3, S, S] in [0, 1]; ``num_objects`` (train/val only); ``index``.
There are no masks, so training reports reconstruction metrics only (``NO_MASKS_REASON``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from datasets.layout import CheckedImageDataset, check_present, require_dir, require_nonempty
from datasets.transforms import crop_resize_image, decoding, image_to_tensor
from ground.errors import UserError

SPLITS: tuple[str, ...] = ("train", "val", "test")
LAYOUT_HINT = (
    "--data_path must be the CLEVR_v1.0 folder (images/{train,val,test}/, scenes/): download "
    "https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip and run: unzip CLEVR_v1.0.zip -d DATA_DIR"
)


def resolve_root(data_path: str | None) -> Path:
    """The ``CLEVR_v1.0`` folder named by ``--data_path`` (it or its parent)."""
    if not data_path:
        raise UserError(f"--dataset clevr_images needs --data_path; {LAYOUT_HINT}")
    root = Path(data_path)
    if not (root / "images").is_dir() and (root / "CLEVR_v1.0" / "images").is_dir():
        root = root / "CLEVR_v1.0"
    require_dir(root / "images", "CLEVR images", LAYOUT_HINT)
    return root


def read_scenes(path: Path) -> list[dict[str, Any]]:
    """The ``scenes`` list of a CLEVR scene file (``image_filename`` and ``objects`` per scene)."""
    try:
        with open(path) as f:
            scenes = json.load(f)["scenes"]
        return [{"image_filename": s["image_filename"], "num_objects": len(s["objects"])} for s in scenes]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a CLEVR scene file ({type(err).__name__}: {err}); re-extract CLEVR_v1.0.zip") from err


class ClevrImages(CheckedImageDataset):
    """One split of CLEVR v1.0, optionally limited to scenes with <= ``max_objects`` objects."""

    NO_MASKS_REASON: ClassVar[str] = "original CLEVR (v1.0) has no segmentation masks"

    def __init__(
        self,
        data_path: str | None,
        split: str = "train",
        image_size: int = 128,
        max_objects: int | None = None,
        num_samples: int | None = None,
        strict: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise UserError(f"unknown CLEVR split {split!r}; use one of {', '.join(SPLITS)}")
        self.root = resolve_root(data_path)
        self.split, self.image_size, self.strict = split, image_size, strict
        folder = require_dir(self.root / "images" / split, f"CLEVR {split} images", LAYOUT_HINT)
        scene_file = self.root / "scenes" / f"CLEVR_{split}_scenes.json"
        counts: list[int] | None = None
        if scene_file.is_file():
            scenes = sorted(read_scenes(scene_file), key=lambda s: s["image_filename"])
            if max_objects is not None:
                scenes = [s for s in scenes if s["num_objects"] <= max_objects]
            names = [s["image_filename"] for s in scenes]
            counts = [s["num_objects"] for s in scenes]
            check_present([str(folder / n) for n in names], f"CLEVR {split} images", f"re-extract CLEVR_v1.0.zip; {LAYOUT_HINT}")
        elif max_objects is not None:
            raise UserError(
                f"--max_n_objects needs {scene_file} to count objects (CLEVR v1.0 has no test scene file); "
                "evaluate --split val, or drop --max_n_objects"
            )
        else:
            pattern = re.compile(rf"^CLEVR_{split}_\d+\.png$")
            names = sorted(n for n in os.listdir(folder) if pattern.match(n))
        limit = f" with <= {max_objects} objects" if max_objects is not None else ""
        require_nonempty(names, f"the CLEVR {split} split of {self.root}{limit}", LAYOUT_HINT)
        if num_samples is not None:
            names = names[:num_samples]
            counts = None if counts is None else counts[:num_samples]
        self.paths = [str(folder / n) for n in names]
        self.num_objects = None if counts is None else np.asarray(counts, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        with decoding(path), Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))  # CLEVR PNGs are RGBA: the alpha is dropped
        item: dict[str, Any] = {"image": crop_resize_image(image_to_tensor(pixels), None, self.image_size)}
        if self.num_objects is not None:
            item["num_objects"] = int(self.num_objects[index])
        return item
