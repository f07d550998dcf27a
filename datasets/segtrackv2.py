"""SegTrack-v2 for unsupervised single-object discovery (docs/video_evaluation.md).

Layout (``root`` = the SegTrackv2 folder as downloaded): ``JPEGImages/<seq>/<frame>.{png,bmp,jpg}``
and ``GroundTruth/<seq>/`` (``Annotations/<seq>/`` is accepted too) with one binary mask per frame,
or, for sequences with several objects, per-object sub-folders ``1/``, ``2/``, ... . All objects
are merged into one foreground. Every sub-folder of ``JPEGImages`` is a sequence (14 in the
release).
"""
from __future__ import annotations

import os

from datasets.video_folders import ForegroundSequences, resolve_root, subfolders
from ground.errors import UserError

SPLITS: tuple[str, ...] = ("all",)


class SegTrackV2Sequences(ForegroundSequences):
    """The SegTrack-v2 sequences with their merged foreground masks."""

    dataset = "segtrackv2"
    hint = "--data_path must be the SegTrackv2 folder holding JPEGImages/<seq>/ and GroundTruth/<seq>/"

    def __init__(self, root: str | os.PathLike, split: str = "all") -> None:
        root = resolve_root(root)
        if split not in SPLITS:
            raise UserError(f"SegTrack-v2 has no split {split!r}; use --split all (every sequence)")
        image_dir = root / "JPEGImages"
        gt_dir = next((root / d for d in ("GroundTruth", "Annotations") if (root / d).is_dir()), None)
        if not image_dir.is_dir() or gt_dir is None:
            missing = "JPEGImages/" if not image_dir.is_dir() else "GroundTruth/ (or Annotations/)"
            raise UserError(f"{root} has no {missing}; {self.hint}")
        sequences = subfolders(image_dir)
        if not sequences:
            raise UserError(f"{image_dir} holds no sequence folder; {self.hint}")
        super().__init__(image_dir, gt_dir, sequences)
