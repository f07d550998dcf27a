"""ClevrTex from PNG folders: index cache (created, reused, refreshed), splits, filtering, crop, layout errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_dataset, clevrtex
from datasets.clevrtex import ClevrTex, cache_path, default_cache_dir
from ground.errors import UserError
from tests.fixtures_pixel import clevrtex_object_count, write_clevrtex_folder


@pytest.fixture(scope="module")
def clevrtex_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clevrtex_folder(tmp_path_factory.mktemp("clevrtex"), num_samples=40)


def test_index_cache_is_created_then_reused(clevrtex_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache_dir = tmp_path / "cache"
    first = ClevrTex(str(clevrtex_root), "train", image_size=32, cache_dir=cache_dir)
    cache_file = cache_path(clevrtex_root.resolve(), "full", cache_dir)
    assert cache_file.is_file() and list(cache_dir.iterdir()) == [cache_file]
    assert not list(clevrtex_root.rglob("*cache*"))  # nothing written next to the data
    index = json.loads(cache_file.read_text())
    assert len(index["stems"]) == 40 and index["num_objects"][:3] == [clevrtex_object_count(i) for i in range(3)]

    def no_scan(*args, **kwargs):
        raise AssertionError("the cached index should have been used")

    monkeypatch.setattr(clevrtex, "build_index", no_scan)
    second = ClevrTex(str(clevrtex_root), "train", image_size=32, cache_dir=cache_dir)
    assert second.stems == first.stems and second.object_counts == first.object_counts
    # Another split and another object limit reuse the same index.
    assert len(ClevrTex(str(clevrtex_root), "val", image_size=32, max_objects=6, cache_dir=cache_dir)) >= 1


def test_cache_is_refreshed_when_the_folder_changes(tmp_path: Path) -> None:
    root = write_clevrtex_folder(tmp_path / "data", num_samples=20, per_folder=10)
    cache_dir = tmp_path / "cache"
    assert len(ClevrTex(str(root), "train", 32, cache_dir=cache_dir)) == 16
    write_clevrtex_folder(tmp_path / "more", num_samples=30, per_folder=10)
    os.rename(tmp_path / "more" / "clevrtex_full" / "2", root / "2")  # scenes 20..29 arrive
    assert len(ClevrTex(str(root), "train", 32, cache_dir=cache_dir)) == 24
    for name in ("CLEVRTEX_full_000025.png", "CLEVRTEX_full_000025_flat.png", "CLEVRTEX_full_000025.json"):
        os.remove(root / "2" / name)
    refreshed = ClevrTex(str(root), "train", 32, cache_dir=cache_dir)
    assert "2/CLEVRTEX_full_000024" in refreshed.stems and "2/CLEVRTEX_full_000025" not in refreshed.stems


def test_default_cache_dir_and_unwritable_cache(clevrtex_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OCL_CACHE_DIR", str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"
    build_dataset("clevrtex", "val", 32, data_path=str(clevrtex_root))
    assert len(list((tmp_path / "env_cache").glob("clevrtex_full_*.json"))) == 1
    monkeypatch.delenv("OCL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "object-centric-slots"
    blocked = tmp_path / "file_not_dir"
    blocked.write_text("")
    # An unusable cache location costs a re-index per run, but does not stop the run.
    assert len(ClevrTex(str(clevrtex_root), "test", 32, cache_dir=blocked / "sub")) == 4


def test_items_splits_and_clevrtex6(clevrtex_root: Path, tmp_path: Path) -> None:
    cache = str(tmp_path)
    sizes = {s: len(build_dataset("clevrtex", s, 32, data_path=str(clevrtex_root), cache_dir=cache))
             for s in ("train", "val", "test")}
    assert sizes == {"train": 32, "val": 4, "test": 4}  # 80/10/10 by sorted scene number
    test_set = build_dataset("clevrtex", "test", 32, data_path=str(clevrtex_root), cache_dir=cache)
    assert [test_set[i]["index"] for i in range(4)] == [0, 1, 2, 3]
    six = build_dataset("clevrtex6", "train", 32, data_path=str(clevrtex_root), cache_dir=cache)
    expected = [i for i in range(8, 40) if clevrtex_object_count(i) <= 6]
    assert [six[i]["index"] for i in range(len(six))] == expected
    assert max(six.object_counts) == 6

    item = build_dataset("clevrtex", "train", 38, mask_size=38, data_path=str(clevrtex_root), cache_dir=cache)[0]
    assert item["index"] == 8 and item["image"].shape == (3, 38, 38)
    stem = clevrtex_root / "0" / "CLEVRTEX_full_000008"
    rgba = np.asarray(Image.open(f"{stem}.png"))
    assert rgba.shape[-1] == 4
    # Centre crop of side int(0.8 * 48) = 38 from 48 x 64: rows 5:43, cols 13:51; alpha dropped.
    expected_image = torch.from_numpy(rgba[5:43, 13:51, :3].copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["image"], expected_image)
    labels = np.asarray(Image.open(f"{stem}_flat.png"))[5:43, 13:51]
    np.testing.assert_array_equal(item["mask_instance"].numpy(), labels)
    np.testing.assert_array_equal(item["mask_class"].numpy(), labels > 0)
    assert not item["mask_ignore"].any() and item["num_objects"] == clevrtex_object_count(8)
    default = build_dataset("clevrtex", "train", 32, data_path=str(clevrtex_root), cache_dir=cache)[0]
    assert default["mask_instance"].shape == (128, 128)


def test_layout_errors(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")

    def expect(match: str, data_path, name: str = "clevrtex", split: str = "train") -> None:
        with pytest.raises(UserError, match=match) as info:
            build_dataset(name, split, 32, data_path=None if data_path is None else str(data_path), cache_dir=cache)
        assert "\n" not in str(info.value)

    expect("--data_path is required for ClevrTex", None)
    expect("is not a folder", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    expect("no CLEVRTEX_full_NNNNNN.png files below", tmp_path / "empty")
    root = write_clevrtex_folder(tmp_path / "a", num_samples=10)
    expect("unknown ClevrTex split 'dev'", root, split="dev")
    os.remove(root / "0" / "CLEVRTEX_full_000003_flat.png")
    expect("CLEVRTEX_full_000003_flat.png is missing", root)
    root = write_clevrtex_folder(tmp_path / "b", num_samples=10)
    (root / "0" / "CLEVRTEX_full_000004.json").write_text("{}")
    expect("CLEVRTEX_full_000004.json: not ClevrTex metadata with an 'objects' list", root)
    root = write_clevrtex_folder(tmp_path / "c", num_samples=10)
    (root / "0" / "CLEVRTEX_full_000001.json").write_text(json.dumps({"objects": [{}] * 8}))  # the one val scene
    expect(r"the ClevrTex val split of .* is empty \(10 scenes in all with <= 6 objects\)", root, "clevrtex6", "val")
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(root / "0" / "CLEVRTEX_full_000002_flat.png")
    dataset = build_dataset("clevrtex", "train", 32, data_path=str(root), cache_dir=cache)
    with pytest.raises(UserError, match="must be a one-channel index mask"):
        dataset[0]
