"""Trivial segmentations that every model should beat: everything in one slot, a fixed grid."""
from __future__ import annotations

import math

import torch


def grid_shape(num_slots: int) -> tuple[int, int]:
    """Rows x columns of the most square grid with at least ``num_slots`` cells."""
    rows = max(1, round(math.sqrt(num_slots)))
    return rows, math.ceil(num_slots / rows)


def baseline_labels(name: str, shape: torch.Size | tuple[int, ...], num_slots: int) -> torch.Tensor:
    """Label maps [B, H, W] of baseline ``one_slot`` (all zeros) or ``grid`` (fixed cells)."""
    b, h, w = shape
    if name == "one_slot":
        return torch.zeros(b, h, w, dtype=torch.long)
    if name == "grid":
        rows, cols = grid_shape(num_slots)
        r = torch.arange(h) * rows // h
        c = torch.arange(w) * cols // w
        return (r[:, None] * cols + c[None, :]).expand(b, h, w).clone()
    raise ValueError(f"unknown baseline {name!r}")
