"""JHMDB for keypoint propagation (docs/video_evaluation.md).

Layout (``root`` = the JHMDB folder): ``Rename_Images/<action>/<video>/00001.png, ...`` (frames,
numbered from 1) and ``joint_positions/<action>/<video>/joint_positions.mat`` (MATLAB file whose
``pos_img`` holds the 1-based (x, y) image positions of 15 joints, shape [2, 15, T]).

Which videos are evaluated (``split``):
- ``split1`` / ``split2`` / ``split3``: the test videos (label 2) of the official split files
  ``splits/<action>_test_split<k>.txt`` (lines ``<video>.avi <1|2>``);
- or the path of a list file in the CRW/UVC format: one video per line, two columns (the frame
  folder and the ``.mat`` file, in either order). Only the last path components
  (``<action>/<video>``) are used, so lists written on another machine work under ``root``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from datasets.video_folders import resolve_root, stack_frames
from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

NUM_JOINTS = 15
SPLITS: tuple[str, ...] = ("split1", "split2", "split3")
HINT = "--data_path must be the JHMDB folder holding Rename_Images/<action>/<video>/ and joint_positions/"


def _official_split(root: Path, split: str) -> list[str]:
    files = sorted((root / "splits").glob(f"*_test_{split}.txt"))
    if not files:
        raise UserError(f"no split files {root / 'splits'}/<action>_test_{split}.txt; unpack JHMDB's splits "
                        "there, or pass --split a list file (CRW/UVC format)")
    videos = []
    for path in files:
        action = path.name[: -len(f"_test_{split}.txt")]
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[1] == "2":
                videos.append(f"{action}/{Path(fields[0]).stem}")
    return videos


def _list_file(path: Path) -> list[str]:
    videos = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        mats = [f for f in fields if f.endswith(".mat")]
        dirs = [f for f in fields if not f.endswith(".mat")]
        if len(fields) != 2 or len(mats) != 1:
            raise UserError(f"{path} line {number}: expected '<frame folder> <joint_positions.mat>' (either order)")
        frames = Path(dirs[0].rstrip("/"))
        videos.append(f"{frames.parent.name}/{frames.name}")
    return videos


class JhmdbVideos:
    """The JHMDB videos of one split: frames and 0-based joint positions."""

    dataset = "jhmdb"

    def __init__(self, root: str | os.PathLike, split: str = "split1") -> None:
        self.root = resolve_root(root)
        self.frame_dir, self.joint_dir = self.root / "Rename_Images", self.root / "joint_positions"
        for folder in (self.frame_dir, self.joint_dir):
            if not folder.is_dir():
                raise UserError(f"{self.root} has no {folder.name}/; {HINT}")
        if split in SPLITS:
            self.sequences = _official_split(self.root, split)
        elif Path(split).is_file():
            self.sequences = _list_file(Path(split))
        else:
            raise UserError(f"--split {split!r} is neither one of {list(SPLITS)} nor a list file")
        if not self.sequences:
            raise UserError(f"JHMDB split {split!r} lists no test video")
        for video in self.sequences:
            if not self._frame_paths(video):
                raise UserError(f"no .png frames in {self.frame_dir / video}; {HINT}")
            if not (self.joint_dir / video / "joint_positions.mat").is_file():
                raise UserError(f"{self.joint_dir / video / 'joint_positions.mat'} not found; {HINT}")

    def _frame_paths(self, video: str) -> list[Path]:
        folder = self.frame_dir / video
        if not folder.is_dir():
            return []
        paths = [p for p in folder.glob("*.png") if p.stem.isdigit()]
        return sorted(paths, key=lambda p: int(p.stem))

    def frame_names(self, video: str) -> list[str]:
        """Frame ids (file stems, 1-based numbers) in order."""
        return [p.stem for p in self._frame_paths(video)]

    def load_frames(self, video: str) -> np.ndarray:
        """RGB frames float32 [T, 3, H, W] in [0, 1]."""
        return stack_frames(self._frame_paths(video))

    def load_joints(self, video: str) -> np.ndarray:
        """0-based (x, y) joint positions float64 [T, 15, 2] (``pos_img`` minus 1)."""
        path = self.joint_dir / video / "joint_positions.mat"
        try:
            mat = scipy.io.loadmat(path)
        except Exception as err:  # scipy raises several types for corrupt/foreign files
            raise UserError(f"cannot read {path} as a MATLAB file: {err}") from None
        pos = mat.get("pos_img")
        if pos is None or pos.ndim != 3 or pos.shape[:2] != (2, NUM_JOINTS):
            raise UserError(f"{path} has no 'pos_img' array of shape [2, {NUM_JOINTS}, T]")
        return pos.transpose(2, 1, 0).astype(np.float64) - 1.0
