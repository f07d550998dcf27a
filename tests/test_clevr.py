"""CLEVR with masks from the seed's HDF5 layout: items, crop, splits, CLEVR6/10 filtering, layout errors."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datasets import build_dataset
from datasets.clevr import ClevrWithMasks
from ground.errors import UserError
from tests.fixtures_pixel import clevr_arrays, clevr_object_count, write_clevr_h5, write_h5


@pytest.fixture(scope="module")
def clevr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clevr_h5(tmp_path_factory.mktemp("clevr"), num_samples=40)


def test_items_follow_the_project_format(clevr_dir: Path) -> None:
    dataset = build_dataset("clevr", "train", image_size=32, data_path=str(clevr_dir))
    item = dataset[5]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["mask_instance"].shape == (128, 128) and item["mask_instance"].dtype == torch.int64  # default
    assert item["mask_ignore"].dtype == torch.bool and not item["mask_ignore"].any()
    with h5py.File(clevr_dir / "clevr_with_masks.h5") as f:
        shape_codes = f["shape"][item["index"]]
    ids = item["mask_instance"]
    assert ids.max() <= 10 and (item["mask_class"] == torch.from_numpy(shape_codes.astype(np.int64))[ids]).all()
    assert ((item["mask_class"] == 0) == (ids == 0)).all()  # class 0 only on the background
    assert item["num_objects"] == clevr_object_count(item["index"])


def test_crop_matches_the_seed_crop_scaled_to_the_file(clevr_dir: Path) -> None:
    # 48 x 64 is 1/5 of 240 x 320: rows 29:221, cols 64:256 become 6:44, 13:51 (38 x 38).
    dataset = ClevrWithMasks(str(clevr_dir / "clevr_with_masks.h5"), "val", image_size=38, mask_size=38)
    assert dataset.crop == (6, 44, 13, 51)
    arrays = clevr_arrays(40)
    row = dataset[0]["index"]
    expected = torch.from_numpy(arrays["image"][row, 6:44, 13:51]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(dataset[0]["image"], expected)
    labels = arrays["mask"][row, :, 6:44, 13:51, 0].argmax(0)
    np.testing.assert_array_equal(dataset[0]["mask_instance"].numpy(), labels)


def test_splits_are_70_15_15(clevr_dir: Path) -> None:
    sizes = {split: len(build_dataset("clevr", split, 32, data_path=str(clevr_dir))) for split in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 6, "test": 6}  # 40 scenes, proportionally
    dataset = ClevrWithMasks(str(clevr_dir), "val", image_size=32)
    assert dataset._split_range(100_000) == (70_000, 85_000)  # the full file, without the seed's off-by-one
    dataset.split = "test"
    assert dataset._split_range(100_000) == (85_000, 100_000)
    assert len(build_dataset("clevr", "train", 32, data_path=str(clevr_dir), num_samples=5)) == 5


def test_clevr6_and_clevr10_count_foreground_objects(clevr_dir: Path) -> None:
    all_counts = [clevr_object_count(i) for i in range(28)]
    for name, limit in (("clevr6", 6), ("clevr10", 10)):
        dataset = build_dataset(name, "train", 32, data_path=str(clevr_dir))
        assert list(dataset.indices) == [i for i, n in enumerate(all_counts) if n <= limit]
        assert max(dataset.object_counts) == limit  # the background entity is not counted
    # The seed's name is an alias.
    assert len(build_dataset("clevr6_masks", "train", 32, data_path=str(clevr_dir))) == 16


def _expect(match: str, data_path: Path | str | None, name: str = "clevr", split: str = "train") -> None:
    with pytest.raises(UserError, match=match) as info:
        build_dataset(name, split, 32, data_path=None if data_path is None else str(data_path))
    assert "\n" not in str(info.value)


def test_layout_errors(tmp_path: Path, clevr_dir: Path) -> None:
    _expect("--data_path is required for clevr", None)
    _expect("does not exist", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    _expect("clevr_with_masks.h5 not found; convert DeepMind's TFRecords with: python scripts/convert_multi_object.py", tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "clevr.h5").write_bytes(b"x")
    _expect("it has clevr.h5; pass that file as --data_path", tmp_path / "other")
    _expect("not a readable HDF5 file", tmp_path / "other" / "clevr.h5")
    arrays = clevr_arrays(4)
    write_h5(tmp_path / "nomask.h5", {k: v for k, v in arrays.items() if k != "mask"})
    _expect("has no mask dataset", tmp_path / "nomask.h5")
    write_h5(tmp_path / "entities.h5", {**arrays, "mask": arrays["mask"][:, :4]})
    _expect(r"'mask' has per-sample shape \(4, 48, 64, 1\), clevr needs \(11, 48, 64, 1\)", tmp_path / "entities.h5")
    with h5py.File(tmp_path / "group.h5", "w") as f:
        for name, values in arrays.items():
            if name == "image":
                f.create_group("image")
            else:
                f.create_dataset(name, data=values)
    _expect("'image' has per-sample shape a group", tmp_path / "group.h5")
    write_h5(tmp_path / "dtype.h5", {**arrays, "visibility": arrays["visibility"].astype(np.float64)})
    _expect("'visibility' has dtype float64, clevr needs float32", tmp_path / "dtype.h5")
    write_h5(tmp_path / "lengths.h5", {**arrays, "visibility": arrays["visibility"][:3]})
    _expect("disagree on the sample count", tmp_path / "lengths.h5")
    write_h5(tmp_path / "tiny.h5", {k: v[:3] for k, v in arrays.items()})
    _expect("has 3 samples, too few for a val split", tmp_path / "tiny.h5", split="val")
    _expect("unknown clevr split 'dev'", clevr_dir, split="dev")
    few = {k: v[:8] for k, v in clevr_arrays(8).items()}
    few["visibility"][:] = 1.0  # every scene has 10 objects
    write_h5(tmp_path / "crowded.h5", few)
    _expect("no train scene of .* has <= 6 objects", tmp_path / "crowded.h5", name="clevr6")
    # A Tetrominoes file given as CLEVR is recognised by its entity count.
    from tests.fixtures_pixel import write_tetrominoes_h5

    _expect("clevr needs", write_tetrominoes_h5(tmp_path / "tetro") / "tetrominoes.h5")
