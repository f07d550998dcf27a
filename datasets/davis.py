"""DAVIS 2017 sequences for video evaluation (label propagation, unsupervised discovery).

Layout (``root`` = the DAVIS folder): ``JPEGImages/480p/<seq>/<frame>.jpg``,
``Annotations/480p/<seq>/<frame>.png`` (indexed palette PNGs: 0 = background, k = object k,
255 = void) and ``ImageSets/2017/<split>.txt`` (one sequence name per line; its order is the
evaluation order). Nothing is ever written into the dataset folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ground.errors import UserError
from ground.palette import palette

VOID_LABEL = 255


class DavisSequences:
    """Read-only access to the sequences of one DAVIS split."""

    def __init__(self, root: str | os.PathLike, split: str = "val", resolution: str = "480p") -> None:
        self.root = Path(root)
        self.image_dir = self.root / "JPEGImages" / resolution
        self.annotation_dir = self.root / "Annotations" / resolution
        list_file = self.root / "ImageSets" / "2017" / f"{split}.txt"
        for path in (self.image_dir, self.annotation_dir, list_file):
            if not path.exists():
                raise UserError(
                    f"{path} not found: --davis_path must be the DAVIS folder holding JPEGImages/{resolution}, "
                    f"Annotations/{resolution} and ImageSets/2017/{split}.txt"
                )
        self.sequences = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not self.sequences:
            raise UserError(f"{list_file} lists no sequence")
        for seq in self.sequences:
            if not (self.image_dir / seq).is_dir():
                raise UserError(f"sequence {seq!r} of {list_file} has no folder {self.image_dir / seq}")
            if not self.frame_names(seq):
                raise UserError(f"no .jpg frames in {self.image_dir / seq}")

    def frame_names(self, seq: str) -> list[str]:
        """Frame ids (file stems) of a sequence, sorted."""
        return sorted(p.stem for p in (self.image_dir / seq).glob("*.jpg"))

    def load_frames(self, seq: str) -> np.ndarray:
        """RGB frames float32 [T, 3, H, W] in [0, 1]."""
        frames = []
        for name in self.frame_names(seq):
            with Image.open(self.image_dir / seq / f"{name}.jpg") as img:
                frames.append(np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0)
        return np.stack(frames)

    def load_annotation(self, seq: str, name: str) -> np.ndarray:
        """Palette indices uint8 [H, W] of one annotation PNG (must be an indexed PNG)."""
        path = self.annotation_dir / seq / f"{name}.png"
        if not path.is_file():
            raise UserError(f"annotation {path} not found")
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise UserError(f"{path} is a {img.mode} image; DAVIS annotations are indexed (palette) PNGs")
            return np.asarray(img, dtype=np.uint8)

    def load_annotations(self, seq: str) -> tuple[np.ndarray, list[str]]:
        """All annotations of a sequence [T, H, W] uint8 and their frame ids.

        Frames are those with an annotation PNG (all of them for DAVIS val).
        """
        names = sorted(p.stem for p in (self.annotation_dir / seq).glob("*.png"))
        if not names:
            raise UserError(f"no annotation PNGs in {self.annotation_dir / seq}")
        return np.stack([self.load_annotation(seq, n) for n in names]), names


def split_void(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label maps -> (labels with void set to 0, void mask), as the official evaluator does."""
    void = labels == VOID_LABEL
    return np.where(void, 0, labels), void


def save_indexed_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a label map [H, W] (values 0..255) as an indexed PNG with the DAVIS palette."""
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("labels must lie in 0..255 for an indexed PNG")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette(256).reshape(-1).tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def read_indexed_png(path: str | os.PathLike) -> np.ndarray:
    """Palette indices of an indexed PNG (the official evaluator's reading)."""
    with Image.open(path) as img:
        return np.asarray(img, dtype=np.uint8)
