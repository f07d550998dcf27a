"""PASCAL VOC 2012 (docs/data.md#real-datasets): ``trainaug`` images for training, ``val`` masks for evaluation.

Layout (``--data_path`` may be ``VOCdevkit/VOC2012``, ``VOCdevkit`` or the folder above it)::

    JPEGImages/*.jpg, SegmentationObject/*.png, SegmentationClass/*.png   (indexed PNGs)
    ImageSets/Segmentation/{train,val}.txt [, trainaug.txt]

Training (split ``train``) uses the 10,582 ``trainaug`` ids: short side to ``image_size``
(bilinear), random crop, horizontal flip with probability 0.5. The id list is read from
``ImageSets/Segmentation/trainaug.txt`` when present; otherwise it is generated as
``(SBD train + SBD val + VOC train) - VOC val`` from ``--sbd_path`` (the SBD
``benchmark_RELEASE`` folder), or as ``SegmentationClassAug/*.png - VOC val`` when the
``SegmentationClassAug`` folder of the usual augmented-VOC download sits in ``VOC2012``.

Other splits (``val``) return masks at ``mask_size`` (short side, nearest, centre crop):
``mask_instance`` from ``SegmentationObject``, ``mask_class`` from ``SegmentationClass``.
Value 255 marks object boundaries and void; ``eval_protocol`` decides what it becomes
(docs/data.md#real-datasets): ``spot`` sets it to background (0) and ignores nothing; ``dinosaur`` also
sets it to 0 but ignores those pixels (class map == 255) in prediction and ground truth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.layout import CheckedImageDataset, check_present, require_dir, require_file, require_nonempty, scan_headers
from datasets.transforms import HFLIP_PROB, augmentation_rng, bool_to_tensor, crop_view, decoding, label_window, labels_to_tensor, load_short_side
from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

BOUNDARY = 255
TRAINAUG_SIZE = 10582  # the standard list (docs/data.md#real-datasets)
LAYOUT_HINT = (
    "--data_path must be VOCdevkit/VOC2012 (or a folder holding it) with JPEGImages, SegmentationObject, "
    "SegmentationClass and ImageSets/Segmentation"
)
TRAINAUG_HINT = (
    "training uses the 10,582 'trainaug' ids: put trainaug.txt in ImageSets/Segmentation, or pass --sbd_path "
    "(the SBD benchmark_RELEASE folder) to generate it, or add the SegmentationClassAug folder to VOC2012"
)


def find_voc_root(data_path: str | Path) -> Path:
    """The ``VOC2012`` folder (the one holding ``JPEGImages``) at or under ``data_path``."""
    base = require_dir(Path(data_path), "VOC", LAYOUT_HINT)
    for candidate in (base, base / "VOC2012", base / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise UserError(f"no JPEGImages folder in {base}, {base / 'VOC2012'} or {base / 'VOCdevkit' / 'VOC2012'}; {LAYOUT_HINT}")


def read_ids(path: Path) -> list[str]:
    """Image ids of an ``ImageSets`` list (one per line; anything after the id is ignored)."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def trainaug_ids(voc_root: Path, sbd_path: str | Path | None = None) -> tuple[list[str], str]:
    """The ``trainaug`` ids and where they came from (see the module doc for the three sources)."""
    sets = voc_root / "ImageSets" / "Segmentation"
    listed = sets / "trainaug.txt"
    if listed.is_file():
        return read_ids(listed), str(listed)
    val_file = require_file(sets / "val.txt", "VOC val list", LAYOUT_HINT)
    val = set(read_ids(val_file))
    if sbd_path:
        sbd = require_dir(Path(sbd_path), "SBD (--sbd_path)", "pass the benchmark_RELEASE folder of the SBD download")
        sbd = sbd / "dataset" if (sbd / "dataset").is_dir() else sbd
        hint = "--sbd_path must hold dataset/train.txt and dataset/val.txt (SBD's benchmark_RELEASE)"
        ids = set(read_ids(require_file(sbd / "train.txt", "SBD train list", hint)))
        ids |= set(read_ids(require_file(sbd / "val.txt", "SBD val list", hint)))
        ids |= set(read_ids(require_file(sets / "train.txt", "VOC train list", LAYOUT_HINT)))
        return sorted(ids - val), f"SBD {sbd} + VOC train - VOC val"
    aug = voc_root / "SegmentationClassAug"
    if aug.is_dir():
        ids = {p.stem for p in aug.glob("*.png")}
        return sorted(ids - val), f"{aug} - VOC val"
    raise UserError(f"{listed} not found; {TRAINAUG_HINT}")


def write_trainaug(voc_root: Path, sbd_path: str | Path | None, out: Path | None = None) -> Path:
    """Generate the trainaug list and write it (default: ``ImageSets/Segmentation/trainaug.txt``)."""
    ids, source = trainaug_ids(voc_root, sbd_path)
    out = out or voc_root / "ImageSets" / "Segmentation" / "trainaug.txt"
    out.write_text("".join(f"{i}\n" for i in ids))
    log.info(f"wrote {len(ids)} ids from {source} to {out}")
    return out


def _read_indexed(path: str) -> np.ndarray:
    """Palette indices of a VOC PNG (mode P); RGB-rendered masks would lose the ids."""
    with decoding(path), Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise UserError(f"{path} is a {image.mode} image; VOC masks must be the original indexed (P) PNGs")
        return np.asarray(image)


class VocDataset(CheckedImageDataset):
    """VOC 2012 ``train`` (trainaug, augmented images) or ``val`` (images and masks)."""

    train_augmentation: tuple[str, ...] = ("random_crop", "hflip")

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        mask_size: int = 320,
        eval_protocol: str = "spot",
        strict: bool = False,
        sbd_path: str | Path | None = None,
    ) -> None:
        self.split, self.image_size, self.mask_size = split, image_size, mask_size
        self.eval_protocol, self.strict = eval_protocol, strict
        self.training = split == "train"
        self.augmentation = self.train_augmentation if self.training else ()
        voc = find_voc_root(root)
        if self.training:
            ids, source = trainaug_ids(voc, sbd_path)
            if len(ids) != TRAINAUG_SIZE:
                log.info(f"VOC trainaug from {source}: {len(ids)} ids (the standard list has {TRAINAUG_SIZE})")
        else:
            list_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
            ids, source = read_ids(require_file(list_file, f"VOC {split} list", LAYOUT_HINT)), str(list_file)
        require_nonempty(ids, f"the VOC {split} list ({source})", LAYOUT_HINT)
        paths = [str(voc / "JPEGImages" / f"{i}.jpg") for i in ids]
        check_present(paths, f"VOC {split} images", f"is {voc / 'JPEGImages'} complete?")
        if not self.training:
            for folder in ("SegmentationObject", "SegmentationClass"):
                require_dir(voc / folder, f"VOC {folder}", LAYOUT_HINT)
                check_present([str(voc / folder / f"{i}.png") for i in ids], f"VOC {split} {folder} masks", LAYOUT_HINT)
        keep = scan_headers(paths, strict, f"VOC {split} images")
        if not self.training:  # a sample needs all three files
            for folder in ("SegmentationObject", "SegmentationClass"):
                masks = [str(voc / folder / f"{i}.png") for i in ids]
                keep = np.intersect1d(keep, scan_headers(masks, strict, f"VOC {split} {folder} masks"))
        require_nonempty(keep, f"VOC {split} (no readable image)", LAYOUT_HINT)
        self.root = voc
        self.ids = np.asarray(ids)[keep]
        if not self.training:
            _read_indexed(str(voc / "SegmentationObject" / f"{self.ids[0]}.png"))  # format check, once

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, index: int) -> dict[str, Any]:
        image_id = str(self.ids[index])
        image, (height, width) = load_short_side(self.root / "JPEGImages" / f"{image_id}.jpg", self.image_size)
        if self.training:
            rng = augmentation_rng(index)
            return {"image": crop_view(image, self.image_size, random_crop=True, flip_prob=HFLIP_PROB, rng=rng)}
        instance = _read_indexed(str(self.root / "SegmentationObject" / f"{image_id}.png"))
        class_map = _read_indexed(str(self.root / "SegmentationClass" / f"{image_id}.png"))
        if instance.shape != (height, width) or class_map.shape != (height, width):
            raise UserError(f"VOC masks of {image_id} are not {width}x{height} like its image; re-extract the dataset")
        window = np.ix_(*label_window(height, width, self.mask_size))
        instance, class_map = instance[window], class_map[window]
        if self.eval_protocol == "dinosaur":
            ignore = class_map == BOUNDARY
        else:
            ignore = np.zeros(class_map.shape, dtype=bool)
        return {
            "image": crop_view(image, self.image_size),
            "mask_instance": labels_to_tensor(np.where(instance == BOUNDARY, 0, instance)),
            "mask_class": labels_to_tensor(np.where(class_map == BOUNDARY, 0, class_map)),
            "mask_ignore": bool_to_tensor(ignore),
        }
