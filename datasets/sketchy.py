"""Sketchy robot frames as prepared by GENESIS (docs/data.md, "Sketchy"): images only, no masks.

Layout (``--data_path`` is the ``processed`` folder or the folder holding it)::

    processed/{train,valid,test}/epXXXXXX/epXXXXXX_tNNN_{fl|fr}_{full|c0|...|c5}.png   (128 x 128)

Each timestep of an episode gives 14 PNGs: two cameras (front-left ``fl``, front-right ``fr``)
times seven views (the full square and six overlapping crops). As in the seed, every PNG is an
independent sample. The splits are by episode (the preparation split the recorded episodes
10% valid, 10% test, the rest train, and numbered episodes across all three); ``val`` reads
``valid``. An episode folder found in two split folders is an error: crops of one frame
overlap heavily, so a shared episode would leak training images into evaluation.

The file list is built by listing the episode folders and sorted by name, so every machine
sees the same order (the seed's cached ``{mode}_images.txt`` list is neither read nor written).
Images are resized bilinearly only when ``image_size`` is not 128 (the seed requires 128).
Items: ``image`` float [3, S, S] in [0, 1]; ``index``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from datasets.layout import CheckedImageDataset, require_dir, require_nonempty
from datasets.transforms import crop_resize_image, decoding, image_to_tensor
from ground.errors import UserError

SPLIT_FOLDERS: dict[str, str] = {"train": "train", "val": "valid", "test": "test"}
EPISODE = re.compile(r"^ep\d{6,}$")
FRAME = re.compile(r"^(ep\d{6,})_t\d{3,}_(fl|fr)_(full|c[0-5])\.png$")
LAYOUT_HINT = (
    "--data_path must be Sketchy's processed/ folder with train/, valid/, test/ episode folders "
    "(GENESIS's scripts/sketchy_preparation.py output, or the seed's processed download)"
)


def resolve_root(data_path: str | None) -> Path:
    """The ``processed`` folder named by ``--data_path`` (it or its parent)."""
    if not data_path:
        raise UserError(f"--dataset sketchy needs --data_path; {LAYOUT_HINT}")
    root = Path(data_path)
    if not (root / "train").is_dir() and (root / "processed" / "train").is_dir():
        root = root / "processed"
    require_dir(root, "Sketchy", LAYOUT_HINT)
    return root


def episodes(folder: Path) -> list[str]:
    """Sorted episode folder names (``epXXXXXX``) of one split folder."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and EPISODE.match(e.name))


def check_episode_splits(root: Path) -> None:
    """Error if an episode folder appears in more than one split folder."""
    seen: dict[str, str] = {}
    for folder in SPLIT_FOLDERS.values():
        if not (root / folder).is_dir():
            continue
        for name in episodes(root / folder):
            if name in seen:
                raise UserError(f"episode {name} is in both {root / seen[name]} and {root / folder}; splits must be "
                                "by episode (crops of one frame overlap): re-run the preparation into empty folders")
            seen[name] = folder


class Sketchy(CheckedImageDataset):
    """One episode-level split of the GENESIS-processed Sketchy frames."""

    NO_MASKS_REASON: ClassVar[str] = "Sketchy has no segmentation masks"

    def __init__(self, data_path: str | None, split: str = "train", image_size: int = 128,
                 num_samples: int | None = None, strict: bool = False) -> None:
        if split not in SPLIT_FOLDERS:
            raise UserError(f"unknown Sketchy split {split!r}; use one of {', '.join(SPLIT_FOLDERS)}")
        self.root = resolve_root(data_path)
        folder = require_dir(self.root / SPLIT_FOLDERS[split], f"Sketchy {SPLIT_FOLDERS[split]}", LAYOUT_HINT)
        check_episode_splits(self.root)
        paths: list[str] = []
        for episode in episodes(folder):
            names = sorted(n for n in os.listdir(folder / episode) if (m := FRAME.match(n)) and m.group(1) == episode)
            paths.extend(str(folder / episode / n) for n in names)
        require_nonempty(paths, f"the Sketchy {SPLIT_FOLDERS[split]} split of {self.root} "
                                "(no epXXXXXX/epXXXXXX_tNNN_{fl|fr}_{full|cK}.png files)", LAYOUT_HINT)
        self.paths = paths if num_samples is None else paths[:num_samples]
        self.split, self.image_size, self.strict = split, image_size, strict

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        with decoding(path), Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        return {"image": crop_resize_image(image_to_tensor(pixels), None, self.image_size)}
