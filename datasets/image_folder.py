"""Unlabelled image sources for SlotCon/SlotFA pretraining, and a labelled class-folder set for probes.

Layouts (docs/methods/slotfa.md): ``COCO`` = ``<data-dir>/train2017/*.jpg``; ``COCOplus`` adds
``<data-dir>/unlabeled2017/*.jpg``; ``ImageNet`` = ``<data-dir>/train/<class>/*.JPEG``;
``shapes`` = the built-in synthetic scenes (no files needed). Labelled probe sets use
``<root>/<class>/<image>`` (ImageNet's ``train``/``val`` folders fit).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms

from ground.errors import UserError

PRETRAIN_DATASETS: tuple[str, ...] = ("shapes", "COCO", "COCOplus", "ImageNet")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot read image {path} ({err}); remove or replace it") from err


class ImageFiles(Dataset):
    """PIL images from a sorted list of files."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Image.Image:
        return open_rgb(self.files[index])


class ShapesImages(Dataset):
    """The synthetic ``shapes`` scenes as PIL images (pretraining needs no masks)."""

    def __init__(self, split: str, side: int, num_samples: int | None, seed: int) -> None:
        from datasets.shapes import ShapesDataset

        self.scenes = ShapesDataset(split=split, num_samples=num_samples, image_size=side, mask_size=8, seed=seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Image.Image:
        image = self.scenes[index]["image"].numpy()
        return Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))


def pretrain_files(dataset: str, data_dir: str | Path) -> list[Path]:
    """The image files of a COCO / COCOplus / ImageNet layout; a wrong layout is a UserError."""
    root = Path(data_dir)
    if dataset in ("COCO", "COCOplus"):
        folders = [root / "train2017"] + ([root / "unlabeled2017"] if dataset == "COCOplus" else [])
        for folder in folders:
            if not folder.is_dir():
                raise UserError(f"{folder} not found: --dataset {dataset} expects --data-dir to hold {folder.name}/*.jpg")
        files = [f for folder in folders for f in sorted(folder.glob("*.jpg"))]
    elif dataset == "ImageNet":
        if not (root / "train").is_dir():
            raise UserError(f"{root / 'train'} not found: --dataset ImageNet expects --data-dir/train/<class>/*.JPEG")
        files = sorted((root / "train").glob("*/*.JPEG"))
    else:
        raise UserError(f"unknown --dataset {dataset!r}; choose one of {', '.join(PRETRAIN_DATASETS)}")
    if not files:
        raise UserError(f"no images found for --dataset {dataset} under {root}; check --data-dir")
    return files


def build_pretrain_images(dataset: str, data_dir: str | Path, side: int, num_samples: int | None, seed: int) -> Dataset:
    """Unlabelled PIL images of ``dataset`` (``side``: render size of synthetic scenes)."""
    if dataset == "shapes":
        return ShapesImages("train", side, num_samples, seed)
    files = pretrain_files(dataset, data_dir)
    return ImageFiles(files[:num_samples] if num_samples else files)


class LabelledImageFolder(Dataset):
    """``<root>/<class>/<image>``: items (PIL image, class index); classes sorted by name."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root} not found; pass a folder of <class>/<image> sub-folders")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(f, i) for i, c in enumerate(self.classes) for f in sorted((root / c).iterdir())
                        if f.suffix.lower() in IMAGE_SUFFIXES]
        if len(self.classes) < 2 or not self.samples:
            raise UserError(f"{root} needs at least two class sub-folders with images (<root>/<class>/<image>)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return open_rgb(path), label


class Preprocessed(Dataset):
    """Resize (side * 256/224) + centre crop + [0, 1] tensor, as viz_slots; labels passed through."""

    def __init__(self, items: Dataset, size: int) -> None:
        self.items = items
        self.transform = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                             transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        image, label = item if isinstance(item, tuple) else (item, -1)
        return self.transform(image), label
