"""COCO 2017 (docs/data.md#real-datasets) from the standard layout, masks through pycocotools.

Layout under ``--data_path``::

    annotations/instances_train2017.json, annotations/instances_val2017.json
    train2017/*.jpg, val2017/*.jpg          (or images/train2017, images/val2017)

Every image listed in the annotation file is used, including the val images without
annotations. Training samples are images only: short side to ``image_size`` (bilinear),
centre crop, horizontal flip with probability 0.5; the annotation file is read only up to
its ``images`` list. Evaluation samples add masks at ``mask_size`` (short side, nearest,
centre crop):

- ``mask_instance``: 1-based index of the image's annotation in file order, first writer
  wins where annotations overlap; 0 = background.
- ``mask_class``: 1 + rank of the category id among the file's sorted categories (the
  80-class ``CAT_LIST`` index for COCO 2017); 0 = background.
- ``mask_ignore``: pixels covered by two or more annotations.

``eval_protocol`` (docs/data.md#real-datasets): ``spot`` keeps crowd annotations as ordinary instances;
``dinosaur`` drops them (OCLF's ``coco_nocrowd``), so crowd regions count as background.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets.layout import CheckedImageDataset, check_present, require_dir, require_file, require_nonempty, scan_headers
from datasets.transforms import HFLIP_PROB, augmentation_rng, bool_to_tensor, crop_view, label_window, labels_to_tensor, load_short_side
from ground.errors import UserError

SPLIT_NAMES = {"train": "train2017", "val": "val2017"}
LAYOUT_HINT = (
    "--data_path must hold annotations/instances_{train,val}2017.json and {train,val}2017/*.jpg "
    "(COCO 2017 as downloaded from cocodataset.org)"
)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def read_top_level(path: Path, keys: set[str]) -> dict[str, Any]:
    """The values of ``keys`` in a JSON object file, parsing its members only until all are found.

    COCO files list ``images`` before ``annotations``, so the training split (which needs only
    the image list) skips parsing ~860k annotations of ``instances_train2017.json``.
    """
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    found: dict[str, Any] = {}
    pos = _WHITESPACE.match(text, 0).end()
    if text[pos : pos + 1] != "{":
        raise json.JSONDecodeError("expected a JSON object", text, pos)
    pos += 1
    while len(found) < len(keys):
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos : pos + 1] == "}":
            break
        key, pos = decoder.raw_decode(text, pos)
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos : pos + 1] != ":":
            raise json.JSONDecodeError("expected ':'", text, pos)
        pos = _WHITESPACE.match(text, pos + 1).end()
        value, pos = decoder.raw_decode(text, pos)
        if key in keys:
            found[key] = value
        pos = _WHITESPACE.match(text, pos).end()
        if text[pos : pos + 1] == ",":
            pos += 1
    return found


def _to_rle(segmentation: Any, height: int, width: int) -> dict | None:
    """One (compressed) RLE for a polygon list, an uncompressed RLE or a compressed RLE."""
    if isinstance(segmentation, list):
        # pycocotools reads a 4-number "polygon" as a box; real polygons have >= 3 points.
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return None
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def paint_annotations(
    rles: list[dict], classes: list[int], height: int, width: int, mask_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance, class and ignore maps at ``mask_size`` from per-annotation RLEs (file order).

    Each mask is decoded by pycocotools and reduced to the 320-px window by a nearest gather
    (which commutes with painting) before any per-pixel work; then the first
    annotation covering a pixel names it, and pixels under two or more annotations are ignored.
    """
    size = (mask_size, mask_size)
    rows, cols = label_window(height, width, mask_size)
    # Work in the transposed (column-major) layout that pycocotools decodes to, where the
    # gathers and boolean masks are contiguous; transpose the results once at the end.
    # Decoding one RLE at a time is faster than pycocotools' stacked [H, W, N] output.
    instance = np.zeros(size[::-1], dtype=np.int16)  # COCO has at most ~100 annotations per image
    covered = np.zeros(size[::-1], dtype=np.uint8)
    for k in range(len(rles) - 1, -1, -1):  # paint backwards: the first annotation wins
        window = mask_utils.decode(rles[k]).T[cols][:, rows].view(bool)  # [m (cols), m (rows)]
        np.putmask(instance, window, k + 1)
        covered += window
    instance = np.ascontiguousarray(instance.T, dtype=np.int64)
    class_ids = np.asarray([0, *classes], dtype=np.int64)
    return instance, class_ids[instance], np.ascontiguousarray(covered.T >= 2)


class CocoDataset(CheckedImageDataset):
    """COCO 2017 ``train`` (augmented images) or ``val`` (images and masks); see the module doc."""

    train_augmentation: tuple[str, ...] = ("hflip",)

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        mask_size: int = 320,
        eval_protocol: str = "spot",
        strict: bool = False,
    ) -> None:
        if split not in SPLIT_NAMES:
            raise UserError(f"COCO has splits {', '.join(SPLIT_NAMES)}, not {split!r}")
        self.split, self.image_size, self.mask_size = split, image_size, mask_size
        self.eval_protocol, self.strict = eval_protocol, strict
        self.training = split == "train"
        self.augmentation = self.train_augmentation if self.training else ()
        root = require_dir(Path(root), "COCO", LAYOUT_HINT)
        name = SPLIT_NAMES[split]
        ann_file = require_file(root / "annotations" / f"instances_{name}.json", "COCO annotation file", LAYOUT_HINT)
        image_dir = root / name if (root / name).is_dir() else root / "images" / name
        require_dir(image_dir, f"COCO {split} image", LAYOUT_HINT)
        try:
            data = read_top_level(ann_file, {"images"} if self.training else {"images", "annotations", "categories"})
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"cannot parse {ann_file} ({err}); download the annotation file again") from err
        images = data.get("images", [])
        require_nonempty(images, f"the image list of {ann_file}", LAYOUT_HINT)
        paths = [str(image_dir / record["file_name"]) for record in images]
        check_present(paths, f"COCO {split} images", f"is {image_dir} complete? ({LAYOUT_HINT})")
        keep = scan_headers(paths, strict, f"COCO {split} images")
        require_nonempty(keep, f"COCO {split} (no readable image)", LAYOUT_HINT)
        # Numpy arrays of plain values: forked DataLoader workers then share them without
        # copy-on-write growth (lists of Python objects are touched by refcounting).
        self.paths = np.asarray(paths)[keep]
        self.annotations: list[tuple[list[Any], list[int]]] = []
        if not self.training:  # masks are decoded at the size the annotation file states
            self.sizes = np.asarray([(images[i]["height"], images[i]["width"]) for i in keep], dtype=np.int64)
            self.annotations = self._group_annotations(data, [images[i]["id"] for i in keep])

    def _group_annotations(self, data: dict[str, Any], image_ids: list[int]) -> list[tuple[list[Any], list[int]]]:
        """Per image (in ``image_ids`` order): segmentations and class ids, in file order."""
        categories = sorted(c["id"] for c in data.get("categories", []))
        rank = {cat: i + 1 for i, cat in enumerate(categories)}
        per_image: dict[int, tuple[list[Any], list[int]]] = {i: ([], []) for i in image_ids}
        for ann in data.get("annotations", []):
            if self.eval_protocol == "dinosaur" and ann.get("iscrowd", 0):
                continue
            entry = per_image.get(ann["image_id"])
            if entry is None:
                continue
            if ann["category_id"] not in rank:
                raise UserError(f"annotation {ann.get('id')} has category {ann['category_id']}, absent from 'categories'")
            entry[0].append(ann["segmentation"])
            entry[1].append(rank[ann["category_id"]])
        return [per_image[i] for i in image_ids]

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> dict[str, Any]:
        image, _ = load_short_side(self.paths[index], self.image_size)
        if self.training:
            flip_prob = HFLIP_PROB if self.augment else 0.0
            return {"image": crop_view(image, self.image_size, flip_prob=flip_prob, rng=augmentation_rng(index))}
        view = crop_view(image, self.image_size)
        height, width = (int(v) for v in self.sizes[index])
        segmentations, classes = self.annotations[index]
        rles, kept_classes = [], []
        for segmentation, class_id in zip(segmentations, classes):
            rle = _to_rle(segmentation, height, width)
            if rle is not None:
                rles.append(rle)
                kept_classes.append(class_id)
        instance, class_map, ignore = paint_annotations(rles, kept_classes, height, width, self.mask_size)
        return {
            "image": view,
            "mask_instance": labels_to_tensor(instance),
            "mask_class": labels_to_tensor(class_map),
            "mask_ignore": bool_to_tensor(ignore),
        }
