"""MOVi loader on a miniature folder in SPOT's PNG layout: frame sampling and mask assembly."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets import build_dataset
from datasets.movi import SAMPLING_FILE
from real_data_fixtures import movi_labels, write_movi
from ground.errors import UserError


@pytest.fixture(scope="module")
def movi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movi(tmp_path_factory.mktemp("movi") / "MOVi" / "c")


def test_frame_sampling_is_seeded_and_recorded(movi: Path, tmp_path: Path) -> None:
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir(), run_b.mkdir()
    a = build_dataset("movi", "train", 24, data_path=str(movi), seed=3, run_dir=run_a)
    b = build_dataset("movi", "train", 24, data_path=str(movi), seed=3, run_dir=run_b)
    other = build_dataset("movi", "train", 24, data_path=str(movi), seed=4)
    assert len(a) == 3 * 9
    videos = [f.split("/")[0] for f in a.frames]
    assert [videos.count(v) for v in sorted(set(videos))] == [9, 9, 9]
    assert len(set(a.frames)) == 27
    assert list(a.frames) == list(b.frames) and list(a.frames) != list(other.frames)
    sample = a[0]
    assert set(sample) == {"image", "index"} and sample["image"].shape == (3, 24, 24)
    recorded = json.loads((run_a / SAMPLING_FILE).read_text())
    assert recorded["frames"] == list(a.frames) and recorded["seed"] == 3
    assert not Path(SAMPLING_FILE).exists()  # never the working directory


def test_sampling_of_a_video_ignores_the_others(movi: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(movi, copy)
    shutil.rmtree(copy / "train" / "00000001")
    full = build_dataset("movi", "train", 24, data_path=str(movi), seed=1)
    part = build_dataset("movi", "train", 24, data_path=str(copy), seed=1)
    assert [f for f in full.frames if not f.startswith("00000001/")] == list(part.frames)


def test_predefined_frames_are_reused(movi: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    first.mkdir(), second.mkdir()
    stage1 = build_dataset("movi", "train", 24, data_path=str(movi), seed=5, run_dir=first)
    stage2 = build_dataset("movi", "train", 24, data_path=str(movi), seed=99, run_dir=second,
                           predefined_movi_json_paths=str(first / SAMPLING_FILE))
    assert list(stage2.frames) == list(stage1.frames)
    assert json.loads((second / SAMPLING_FILE).read_text())["frames"] == list(stage1.frames)
    # SPOT's own file: a plain list of frame paths, here from another machine's folder.
    spot_file = tmp_path / "spot.json"
    spot_file.write_text(json.dumps([f"/elsewhere/MOVi/c/train/{f}" for f in stage1.frames[:5]]))
    reused = build_dataset("movi", "train", 24, data_path=str(movi), predefined_movi_json_paths=str(spot_file))
    assert list(reused.frames) == list(stage1.frames[:5])
    spot_file.write_text(json.dumps(["00000000/00000099_image.png"]))
    with pytest.raises(UserError, match=r"1 of 1 MOVi train frames are listed but absent .*00000099_image.png"):
        build_dataset("movi", "train", 24, data_path=str(movi), predefined_movi_json_paths=str(spot_file))
    with pytest.raises(UserError, match="not found; --predefined_movi_json_paths"):
        build_dataset("movi", "train", 24, data_path=str(movi), predefined_movi_json_paths=str(tmp_path / "no.json"))


@pytest.mark.parametrize("mask_size", [16, 32])
def test_val_mask_assembly(movi: Path, mask_size: int) -> None:
    dataset = build_dataset("movi", "val", 24, mask_size, str(movi))
    assert len(dataset) == 2 * 3  # every frame of every validation video
    for index, frame in enumerate(dataset.frames):
        video, name = frame.split("/")
        expected = movi_labels(16, int(video), int(name[:8]))
        scale = mask_size // 16
        expected = expected.repeat(scale, 0).repeat(scale, 1)  # nearest upsampling
        sample = dataset[index]
        np.testing.assert_array_equal(sample["mask_instance"].numpy(), expected)
        assert not sample["mask_class"].any() and not sample["mask_ignore"].any()
        assert sample["image"].shape == (3, 24, 24)


def test_layout_errors(movi: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="point --data_path at one level: .*MOVi/c"):
        build_dataset("movi", "val", 24, data_path=str(movi.parent))
    copy = tmp_path / "c"
    shutil.copytree(movi, copy)
    for mask in (copy / "validation" / "00000001").glob("00000002_mask_*.png"):
        mask.unlink()
    with pytest.raises(UserError, match=r"1 MOVi val frames have no mask PNGs \(e.g. .*00000002_mask_00.png\)"):
        build_dataset("movi", "val", 24, data_path=str(copy))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="MOVi train .* is empty"):
        build_dataset("movi", "train", 24, data_path=str(empty))
