"""FBMS-59 for unsupervised single-object discovery (docs/video_evaluation.md).

Layout (``root`` = the prepared ``FBMS_clean`` folder): ``JPEGImages/<seq>/00001.jpg, ...`` (the
frames renamed 1-based in order) and ``Annotations/<seq>/<NNNNN>.png``: binary masks (all objects
merged, 0/255) for the sparse annotated frames only, named by frame number so that a mask pairs
with the frame of the same name. Only annotated frames are scored.

Splits: ``test`` = the 30 test sequences (every one must be present), ``all`` = every sequence
folder under ``Annotations``.
"""
from __future__ import annotations

import os

from datasets.video_folders import ForegroundSequences, resolve_root, subfolders
from utils.errors import UserError

TEST_SEQUENCES: tuple[str, ...] = (
    "camel01", "cars1", "cars10", "cars4", "cars5", "cats01", "cats03", "cats06", "dogs01", "dogs02", "farm01",
    "giraffes01", "goats01", "horses02", "horses04", "horses05", "lion01", "marple12", "marple2", "marple4",
    "marple6", "marple7", "marple9", "people03", "people1", "people2", "rabbits02", "rabbits03", "rabbits04", "tennis",
)
SPLITS: tuple[str, ...] = ("test", "all")


class FbmsSequences(ForegroundSequences):
    """The FBMS-59 sequences of one split with their sparse merged foreground masks."""

    dataset = "fbms"
    hint = "--data_path must be the prepared FBMS folder holding JPEGImages/<seq>/ and Annotations/<seq>/"

    def __init__(self, root: str | os.PathLike, split: str = "test") -> None:
        root = resolve_root(root)
        if split not in SPLITS:
            raise UserError(f"FBMS-59 has no split {split!r}; use --split test (30 sequences) or all")
        image_dir, gt_dir = root / "JPEGImages", root / "Annotations"
        for folder in (image_dir, gt_dir):
            if not folder.is_dir():
                raise UserError(f"{root} has no {folder.name}/; {self.hint}")
        present = subfolders(gt_dir)
        if split == "test":
            missing = [s for s in TEST_SEQUENCES if s not in present]
            if missing:
                raise UserError(f"{len(missing)} FBMS-59 test sequences lack {gt_dir}/<seq>/, e.g. {missing[0]!r}; "
                                "prepare all 30, or use --split all to score the sequences present")
            sequences = list(TEST_SEQUENCES)
        else:
            sequences = present
        if not sequences:
            raise UserError(f"{gt_dir} holds no sequence folder; {self.hint}")
        super().__init__(image_dir, gt_dir, sequences)
