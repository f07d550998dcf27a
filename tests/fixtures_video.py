"""On-disk video fixtures written by the tests (DAVIS layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datasets.davis import save_indexed_png
from utils.visualize import palette


def write_davis_fixture(root: Path, sequences: dict[str, np.ndarray]) -> None:
    """A DAVIS-layout folder: per sequence frames [T, H, W, 3] uint8 derived from label maps."""
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    colours = palette(256)
    for seq, labels in sequences.items():
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        for t, lab in enumerate(labels):
            Image.fromarray(colours[lab]).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", quality=95)
            save_indexed_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab)
