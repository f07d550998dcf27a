"""The PASCAL VOC / DAVIS colour palette (label PNGs written by datasets and pictures by utils)."""
from __future__ import annotations

import numpy as np


def palette(num_colors: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS palette [num_colors, 3] uint8 (0 = black background)."""
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for i in range(num_colors):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors[i] = (r, g, b)
    return colors
