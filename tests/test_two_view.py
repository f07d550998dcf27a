"""Two-view augmentation: crop geometry, overlap rule, pretraining image layouts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import datasets.two_view as two_view
from datasets.two_view import intersection, overlap_fraction, sample_crop_pair, view_box
from ground.errors import UserError


# --- two-crop geometry ---------------------------------------------------------------------------------
def test_intersection_boxes_and_flip() -> None:
    c1, c2 = (10, 20, 40, 50), (30, 40, 40, 40)  # (top, left, height, width)
    inter = intersection(c1, c2)
    assert inter == (40, 30, 70, 50)
    assert overlap_fraction(c1, c2) == pytest.approx(30 * 20 / (40 * 40))
    assert view_box(c1, inter, False).tolist() == pytest.approx([0.4, 0.5, 1.0, 1.0])
    assert view_box(c2, inter, False).tolist() == pytest.approx([0.0, 0.0, 0.75, 0.5])
    assert view_box(c2, inter, True).tolist() == pytest.approx([0.25, 0.0, 1.0, 0.5])  # mirrored in x
    # Disjoint crops give a zero-area box instead of an inverted one.
    empty = view_box((0, 0, 10, 10), intersection((0, 0, 10, 10), (50, 50, 10, 10)), False)
    assert empty[2] == empty[0] and empty[3] == empty[1]


def test_overlap_rule_retries_then_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first, far, near = (0, 0, 20, 20), (80, 80, 20, 20), (19, 19, 20, 20)  # near: 1 px / 400 px < 1%
    good = (10, 10, 20, 20)
    draws = iter([first, far, far, good, far])
    monkeypatch.setattr(two_view, "sample_crop", lambda *a: next(draws))
    assert sample_crop_pair(100, 100, (0.08, 1.0)) == (first, good)
    draws = iter([first] + [near] * 10 + [far])  # ten failures, then an unconstrained draw
    monkeypatch.setattr(two_view, "sample_crop", lambda *a: next(draws))
    assert sample_crop_pair(100, 100, (0.08, 1.0)) == (first, far)


def test_pretraining_image_layouts(tmp_path: Path) -> None:
    from datasets.image_folder import build_pretrain_images

    for rel in ("train2017/a.jpg", "train2017/b.jpg", "unlabeled2017/c.jpg", "train/n01/x.JPEG", "train/n02/y.JPEG",
                "train/n02/z.JPEG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 12)).save(tmp_path / rel, format="JPEG")
    assert len(build_pretrain_images("COCO", tmp_path, 32, None, 0)) == 2
    assert len(build_pretrain_images("COCOplus", tmp_path, 32, None, 0)) == 3
    imagenet = build_pretrain_images("ImageNet", tmp_path, 32, 2, 0)  # --train-samples 2
    assert len(imagenet) == 2 and imagenet[0].mode == "RGB" and imagenet[0].size == (20, 12)
    sample = two_view.TwoViewDataset(imagenet, image_size=16)[1]
    assert sample["view1"].shape == (3, 16, 16) and sample["box2"].shape == (4,) and sample["flip1"].dtype == torch.bool
    (tmp_path / "coco_only" / "train2017").mkdir(parents=True)
    with pytest.raises(UserError, match="unlabeled2017"):
        build_pretrain_images("COCOplus", tmp_path / "coco_only", 32, None, 0)
    with pytest.raises(UserError, match="no images"):
        build_pretrain_images("COCO", tmp_path / "coco_only", 32, None, 0)
