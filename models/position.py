"""Soft position embedding of Slot Attention (docs/methods/slot_attention.md)."""
from __future__ import annotations

import torch
from torch import nn


def position_grid(height: int, width: int) -> torch.Tensor:
    """The 4-channel grid ``(y, x, 1 - y, 1 - x)`` with ``linspace(0, 1)`` per axis: [H, W, 4]."""
    ys = torch.linspace(0.0, 1.0, height)
    xs = torch.linspace(0.0, 1.0, width)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([y, x, 1.0 - y, 1.0 - x], dim=-1)


class SoftPositionEmbed(nn.Module):
    """Adds a learned projection (``Linear(4 -> C)`` with bias) of the position grid to [B, C, H, W] maps.

    The encoder and the decoder each own one (different grid sizes, separate projections).
    """

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, channels)
        # Not a parameter and rebuilt from the size: kept out of checkpoints.
        self.register_buffer("grid", position_grid(height, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(self.grid.shape[:2]):
            raise ValueError(f"feature map {tuple(x.shape[-2:])} does not match the grid {tuple(self.grid.shape[:2])}")
        embedding = self.proj(self.grid).permute(2, 0, 1)  # [C, H, W]
        return x + embedding.to(x.dtype)


def resample_grid_embedding(embedding: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize a learned position embedding ``[1, h*w, C]`` (no prefix tokens) to ``new_grid``.

    Bicubic with antialiasing, computed in float32: how FT-DINOSAUR's high-resolution stage moves
    its decoder embedding from 16x16 to 37x37 (docs/methods/ftdinosaur.md). ``old_grid`` defaults
    to the square grid of ``h*w`` positions.
    """
    import torch.nn.functional as F

    if embedding.ndim != 3 or embedding.shape[0] != 1:
        raise ValueError(f"expected an embedding [1, N, C], got {tuple(embedding.shape)}")
    n, c = embedding.shape[1], embedding.shape[2]
    if old_grid is None:
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"{n} positions are not a square grid; pass old_grid")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"old grid {old_grid} does not hold {n} positions")
    if tuple(new_grid) == tuple(old_grid):
        return embedding.clone()
    grid = embedding.float().reshape(1, old_grid[0], old_grid[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], c).to(embedding.dtype)
