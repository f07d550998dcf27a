"""scripts/download_movi.py on a fake in-memory dataset with the TFDS MOVi record structure."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from datasets import build_dataset
from ground.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import download_movi  # noqa: E402


def fake_records(num_videos: int = 2, frames: int = 4, size: int = 8) -> list[dict]:
    """Numpy records as ``tfds.as_numpy`` yields them for movi_c/128x128 (fewer frames, smaller)."""
    rng = np.random.default_rng(0)
    records = []
    for v in range(num_videos):
        segmentations = np.zeros((frames, size, size, 1), dtype=np.uint8)
        segmentations[:, 1:4, 1:4] = 1
        segmentations[:, 5:8, 2:6] = 4
        segmentations[1, 0, 0] = 2
        records.append({
            "video": rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8),
            "segmentations": segmentations,
            "depth": rng.random((frames, size, size, 1)).astype(np.float32),
            "forward_flow": np.zeros((frames, size, size, 2), dtype=np.uint16),
            "metadata": {"video_name": f"{v}".encode(), "num_frames": frames, "height": size, "width": size},
            "instances": {"category": np.array([3, 7]), "visibility": np.ones((2, frames), dtype=np.uint16)},
            "camera": {"focal_length": np.float32(35.0)},
        })
    return records


def test_export_writes_the_layout_the_loader_reads(tmp_path: Path) -> None:
    records = fake_records()
    level = tmp_path / "MOVi" / "c"
    assert download_movi.export(records, level / "train", write_masks=False) == (2, 0)
    assert download_movi.export(records, level / "validation", write_masks=True, max_num_objs=5) == (2, 0)
    assert sorted(p.name for p in (level / "train" / "00000000").iterdir())[:2] == ["00000000_image.png", "00000001_image.png"]
    assert len(list((level / "validation" / "00000001").glob("*_mask_*.png"))) == 4 * 5
    val = build_dataset("movi", "val", 8, 8, str(level))
    assert len(val) == 8
    for index, frame in enumerate(val.frames):
        video, name = frame.split("/")
        expected = records[int(video)]["segmentations"][int(name[:8]), ..., 0]
        np.testing.assert_array_equal(val[index]["mask_instance"].numpy(), expected)
        image = val[index]["image"].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(image * 255, records[int(video)]["video"][int(name[:8])], atol=1e-3)
    assert len(build_dataset("movi", "train", 8, data_path=str(level))) == 2 * 4  # all 4 frames (< 9)
    # A second run skips complete videos; --overwrite rewrites them.
    assert download_movi.export(records, level / "validation", write_masks=True, max_num_objs=5) == (0, 2)
    assert download_movi.export(records, level / "validation", True, 5, overwrite=True) == (2, 0)
    with pytest.raises(UserError, match="segment id 4 >= --max_num_objs 3"):
        download_movi.export(records, tmp_path / "x", write_masks=True, max_num_objs=3)


def test_main_through_a_fake_tfds_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {}

    def load(name: str, data_dir: str, split: str, shuffle_files: bool) -> str:
        calls.update(name=name, data_dir=data_dir, split=split)
        return "dataset"

    fake = types.ModuleType("tensorflow_datasets")
    fake.load = load
    fake.as_numpy = lambda dataset: iter(fake_records(num_videos=3))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    result = download_movi.main(["--level", "e", "--split", "validation", "--out_path", str(tmp_path),
                                 "--max_videos", "2", "--max_num_objs", "6"])
    assert calls == {"name": "movi_e/128x128:1.0.0", "data_dir": "gs://kubric-public/tfds", "split": "validation"}
    assert result["written"] == 2 and sorted(p.name for p in (tmp_path / "e" / "validation").iterdir()) == ["00000000", "00000001"]


def test_without_tfds_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install tensorflow tensorflow-datasets"):
        download_movi.main(["--out_path", str(tmp_path)])
