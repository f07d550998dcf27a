"""FBMS-59 for unsupervised single-object discovery (docs/video_evaluation.md).

Layout (``root`` = the prepared ``FBMS_clean`` folder): ``JPEGImages/<seq>/00001.jpg, ...`` (the
frames renamed 1-based in order) and ``Annotations/<seq>/<NNNNN>.png``: binary masks (all objects
merged, 0/255) for the sparse annotated frames only, named by frame number so that a mask pairs
with the frame of the same name. Only annotated frames are scored.

Splits: ``test`` = the 30 test sequences (every one must be present), ``all`` = every sequence
folder under ``Annotations``. ``scripts/prepare_fbms.py`` builds this layout from the release
(:func:`frame_number`, :func:`ground_truth_files` and :func:`foreground_from_grey` below).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from datasets.video_folders import ForegroundSequences, resolve_root, subfolders
from ground.errors import UserError

TEST_SEQUENCES: tuple[str, ...] = (
    "camel01", "cars1", "cars10", "cars4", "cars5", "cats01", "cats03", "cats06", "dogs01", "dogs02", "farm01",
    "giraffes01", "goats01", "horses02", "horses04", "horses05", "lion01", "marple12", "marple2", "marple4",
    "marple6", "marple7", "marple9", "people03", "people1", "people2", "rabbits02", "rabbits03", "rabbits04", "tennis",
)
SPLITS: tuple[str, ...] = ("test", "all")
# Grey-level thresholds (of grey / 255) that turn the released masks into one foreground; two
# sequences need their own (the usual FBMS preparation's values).
DEFAULT_THRESHOLD = 0.1
THRESHOLDS: dict[str, float] = {"marple7": 0.05, "marple2": 0.4}


def frame_number(stem: str, sequence: str) -> int:
    """The frame number in a release file name: the first digit run after the sequence name
    (``cars1_0020_gt`` -> 20, ``tennis000`` -> 0), else the last digit run in the name."""
    rest = stem[len(sequence):] if stem.startswith(sequence) else None
    digits = re.findall(r"\d+", rest) if rest is not None else []
    if not digits:
        digits = re.findall(r"\d+", stem)[-1:]
    if not digits:
        raise ValueError(f"no frame number in {stem!r}")
    return int(digits[0])


def ground_truth_files(folder: Path) -> tuple[list[Path], bool]:
    """The mask files of a release ``GroundTruth/`` folder and whether they are colour ``.ppm``
    (white = background; ``PROB`` files skipped) rather than grey ``.pgm`` (black = background)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    ppm = [p for p in files if p.suffix.lower() == ".ppm" and "PROB" not in p.name]
    if ppm:
        return ppm, True
    return [p for p in files if p.suffix.lower() == ".pgm"], False


def foreground_from_grey(grey: np.ndarray, from_ppm: bool, sequence: str) -> np.ndarray:
    """Merged foreground bool [H, W] of a release mask converted to grey uint8 [H, W]: for
    ``.ppm`` masks white (> 0.99) is background; then grey / 255 > the sequence's threshold."""
    value = grey.astype(np.float64) / 255.0
    if from_ppm:
        value[value > 0.99] = 0.0
    return value > THRESHOLDS.get(sequence, DEFAULT_THRESHOLD)


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
