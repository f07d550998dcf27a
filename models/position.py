"""Soft position embedding of Slot Attention (spec sa_slate_gnm.md 1.1, pitfall 3)."""
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
