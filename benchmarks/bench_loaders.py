#!/usr/bin/env python
"""Data-loading throughput (images/s) of the real-image loaders and the synthetic set.

Writes scaled-up versions of the test fixtures (photo-sized COCO and VOC JPEGs, 128-px MOVi
videos of 24 frames with 25 mask PNGs per validation frame) into a temporary folder, then
times a DataLoader (default 2 workers, batch 16) over every split: training samples are
images only, evaluation samples add the masks. The first batch (worker start-up) is not
timed. Example:

    python benchmarks/bench_loaders.py --num_images 256 --num_workers 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from datasets import build_dataset  # noqa: E402
from datasets.transforms import center_offsets, short_side_size  # noqa: E402
from real_data_fixtures import write_coco_scaled, write_movi, write_voc  # noqa: E402
from utils.train import make_loader  # noqa: E402


class ReferenceCocoTrain(torch.utils.data.Dataset):
    """The original pipeline's cost model for COCO training (docs/data.md#real-datasets), for comparison: full JPEG
    decode, and every annotation decoded and painted at full size, resized to 320, then unused."""

    def __init__(self, root: Path, image_size: int) -> None:
        import json

        data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
        self.root, self.image_size, self.images = root, image_size, data["images"]
        self.anns: dict[int, list] = {}
        for ann in data["annotations"]:
            self.anns.setdefault(ann["image_id"], []).append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        record = self.images[index]
        h, w = record["height"], record["width"]
        image = Image.open(self.root / "train2017" / record["file_name"]).convert("RGB")
        nh, nw = short_side_size(h, w, self.image_size)
        top, left = center_offsets(nh, nw, self.image_size)
        image = image.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + self.image_size, top + self.image_size))
        instance = np.zeros((h, w), np.uint8)
        for k, ann in enumerate(self.anns.get(record["id"], []), start=1):
            segm = ann["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w)) if isinstance(segm, list) else mask_utils.frPyObjects(segm, h, w)
            mask = mask_utils.decode(rle).astype(bool)
            instance[mask & (instance == 0)] = k
        mh, mw = short_side_size(h, w, 320)
        Image.fromarray(instance).resize((mw, mh), Image.Resampling.NEAREST)
        array = np.asarray(image, np.float32).transpose(2, 0, 1) / 255
        return {"image": torch.from_numpy(np.ascontiguousarray(array))}


def throughput(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int, passes: int) -> float:
    """Images per second over ``passes`` passes of ``dataset``, after the first batch."""
    loader = make_loader(dataset, batch_size, num_workers, None, 0, False)
    count, start = 0, None
    for _ in range(passes):
        for batch in loader:
            if start is None:
                start = time.perf_counter()  # workers are up
                continue
            count += len(batch["image"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--num_images", type=int, default=256, help="images per COCO/VOC split; MOVi gets num_images/24 videos")
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--root", default=None, help="write the fixtures here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        start = time.perf_counter()
        coco = write_coco_scaled(root / "coco", args.num_images)
        write_voc(root / "voc", num_train=args.num_images, num_val=args.num_images, num_sbd=0, size=(375, 500))
        videos = max(1, args.num_images // 24)
        movi = write_movi(root / "MOVi" / "c", num_train=videos, num_val=videos, val_frames=24, size=128)
        print(f"fixtures written in {time.perf_counter() - start:.0f} s under {root}")
        (root / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "trainaug.txt").write_text(
            (root / "voc" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").read_text())
        cases = {
            "coco train, original pipeline": ("reference", "train", coco, None),
            "coco train (images)": ("coco", "train", coco, None),
            "coco val (+ masks at 320)": ("coco", "val", coco, None),
            "voc train (images)": ("voc", "train", root / "voc", None),
            "voc val (+ masks at 320)": ("voc", "val", root / "voc", None),
            "movi train (images)": ("movi", "train", movi, None),
            "movi val (+ 25 mask PNGs, 128)": ("movi", "val", movi, None),
            "shapes train (synthetic)": ("shapes", "train", None, args.num_images),
            "shapes val (synthetic)": ("shapes", "val", None, args.num_images),
        }
        print(f"{'dataset / split':34} {'images':>7} {'build s':>8} {'images/s':>9}   "
              f"({args.num_workers} workers, batch {args.batch_size}, {args.image_size} px)")
        for label, (name, split, path, num) in cases.items():
            start = time.perf_counter()
            if name == "reference":
                dataset = ReferenceCocoTrain(path, args.image_size)
            else:
                dataset = build_dataset(name, split, args.image_size, data_path=str(path) if path else None, num_samples=num)
            built = time.perf_counter() - start
            rate = throughput(dataset, args.batch_size, args.num_workers, args.passes)
            print(f"{label:34} {len(dataset):7d} {built:8.2f} {rate:9.1f}")


if __name__ == "__main__":
    main()
