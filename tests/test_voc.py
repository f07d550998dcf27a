"""PASCAL VOC 2012 loader on a miniature VOC with indexed-PNG masks and 255 boundaries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import build_dataset
from datasets.voc import trainaug_ids, write_trainaug
from real_data_fixtures import voc_val_masks, write_indexed_png, write_voc
from ground.errors import UserError


@pytest.fixture(scope="module")
def voc_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("voc")
    write_voc(base)
    return base


@pytest.mark.parametrize("data_path", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_val_masks_under_both_protocols(voc_base: Path, data_path: str) -> None:
    # Images are 40x30: at mask size 30 the centre crop keeps columns 5..34 unchanged.
    instance, class_map = voc_val_masks(30, 40)
    instance, class_map = instance[:, 5:35], class_map[:, 5:35]
    spot = build_dataset("voc", "val", 32, 30, str(voc_base / data_path), eval_protocol="spot")
    dino = build_dataset("voc", "val", 32, 30, str(voc_base / data_path), eval_protocol="dinosaur")
    assert len(spot) == len(dino) == 3
    boundary = class_map == 255
    assert boundary.any()
    for sample in (spot[1], dino[1]):
        assert sample["image"].shape == (3, 32, 32)
        # 255 (boundary/void) is background in both protocols ...
        np.testing.assert_array_equal(sample["mask_instance"].numpy(), np.where(instance == 255, 0, instance))
        np.testing.assert_array_equal(sample["mask_class"].numpy(), np.where(class_map == 255, 0, class_map))
    # ... and only DINOSAUR's ignores it (in prediction and ground truth alike).
    assert not spot[1]["mask_ignore"].any()
    np.testing.assert_array_equal(dino[1]["mask_ignore"].numpy(), boundary)
    assert set(np.unique(spot[0]["mask_class"].numpy())) == {0, 12, 15}


def test_masks_resized_with_nearest(voc_base: Path) -> None:
    sample = build_dataset("voc", "val", 32, 15, str(voc_base), eval_protocol="dinosaur")[0]
    assert sample["mask_instance"].shape == (15, 15)
    # Halving picks every second pixel (odd rows/cols: floor((i + 0.5) * 2)); crop offset 2 of 20.
    instance, class_map = voc_val_masks(30, 40)
    expected = instance[1::2, 1::2][:, 2:17]
    np.testing.assert_array_equal(sample["mask_instance"].numpy(), np.where(expected == 255, 0, expected))


def test_trainaug_sources(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    with pytest.raises(UserError, match="trainaug.txt not found; .*--sbd_path"):
        build_dataset("voc", "train", 24, data_path=str(voc))
    # (SBD train + SBD val + VOC train) - VOC val: the val id listed by SBD is removed.
    ids, _ = trainaug_ids(voc, tmp_path / "benchmark_RELEASE")
    expected = sorted({f"2007_{i:06d}" for i in range(5)} | {f"2009_{i:06d}" for i in range(4)})
    assert ids == expected
    dataset = build_dataset("voc", "train", 24, data_path=str(voc), sbd_path=str(tmp_path / "benchmark_RELEASE"))
    assert len(dataset) == 9 and set(dataset[0]) == {"image", "index"} and dataset[0]["image"].shape == (3, 24, 24)
    # The augmented-VOC download's SegmentationClassAug folder (trainaug + val PNGs).
    aug = voc / "SegmentationClassAug"
    aug.mkdir()
    for image_id in [*expected, "2008_000000", "2008_000001"]:
        write_indexed_png(aug / f"{image_id}.png", np.zeros((4, 4), np.uint8))
    assert trainaug_ids(voc)[0] == expected
    # A written list wins over both.
    written = write_trainaug(voc, tmp_path / "benchmark_RELEASE")
    assert written.read_text().split() == expected
    written.write_text("2007_000001\n2007_000003\n")
    assert len(build_dataset("voc", "train", 24, data_path=str(voc))) == 2
    written.unlink()
    with pytest.raises(UserError, match="SBD train list .* not found"):
        trainaug_ids(voc, tmp_path)


def test_make_voc_trainaug_script(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import make_voc_trainaug

    voc = write_voc(tmp_path)
    out = make_voc_trainaug.main(["--data_path", str(tmp_path), "--sbd_path", str(tmp_path / "benchmark_RELEASE")])
    assert out == voc / "ImageSets" / "Segmentation" / "trainaug.txt" and len(out.read_text().split()) == 9
    assert len(build_dataset("voc", "train", 24, data_path=str(tmp_path))) == 9


def test_augmentation_is_the_same_after_a_mid_epoch_resume(voc_base: Path) -> None:
    from utils.train import EpochSampler, make_loader

    dataset = build_dataset("voc", "train", 24, data_path=str(voc_base / "VOCdevkit"),
                            sbd_path=str(voc_base / "benchmark_RELEASE"))

    def views(start: int) -> dict[int, torch.Tensor]:
        sampler = EpochSampler(len(dataset), seed=0, epoch=3, start=start)
        loader = make_loader(dataset, 1, 2, sampler, seed=3, drop_last=False)
        return {int(b["index"][0]): b["image"][0] for b in loader}

    full, resumed = views(0), views(3)  # an odd start sends each batch to the other worker
    assert len(resumed) == 6
    assert dataset.augmentation == ("random_crop", "hflip")
    for index, image in resumed.items():
        torch.testing.assert_close(image, full[index])
    # Crops and flips do vary from sample to sample and pass to pass.
    torch.manual_seed(0)
    assert len({tuple(dataset[2]["image"][0, 0, :3].tolist()) for _ in range(8)}) > 1


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no JPEGImages folder"):
        build_dataset("voc", "val", 32, data_path=str(tmp_path))
    voc = write_voc(tmp_path, trainaug_txt=True)
    (voc / "SegmentationObject" / "2008_000001.png").unlink()
    with pytest.raises(UserError, match=r"1 of 3 VOC val SegmentationObject masks are listed but absent .*2008_000001.png"):
        build_dataset("voc", "val", 32, data_path=str(voc))
    (voc / "JPEGImages" / "2009_000002.jpg").unlink()
    with pytest.raises(UserError, match=r"1 of 9 VOC train images are listed but absent .*2009_000002.jpg"):
        build_dataset("voc", "train", 32, data_path=str(voc))
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n")
    with pytest.raises(UserError, match="VOC val list .* is empty"):
        build_dataset("voc", "val", 32, data_path=str(voc))


def test_unreadable_mask_drops_its_sample(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    (voc / "SegmentationClass" / "2008_000002.png").write_bytes(b"\x89PNG broken")
    dataset = build_dataset("voc", "val", 32, 30, str(voc))
    assert list(dataset.ids) == ["2008_000000", "2008_000001"]
    with pytest.raises(UserError, match=r"1 of 3 VOC val SegmentationClass masks cannot be read .*--strict_data"):
        build_dataset("voc", "val", 32, 30, str(voc), strict=True)
