"""GNM rendering (docs/methods/gnm.md): ``z_where`` decoding, spatial-transformer pasting
of per-cell glimpses, depth-ordered compositing over the background, and the mask read-out (3.7).

Coordinates are those of ``F.affine_grid``: x and y in [-1, 1] over the image, ``align_corners=False``.
A glimpse of size ``(w, h)`` (fractions of the image side) centred at ``(cx, cy)`` covers
``[cx - w, cx + w] x [cy - h, cy + h]`` in these coordinates, i.e. ``w`` times the image width.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALPHA_EPS = 1e-15  # clamp of the summed alpha map (docs/methods/gnm.md)
IMPORTANCE_EPS = 1e-15  # keeps the depth normalisation finite where no object is present


def straight_through_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x.clamp(low, high)`` in the forward pass, identity gradient in the backward pass."""
    return x + (x.clamp(low, high) - x).detach()


def cell_offsets(grid_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Column and row index of every cell, raster order: [G*G, 2] as (x = column, y = row)."""
    index = torch.arange(grid_size, device=device)
    rows, cols = torch.meshgrid(index, index, indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1).float()


def decode_where(z_where: torch.Tensor, grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``z_where`` [B, N, 4] (scale, ratio, shift x, shift y) -> (size [B, N, 2], centre [B, N, 2]).

    ``s = sigmoid(scale)``, ``r = exp(ratio)``, size = ``(s / sqrt(r), s * sqrt(r))`` as (width, height);
    centre = ``(2 / G) (cell + 0.5 + tanh(shift)) - 1``, so an object can move up to one cell away.
    """
    s = torch.sigmoid(z_where[..., 0])
    sqrt_r = torch.exp(0.5 * z_where[..., 1])
    size = torch.stack([s / sqrt_r, s * sqrt_r], dim=-1)
    offsets = cell_offsets(grid_size, z_where.device)
    centre = (2.0 / grid_size) * (offsets + 0.5 + torch.tanh(z_where[..., 2:4])) - 1.0
    return size, centre


def paste(glimpses: torch.Tensor, size: torch.Tensor, centre: torch.Tensor, image_size: int) -> torch.Tensor:
    """Inverse spatial transformer: glimpses [B, N, C, g, g] -> full-resolution layers [B, N, C, H, H].

    Outside its box a layer is zero (``padding_mode="zeros"``), so alpha vanishes there.
    """
    b, n, c, g, _ = glimpses.shape
    size, centre = size.reshape(b * n, 2), centre.reshape(b * n, 2)
    # Output pixel p maps to glimpse coordinate (p - centre) / size.
    theta = torch.zeros(b * n, 2, 3, device=glimpses.device, dtype=glimpses.dtype)
    theta[:, 0, 0] = 1.0 / size[:, 0]
    theta[:, 1, 1] = 1.0 / size[:, 1]
    theta[:, :, 2] = -centre / size
    grid = F.affine_grid(theta, [b * n, c, image_size, image_size], align_corners=False)
    full = F.grid_sample(glimpses.reshape(b * n, c, g, g), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return full.view(b, n, c, image_size, image_size)


def composite(
    rgb_full: torch.Tensor,
    alpha_full: torch.Tensor,
    z_pres: torch.Tensor,
    z_depth: torch.Tensor,
    background: torch.Tensor,
    force_alpha: float | None = None,
    premultiplied: bool = False,
) -> dict[str, torch.Tensor]:
    """Depth-ordered compositing of the pasted objects over the background (overlap mode; docs/methods/gnm.md).

    rgb_full [B, N, 3, H, W], alpha_full [B, N, 1, H, W] (glimpse alpha, pasted), z_pres [B, N],
    z_depth [B, N], background [B, 3, H, W]. ``force_alpha`` replaces the summed alpha map by a
    constant (the curriculum of the first steps). Returns ``image``, ``foreground``, ``alpha_map``
    [B, 1, H, W] and ``a_hat`` [B, N, 1, H, W] (alpha times presence: the masks, docs/methods/gnm.md#evaluation).
    ``premultiplied``: ``rgb_full`` is the pasted product alpha * rgb (GNM's official rendering),
    so it is weighted by the presence only, not by the pasted alpha again.
    """
    a_hat = alpha_full * z_pres[:, :, None, None, None]
    # A smaller depth is nearer: sigmoid(-depth) weights it up where objects overlap.
    importance = a_hat * torch.sigmoid(-z_depth)[:, :, None, None, None]
    importance = importance / (importance.sum(dim=1, keepdim=True) + IMPORTANCE_EPS)
    colour = rgb_full * z_pres[:, :, None, None, None] if premultiplied else a_hat * rgb_full
    foreground = (colour * importance).sum(dim=1)
    alpha_map = straight_through_clamp(a_hat.sum(dim=1), ALPHA_EPS, 1.0 - ALPHA_EPS)
    if force_alpha is not None:
        alpha_map = torch.full_like(alpha_map, force_alpha)
    image = foreground + (1.0 - alpha_map) * background
    return {"image": image, "foreground": foreground, "alpha_map": alpha_map, "a_hat": a_hat}


def masks_with_background(a_hat: torch.Tensor) -> torch.Tensor:
    """Per-cell masks [B, N, 1, H, W] -> [B, 1 + N, H, W] with the background channel first.

    As the official evaluator: background = ``1 - sum(cells)``, then argmax (overlaps go to the largest alpha, not
    to the nearest object). The background is floored at 0 and every channel divided by
    ``max(1, sum)`` so the result sums to one per pixel; neither changes the argmax.
    """
    cells = a_hat.squeeze(2)
    total = cells.sum(dim=1, keepdim=True)
    background = (1.0 - total).clamp(min=0.0)
    return torch.cat([background, cells], dim=1) / total.clamp(min=1.0)


def boxes_from_where(size: torch.Tensor, centre: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pixel boxes [..., 4] as (x0, y0, x1, y1) of the glimpses (for drawing)."""
    half = size * image_size / 2.0
    middle = (centre + 1.0) * image_size / 2.0
    return torch.cat([middle - half, middle + half], dim=-1)


def draw_boxes(
    images: torch.Tensor, boxes: torch.Tensor, keep: torch.Tensor, colour: tuple[float, float, float] = (1.0, 0.0, 0.0)
) -> torch.Tensor:
    """Draw 1-pixel rectangle outlines on images [B, 3, H, W] for boxes [B, N, 4] where keep [B, N] is true."""
    out = images.detach().float().cpu().clone()
    h, w = out.shape[-2:]
    col = torch.tensor(colour).view(3, 1)
    for i in range(out.shape[0]):
        for box in boxes[i][keep[i]].detach().cpu():
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
            x0, x1 = max(0, min(w - 1, x0)), max(0, min(w - 1, x1))
            y0, y1 = max(0, min(h - 1, y0)), max(0, min(h - 1, y1))
            out[i, :, y0, x0 : x1 + 1] = col
            out[i, :, y1, x0 : x1 + 1] = col
            out[i, :, y0 : y1 + 1, x0] = col
            out[i, :, y0 : y1 + 1, x1] = col
    return out


def num_upsamplings(size: int, name: str) -> int:
    """log2 of ``size``, which must be a power of two (a sub-pixel decoder doubles its side per stage)."""
    exponent = int(round(math.log2(size))) if size > 0 else -1
    if exponent < 0 or 2**exponent != size:
        raise ValueError(f"{name} {size} is not a power of two")
    return exponent
