from pathlib import Path

import pytest
import torch

from datasets import build_dataset, default_mask_size, limit
from datasets.shapes import write_shapes_hdf5
from ground.errors import UserError


def test_shapes_from_generator_and_from_hdf5_folder(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write_shapes_hdf5(tmp_path / f"{split}.h5", split=split, num_samples=6, image_size=32, mask_size=32,
                          min_objects=2, max_objects=6, seed=0)
    generated = build_dataset("shapes", "val", image_size=32, num_samples=6)
    cached = build_dataset("shapes", "val", image_size=32, data_path=str(tmp_path), num_samples=6)
    assert len(cached) == len(generated) == 6
    torch.testing.assert_close(cached[3]["mask_instance"], generated[3]["mask_instance"])
    assert (cached[3]["image"] - generated[3]["image"]).abs().max() <= 1 / 255 + 1e-6


def test_unknown_dataset_and_missing_cache(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; available here: shapes, "):
        build_dataset("imagenet", "train", image_size=32)
    with pytest.raises(UserError, match="train.h5 not found"):
        build_dataset("shapes", "train", image_size=32, data_path=str(tmp_path))


def test_mask_size_defaults_and_limit() -> None:
    assert default_mask_size("coco", 224) == 320 and default_mask_size("shapes", 64) == 64
    dataset = build_dataset("shapes", "val", image_size=32, mask_size=48, num_samples=10)
    assert dataset[0]["mask_instance"].shape == (48, 48)
    assert len(limit(dataset, 4)) == 4 and limit(dataset, None) is dataset


def test_pixel_dataset_names_aliases_and_mask_sizes() -> None:
    from datasets import DATASETS, canonical_name

    for name in ("clevr", "clevr6", "clevr10", "tetrominoes", "clevrtex", "clevrtex6"):
        assert name in DATASETS
    assert canonical_name("clevr_with_masks") == "clevr" and canonical_name("clevr6_masks") == "clevr6"
    assert default_mask_size("clevr6", 224) == 128 and default_mask_size("clevrtex", 64) == 128
    assert default_mask_size("tetrominoes", 128) == 35 and default_mask_size("clevr_with_masks", 32) == 128
    for name in ("clevr", "tetrominoes", "clevrtex6"):
        with pytest.raises(UserError, match="--data_path is required"):
            build_dataset(name, "train", image_size=32)
