"""VIP (Video Instance-level Parsing) for human-part propagation (docs/video_evaluation.md).

Layout (``root`` = the ``VIP_Fine`` folder): ``Images/<video>/<frame>.jpg``,
``Annotations/Category_ids/<video>/<frame>.png`` (single-channel class ids 0-19; other values are
ignored when scoring) and ``lists/<split>_videos.txt`` (one video per line; its last path
component is the video folder name). The first frame of every video must be annotated.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from datasets.video_folders import list_files, read_label_ids, resolve_root, stack_frames
from ground.errors import UserError

NUM_CLASSES = 20
CLASS_NAMES: tuple[str, ...] = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)
HINT = "--data_path must be the VIP_Fine folder holding Images/, Annotations/Category_ids/ and lists/"


class VipVideos:
    """The VIP videos of one split: frames and class-id maps of the annotated frames."""

    dataset = "vip"

    def __init__(self, root: str | os.PathLike, split: str = "val") -> None:
        self.root = resolve_root(root)
        self.image_dir = self.root / "Images"
        self.gt_dir = self.root / "Annotations" / "Category_ids"
        list_file = self.root / "lists" / f"{split}_videos.txt"
        for path in (self.image_dir, self.gt_dir, list_file):
            if not path.exists():
                raise UserError(f"{path} not found; {HINT}")
        self.sequences = [Path(line.strip().rstrip("/")).name for line in list_file.read_text().splitlines()
                          if line.strip()]
        if not self.sequences:
            raise UserError(f"{list_file} lists no video")
        self._frames: dict[str, dict[str, Path]] = {}
        self._gt: dict[str, dict[str, Path]] = {}
        for video in self.sequences:
            frames = list_files(self.image_dir / video, (".jpg", ".jpeg", ".png"))
            if not frames:
                raise UserError(f"no frames in {self.image_dir / video}; {HINT}")
            gt = list_files(self.gt_dir / video, (".png",))
            first = next(iter(frames))
            if first not in gt:
                raise UserError(f"the first frame {first} of {video} has no {self.gt_dir / video / (first + '.png')}; "
                                "propagation starts from it")
            self._frames[video] = frames
            self._gt[video] = {name: gt[name] for name in frames if name in gt}

    def frame_names(self, video: str) -> list[str]:
        """Frame ids (file stems) in order; frame 0 is the annotated reference."""
        return list(self._frames[video])

    def load_frames(self, video: str) -> np.ndarray:
        """RGB frames float32 [T, 3, H, W] in [0, 1]."""
        return stack_frames(list(self._frames[video].values()))

    def annotated_names(self, video: str) -> list[str]:
        """Frame ids with a class-id map, in frame order."""
        return list(self._gt[video])

    def load_parts(self, video: str, name: str) -> np.ndarray:
        """Class ids int64 [H, W] of frame ``name``."""
        return read_label_ids(self._gt[video][name])
