"""COCO 2017 loader on a miniature COCO written in the real format (JPEGs + instances JSON)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from datasets import build_dataset
from datasets.coco import read_top_level
from datasets.transforms import center_offsets, short_side_size
from real_data_fixtures import coco_val_records, write_coco
from ground.errors import UserError


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"))


def reference_maps(protocol: str, size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The original pipeline the slow way: decode each annotation, paint first-writer-wins at full size,
    then PIL NEAREST short-side resize and a torchvision-style centre crop."""
    images, annotations = coco_val_records()
    ranks = {1: 1, 18: 2, 44: 3}
    out = []
    for record in images:
        h, w = record["height"], record["width"]
        instance = np.zeros((h, w), np.int32)
        classes = np.zeros((h, w), np.int32)
        count = np.zeros((h, w), np.int32)
        anns = [a for a in annotations if a["image_id"] == record["id"]]
        if protocol == "dinosaur":
            anns = [a for a in anns if not a["iscrowd"]]
        for k, ann in enumerate(anns, start=1):
            segm = ann["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w)) if isinstance(segm, list) else (
                mask_utils.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else segm)
            m = mask_utils.decode(rle).astype(bool)
            count += m
            for y, x in zip(*np.nonzero(m & (instance == 0))):
                instance[y, x], classes[y, x] = k, ranks[ann["category_id"]]
        maps = []
        for array in (instance, classes, (count >= 2).astype(np.int32)):
            nh, nw = short_side_size(h, w, size)
            resized = np.asarray(Image.fromarray(array).resize((nw, nh), Image.Resampling.NEAREST))
            top, left = center_offsets(nh, nw, size)
            maps.append(resized[top : top + size, left : left + size])
        out.append((maps[0], maps[1], maps[2].astype(bool)))
    return out


@pytest.mark.parametrize("protocol", ["spot", "dinosaur"])
@pytest.mark.parametrize("mask_size", [30, 24])
def test_val_masks_match_reference(coco: Path, protocol: str, mask_size: int) -> None:
    dataset = build_dataset("coco", "val", 32, mask_size, str(coco), eval_protocol=protocol)
    assert len(dataset) == 3
    for index, (instance, classes, ignore) in enumerate(reference_maps(protocol, mask_size)):
        sample = dataset[index]
        assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
        assert sample["mask_instance"].dtype == torch.int64 and sample["mask_ignore"].dtype == torch.bool
        np.testing.assert_array_equal(sample["mask_instance"].numpy(), instance)
        np.testing.assert_array_equal(sample["mask_class"].numpy(), classes)
        np.testing.assert_array_equal(sample["mask_ignore"].numpy(), ignore)


def test_protocols_by_hand(coco: Path) -> None:
    # Image 101 is 40x30: at mask size 30 the crop keeps columns 5..34 unchanged (x_crop = x - 5).
    spot = build_dataset("coco", "val", 32, 30, str(coco), eval_protocol="spot")[0]
    dino = build_dataset("coco", "val", 32, 30, str(coco), eval_protocol="dinosaur")[0]

    def at(sample: dict, key: str, y: int, x: int) -> int:
        return int(sample[key][y, x - 5])

    # Only the dog polygon (annotation 1, category 18 = class 2).
    assert at(spot, "mask_instance", 5, 10) == 1 and at(spot, "mask_class", 5, 10) == 2
    # Both polygons: the first annotation keeps the pixel, which is ignored under both protocols.
    assert at(spot, "mask_instance", 15, 17) == 1 and at(spot, "mask_ignore", 15, 17)
    assert at(dino, "mask_ignore", 15, 17)
    # Only the person polygon (annotation 2, class 1).
    assert at(spot, "mask_instance", 22, 25) == 2 and at(spot, "mask_class", 22, 25) == 1
    # Crowd region: an instance (3, bottle = class 3) for SPOT, background for DINOSAUR.
    assert at(spot, "mask_instance", 5, 30) == 3 and at(spot, "mask_class", 5, 30) == 3
    assert at(dino, "mask_instance", 5, 30) == 0 and at(dino, "mask_class", 5, 30) == 0
    # Crowd over the person: ignored only where the crowd counts.
    assert at(spot, "mask_ignore", 11, 27) and not at(dino, "mask_ignore", 11, 27)
    assert at(dino, "mask_instance", 11, 27) == 2
    # The image without annotations has empty masks under both protocols.
    for protocol in ("spot", "dinosaur"):
        empty = build_dataset("coco", "val", 32, 30, str(coco), eval_protocol=protocol)[1]
        assert not empty["mask_instance"].any() and not empty["mask_ignore"].any()


def test_train_split_is_images_only_with_flip(coco: Path) -> None:
    dataset = build_dataset("coco", "train", 24, data_path=str(coco))
    assert len(dataset) == 6 and dataset.augmentation == ("hflip",)
    assert build_dataset("coco", "val", 24, data_path=str(coco)).augmentation == ()
    torch.manual_seed(0)
    views = [dataset[0]["image"] for _ in range(12)]
    assert set(dataset[0]) == {"image", "index"}
    flipped = [bool(torch.equal(v, views[0].flip(-1))) for v in views]
    same = [bool(torch.equal(v, views[0])) for v in views]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_read_top_level_stops_after_the_keys_it_needs(tmp_path: Path) -> None:
    path = tmp_path / "partial.json"
    path.write_text('{"info": {"a": [1, {"b": 2}]}, "images" : [{"id": 1}], "annotations": [ BROKEN')
    assert read_top_level(path, {"images"}) == {"images": [{"id": 1}]}
    with pytest.raises(json.JSONDecodeError):
        read_top_level(path, {"images", "annotations"})


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --data_path"):
        build_dataset("coco", "val", 32)
    with pytest.raises(UserError, match="COCO folder .* not found"):
        build_dataset("coco", "val", 32, data_path=str(tmp_path / "nowhere"))
    root = write_coco(tmp_path / "coco", num_train=2)
    (root / "annotations" / "instances_val2017.json").rename(root / "annotations" / "other.json")
    with pytest.raises(UserError, match="COCO annotation file .*instances_val2017.json not found"):
        build_dataset("coco", "val", 32, data_path=str(root))
    (root / "annotations" / "other.json").rename(root / "annotations" / "instances_val2017.json")
    (root / "val2017" / "000000000102.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of 3 COCO val images are listed but absent on disk \(e.g. .*000000000102.jpg\)"):
        build_dataset("coco", "val", 32, data_path=str(root))
    ann = root / "annotations" / "instances_train2017.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(UserError, match="the image list of .* is empty"):
        build_dataset("coco", "train", 32, data_path=str(root))
    ann.write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        build_dataset("coco", "train", 32, data_path=str(root))


def test_corrupt_images_skipped_or_strict(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", num_train=4)
    (root / "train2017" / "000000000002.jpg").write_bytes(b"not an image")
    dataset = build_dataset("coco", "train", 24, data_path=str(root))
    assert len(dataset) == 3 and not any(p.endswith("000000000002.jpg") for p in dataset.paths)
    with pytest.raises(UserError, match=r"1 of 4 COCO train images cannot be read \(e.g. .*000000000002.jpg"):
        build_dataset("coco", "train", 24, data_path=str(root), strict=True)
    # A truncated file passes the header check and fails when decoded: skipped, or an error.
    path = root / "train2017" / "000000000003.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    dataset = build_dataset("coco", "train", 24, data_path=str(root))
    index = list(dataset.paths).index(str(path))
    assert dataset[index]["image"].shape == (3, 24, 24)  # the next sample stands in
    dataset.strict = True  # what --strict_data sets (a strict build would already stop at file 2)
    with pytest.raises(RuntimeError, match="corrupt data"):
        dataset[index]
