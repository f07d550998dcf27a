"""Tetrominoes from the seed's HDF5 layout: items, nearest resizing, first-60k splits, layout errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import build_dataset, default_mask_size
from datasets.tetrominoes import Tetrominoes
from ground.errors import UserError
from tests.fixtures_pixel import tetrominoes_arrays, write_clevr_h5, write_tetrominoes_h5


@pytest.fixture(scope="module")
def tetro_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tetrominoes_h5(tmp_path_factory.mktemp("tetro"), num_samples=36)


def test_items_native_masks_and_nearest_resize(tetro_dir: Path) -> None:
    assert default_mask_size("tetrominoes", 128) == 35
    arrays = tetrominoes_arrays(36)
    dataset = build_dataset("tetrominoes", "val", image_size=70, data_path=str(tetro_dir))
    item = dataset[1]
    row = item["index"]
    assert row == 25 and item["num_objects"] == 3
    image = torch.from_numpy(arrays["image"][row]).permute(2, 0, 1).float() / 255
    # Nearest-neighbour 35 -> 70 repeats every pixel twice (no blending of piece colours).
    torch.testing.assert_close(item["image"], image.repeat_interleave(2, 1).repeat_interleave(2, 2))
    labels = arrays["mask"][row, ..., 0].argmax(0)
    np.testing.assert_array_equal(item["mask_instance"].numpy(), labels)  # native 35 x 35
    classes = (arrays["shape"][row].astype(np.int64) + 1) * (np.arange(4) > 0)
    np.testing.assert_array_equal(item["mask_class"].numpy(), classes[labels])
    assert sorted(np.unique(labels)) == [0, 1, 2, 3]


def test_first_60k_train_then_val_and_test(tetro_dir: Path) -> None:
    sizes = {s: len(build_dataset("tetrominoes", s, 35, data_path=str(tetro_dir))) for s in ("train", "val", "test")}
    assert sizes == {"train": 24, "val": 6, "test": 6}  # a small file: 60:15:15 proportions
    dataset = Tetrominoes(str(tetro_dir), "train", image_size=35)
    assert dataset._split_range(1_000_000) == (0, 60_000)
    dataset.split = "val"
    assert dataset._split_range(1_000_000) == (60_000, 75_000)
    dataset.split = "test"
    assert dataset._split_range(1_000_000) == (75_000, 90_000)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tetrominoes.h5 not found; convert DeepMind's TFRecords with: .*--dataset tetrominoes"):
        build_dataset("tetrominoes", "train", 35, data_path=str(tmp_path))
    clevr_dir = write_clevr_h5(tmp_path / "clevr", num_samples=4)
    with pytest.raises(UserError, match=r"'mask' has per-sample shape \(11, 48, 64, 1\), tetrominoes needs \(4, 48, 64, 1\)"):
        build_dataset("tetrominoes", "train", 35, data_path=str(clevr_dir / "clevr_with_masks.h5"))


def test_dataloader_workers_reopen_the_file(tetro_dir: Path) -> None:
    from torch.utils.data import DataLoader

    dataset = build_dataset("tetrominoes", "train", 35, data_path=str(tetro_dir))
    first = dataset[0]["image"]  # the main process now holds an open handle
    batches = list(DataLoader(dataset, batch_size=8, num_workers=2))
    assert sum(len(b["image"]) for b in batches) == 24
    torch.testing.assert_close(batches[0]["image"][0], first)
