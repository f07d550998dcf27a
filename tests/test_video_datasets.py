"""Synthetic moving-shapes clips, YouTube-VOS clip sampling and the DAVIS reader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import build_video_dataset
from datasets.davis import DavisSequences, read_indexed_png, save_indexed_png, split_void
from datasets.shapes_video import ShapesVideoDataset
from datasets.ytvos import clip_indices, clip_span
from ground.errors import UserError
from tests.fixtures_video import write_davis_fixture


def test_shapes_video_moves_with_constant_ids():
    data = ShapesVideoDataset("val", num_samples=3, num_frames=5, image_size=32, mask_size=16)
    item = data[1]
    assert item["video"].shape == (5, 3, 32, 32) and item["mask_instance"].shape == (5, 16, 16)
    masks = item["mask_instance"]
    ids = set(masks[0].unique().tolist())
    assert ids == set(range(item["num_objects"] + 1))
    assert not all((masks[t] == masks[0]).all() for t in range(1, 5))  # objects move
    assert (data[1]["video"] == item["video"]).all()  # deterministic
    assert not (data[2]["video"] == item["video"]).all()


def _write_jpgs(folder: Path, count: int, size: int = 12) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((size, size + 4, 3), i * 10, np.uint8)).save(folder / f"{i:05d}.jpg")


def test_clip_indices_ranges_and_gap_fallback():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = clip_indices(17, 4, 4, rng)  # exactly enough: centre 8 only
        assert ids == [0, 4, 8, 12]
    ids = clip_indices(13, 4, 4, rng)  # too short for gap 4 -> gap 3
    assert np.diff(ids).tolist() == [3, 3, 3] and ids[0] >= 0 and ids[-1] <= 12
    with pytest.raises(ValueError, match="too short"):
        clip_indices(12, 4, 4, rng)
    assert clip_span(4, 4) == 17


def test_ytvos_clips_and_short_video_error(tmp_path: Path):
    _write_jpgs(tmp_path / "JPEGImages" / "a", 20)
    _write_jpgs(tmp_path / "JPEGImages" / "b", 14)
    data = build_video_dataset("ytvos", "train", 16, num_frames=4, gap=4, data_path=str(tmp_path), num_samples=8)
    item = data[3]
    assert item["video"].shape == (4, 3, 16, 16)
    values = item["video"][:, 0, 0, 0].numpy() * 255
    assert np.all(np.diff(values) > 20)  # frames in increasing order, gap >= 3
    _write_jpgs(tmp_path / "JPEGImages" / "c", 5)
    with pytest.raises(UserError, match="c \\(5 frames\\).*lower --gap"):
        build_video_dataset("ytvos", "train", 16, num_frames=4, gap=4, data_path=str(tmp_path))
    with pytest.raises(UserError, match="JPEGImages"):
        build_video_dataset("ytvos", "train", 16, num_frames=4, data_path=str(tmp_path / "nope"))


def test_davis_reader_and_palette_round_trip(tmp_path: Path):
    labels = np.zeros((3, 20, 24), np.uint8)
    labels[:, 2:8, 3:9] = 1
    labels[:, 10:15, 10:20] = 2
    labels[1, 0, :] = 255
    write_davis_fixture(tmp_path, {"seqA": labels})
    davis = DavisSequences(tmp_path)
    assert davis.sequences == ["seqA"] and davis.frame_names("seqA") == ["00000", "00001", "00002"]
    ann, names = davis.load_annotations("seqA")
    assert (ann == labels).all() and len(names) == 3
    assert davis.load_frames("seqA").shape == (3, 3, 20, 24)
    clean, void = split_void(ann)
    assert void.sum() == 24 and clean.max() == 2
    png = tmp_path / "x.png"
    save_indexed_png(png, labels[0])
    assert (read_indexed_png(png) == labels[0]).all()
    assert Image.open(png).getpalette()[3:6] == [128, 0, 0]  # DAVIS object 1 is dark red
    with pytest.raises(UserError, match="ImageSets/2017/val.txt"):
        DavisSequences(tmp_path / "missing")
