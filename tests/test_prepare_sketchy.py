"""scripts/prepare_sketchy.py: decoded frames -> the processed layout, with the published splits and crops."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import build_dataset
from scripts import prepare_sketchy
from ground.errors import UserError


def coordinate_frame() -> Image.Image:
    """600 x 960 frame whose red channel is col // 4 and green channel row // 3 (position readable)."""
    rows, cols = np.mgrid[0:600, 0:960]
    return Image.fromarray(np.stack([cols // 4, rows // 3, np.zeros_like(rows)], axis=-1).astype(np.uint8))


def test_views_follow_the_published_crop_geometry() -> None:
    views = prepare_sketchy.views(coordinate_frame(), "fl")
    assert sorted(views) == ["c0", "c1", "c2", "c3", "c4", "c5", "full"]
    assert all(v.size == (128, 128) for v in views.values())

    def corner(name: str) -> tuple[int, int]:
        red, green, _ = np.asarray(views[name])[0, 0].astype(int)
        return red * 4, green * 3  # approximate (col, row) of the view's top-left pixel in the frame

    # fl pre-crop starts at row 71, col 144; full = cols 112:560 of it; c1 = top row, middle column (col 160);
    # c5 = bottom row (row 96), right column (col 320).
    for name, (col, row) in {"full": (144 + 112, 71), "c0": (144, 71), "c1": (144 + 160, 71),
                             "c5": (144 + 320, 71 + 96)}.items():
        got_col, got_row = corner(name)
        assert abs(got_col - col) <= 8 and abs(got_row - row) <= 6, (name, got_col, got_row)
    fr = prepare_sketchy.views(coordinate_frame(), "fr")
    assert abs(int(np.asarray(fr["c0"])[0, 0, 1]) * 3 - 91) <= 6  # fr pre-crops from row 91


def write_frames(root: Path, records: int, timesteps: int = 2) -> None:
    frame = coordinate_frame()
    for r in range(records):
        folder = root / f"record_{r:02d}"
        folder.mkdir(parents=True)
        for t in range(timesteps):
            for camera in ("fl", "fr"):
                frame.save(folder / f"{t}_{camera}.png")


def test_splits_numbering_and_the_loader(tmp_path: Path) -> None:
    write_frames(tmp_path / "frames", records=10)
    out = prepare_sketchy.main(["--frames", str(tmp_path / "frames"), "--out", str(tmp_path / "processed")])
    # 10 records: valid = the first, test = the second, train = the other 8; episodes numbered train, valid, test.
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"ep{i:06d}" for i in range(8)]
    assert [p.name for p in (out / "valid").iterdir()] == ["ep000008"]
    assert [p.name for p in (out / "test").iterdir()] == ["ep000009"]
    assert len(list((out / "train" / "ep000000").glob("*.png"))) == 2 * 14  # 2 timesteps x 2 cameras x 7 views
    train = build_dataset("sketchy", "train", 128, data_path=str(out))
    assert len(train) == 8 * 28 and train[0]["image"].shape == (3, 128, 128)
    assert len(build_dataset("sketchy", "val", 128, data_path=str(out))) == 28


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        prepare_sketchy.main(["--frames", str(tmp_path / "none"), "--out", str(tmp_path / "p")])
    write_frames(tmp_path / "few", records=3, timesteps=1)
    with pytest.raises(UserError, match="needs at least 10"):
        prepare_sketchy.main(["--frames", str(tmp_path / "few"), "--out", str(tmp_path / "p")])
    write_frames(tmp_path / "ok", records=10, timesteps=1)
    (tmp_path / "exists").mkdir()
    with pytest.raises(UserError, match="exists"):
        prepare_sketchy.main(["--frames", str(tmp_path / "ok"), "--out", str(tmp_path / "exists")])
