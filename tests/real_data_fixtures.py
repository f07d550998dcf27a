"""Miniature COCO, VOC and MOVi folders in their real on-disk formats, written by code.

Used by the dataset tests and, scaled up, by ``benchmarks/bench_loaders.py``. Sizes are
parameters so the same writers serve both.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 44, "name": "bottle"}]


def _random_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Smooth random colours (compresses like a photo, unlike white noise)."""
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def rect_polygon(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (crowd format): column-major run lengths, starting with zeros."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def coco_val_records() -> tuple[list[dict], list[dict]]:
    """Three val images: overlapping polygons + a crowd RLE; no annotations; a compressed RLE."""
    images = [
        {"id": 101, "file_name": "000000000101.jpg", "height": 30, "width": 40},
        {"id": 102, "file_name": "000000000102.jpg", "height": 48, "width": 32},
        {"id": 103, "file_name": "000000000103.jpg", "height": 36, "width": 36},
    ]
    crowd = np.zeros((30, 40), dtype=np.uint8)
    crowd[0:12, 25:38] = 1
    blob = np.zeros((36, 36), dtype=np.uint8)
    blob[5:20, 8:30] = 1
    annotations = [
        {"id": 1, "image_id": 101, "category_id": 18, "iscrowd": 0, "segmentation": rect_polygon(2, 2, 20, 20)},
        {"id": 2, "image_id": 101, "category_id": 1, "iscrowd": 0, "segmentation": rect_polygon(15, 10, 30, 25)},
        {"id": 3, "image_id": 101, "category_id": 44, "iscrowd": 1, "segmentation": uncompressed_rle(crowd)},
        {"id": 4, "image_id": 103, "category_id": 44, "iscrowd": 0, "segmentation": compressed_rle(blob)},
    ]
    return images, annotations


def write_coco(root: Path, num_train: int = 6, train_size: tuple[int, int] = (40, 52), seed: int = 0,
               num_val_copies: int = 1) -> Path:
    """COCO 2017 layout; val has the three images of :func:`coco_val_records` (repeated)."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train2017", "val2017"):
        (root / split).mkdir(exist_ok=True)
    val_images, val_annotations = coco_val_records()
    images, annotations = [], []
    for copy in range(num_val_copies):
        for record in val_images:
            images.append({**record, "id": record["id"] + 1000 * copy,
                           "file_name": f"{record['id'] + 1000 * copy:012d}.jpg"})
        for ann in val_annotations:
            annotations.append({**ann, "id": ann["id"] + 1000 * copy, "image_id": ann["image_id"] + 1000 * copy})
    for record in images:
        _random_image(rng, record["height"], record["width"]).save(root / "val2017" / record["file_name"], quality=90)
    _write_json(root / "annotations" / "instances_val2017.json", images, annotations)
    train_images, train_annotations = [], []
    for i in range(num_train):
        height, width = train_size if i % 2 == 0 else train_size[::-1]
        name = f"{i + 1:012d}.jpg"
        _random_image(rng, height, width).save(root / "train2017" / name, quality=90)
        train_images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        train_annotations.append({"id": 10_000 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                                  "segmentation": rect_polygon(1, 1, 10, 10)})
    _write_json(root / "annotations" / "instances_train2017.json", train_images, train_annotations)
    return root


def _write_json(path: Path, images: list[dict], annotations: list[dict]) -> None:
    # The official files' member order: images come before annotations.
    data = {"info": {"description": "miniature"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": COCO_CATEGORIES}
    path.write_text(json.dumps(data))


VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]


def write_indexed_png(path: Path, labels: np.ndarray) -> None:
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    image.putpalette(VOC_PALETTE)
    image.save(path)


def voc_val_masks(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Two objects (classes 15 and 12) with 1-px boundaries of 255 around them."""
    instance = np.zeros((height, width), dtype=np.uint8)
    class_map = np.zeros((height, width), dtype=np.uint8)
    for object_id, class_id, (y0, y1, x0, x1) in ((1, 15, (4, 14, 4, 16)), (2, 12, (16, 26, 18, 30))):
        instance[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
        class_map[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
        instance[y0:y1, x0:x1] = object_id
        class_map[y0:y1, x0:x1] = class_id
    return instance, class_map


def write_voc(base: Path, num_train: int = 5, num_val: int = 3, num_sbd: int = 4, size: tuple[int, int] = (30, 40),
              seed: int = 0, trainaug_txt: bool = False) -> Path:
    """``base/VOCdevkit/VOC2012`` plus an SBD folder ``base/benchmark_RELEASE``; returns VOC2012."""
    rng = np.random.default_rng(seed)
    voc = base / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    train = [f"2007_{i:06d}" for i in range(num_train)]
    val = [f"2008_{i:06d}" for i in range(num_val)]
    sbd_only = [f"2009_{i:06d}" for i in range(num_sbd)]
    for image_id in train + val + sbd_only:
        _random_image(rng, *size).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
    for image_id in train + val:
        instance, class_map = voc_val_masks(*size)
        write_indexed_png(voc / "SegmentationObject" / f"{image_id}.png", instance)
        write_indexed_png(voc / "SegmentationClass" / f"{image_id}.png", class_map)
    sets = voc / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in val))
    # SBD's lists overlap VOC's val (those ids must be removed) and VOC's train.
    sbd = base / "benchmark_RELEASE" / "dataset"
    sbd.mkdir(parents=True, exist_ok=True)
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in sbd_only[: num_sbd // 2] + val[:1]))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in sbd_only[num_sbd // 2 :] + train[:2]))
    if trainaug_txt:
        (sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in sorted(train + sbd_only)))
    return voc


def write_movi(level: Path, num_train: int = 3, num_val: int = 2, train_frames: int = 24, val_frames: int = 3,
               size: int = 16, num_masks: int = 25, seed: int = 0) -> Path:
    """SPOT download-script layout for one level; val masks as 3-channel black/white PNGs."""
    rng = np.random.default_rng(seed)
    for split, videos, frames in (("train", num_train, train_frames), ("validation", num_val, val_frames)):
        for video in range(videos):
            folder = level / split / f"{video:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for t in range(frames):
                labels = movi_labels(size, video, t)
                colours = rng.integers(0, 256, size=(num_masks, 3), dtype=np.uint8)
                Image.fromarray(colours[labels]).save(folder / f"{t:08d}_image.png")
                if split == "train":
                    continue
                for n in range(num_masks):
                    binary = np.repeat(((labels == n) * 255).astype(np.uint8)[..., None], 3, axis=2)
                    Image.fromarray(binary).save(folder / f"{t:08d}_mask_{n:02d}.png")
    return level


def movi_labels(size: int, video: int, t: int) -> np.ndarray:
    """Segment ids of a frame: two squares moving with t (ids 1 and 3; id 2 is absent)."""
    labels = np.zeros((size, size), dtype=np.int64)
    q = size // 4
    labels[q : 2 * q, (t % q) : (t % q) + q] = 1
    labels[2 * q + 1 : 3 * q + 1, 2 * q : 3 * q] = 3
    return labels


def write_coco_scaled(root: Path, num_images: int, size: tuple[int, int] = (480, 640), anns_per_image: int = 7,
                      seed: int = 0, sizes: list[tuple[int, int]] | None = None) -> Path:
    """A COCO-sized fixture for benchmarks: photo-sized JPEGs, 20-vertex polygons, some crowd RLEs.

    The same images and annotations serve both splits (COCO averages ~7 annotations per image).
    ``sizes`` (height, width), if given, are used in turn instead of the one ``size``.
    """
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for split in ("train2017", "val2017"):
        (root / split).mkdir(exist_ok=True)
    for i in range(num_images):
        size = sizes[i % len(sizes)] if sizes else size
        height, width = size
        name = f"{i + 1:012d}.jpg"
        image = _random_image(rng, height, width)
        for split in ("train2017", "val2017"):
            image.save(root / split / name, quality=90)
        images.append({"id": i + 1, "file_name": name, "height": height, "width": width})
        for k in range(anns_per_image):
            cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
            radius = rng.uniform(0.05, 0.3) * min(height, width)
            angles = np.sort(rng.uniform(0, 2 * np.pi, 20))
            polygon = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1).ravel()
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(rng.choice([1, 18, 44])),
                                "iscrowd": 0, "segmentation": [np.clip(polygon, 0, max(size)).round(2).tolist()]})
        if i % 10 == 0:
            crowd = np.zeros(size, dtype=np.uint8)
            crowd[: height // 3, : width // 3] = 1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 1,
                                "segmentation": uncompressed_rle(crowd)})
    for split in ("train2017", "val2017"):
        _write_json(root / "annotations" / f"instances_{split}.json", images, annotations)
    return root
