"""Mask visualisations: coloured label maps, overlays and image grids written as PNG."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


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


_PALETTE = palette()


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """Label map [H, W] (int) -> RGB float [3, H, W] in [0, 1]; label i gets palette colour i+1."""
    rgb = torch.from_numpy(_PALETTE[(labels.cpu().numpy() + 1) % 256]).float() / 255
    return rgb.permute(2, 0, 1)


def overlay(image: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5, background: bool = False) -> torch.Tensor:
    """Blend a label map [h, w] (resized with nearest to the image) over an image [3, H, W].

    With ``background=True`` label 0 is ground-truth background: left unblended, and object i
    gets the same colour as slot i - 1 would.
    """
    labels = _resize_labels(labels, image.shape[-2:])
    blended = (1 - alpha) * image.cpu() + alpha * colorize(labels - 1 if background else labels)
    if background:
        blended = torch.where(labels == 0, image.cpu(), blended)
    return blended


def _resize_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.cpu()
    return F.interpolate(labels[None, None].float().cpu(), size=tuple(size), mode="nearest")[0, 0].long()


def save_mask_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    rows: dict[str, torch.Tensor],
    max_images: int = 8,
    ground_truth_rows: tuple[str, ...] = ("ground truth",),
    min_tile: int = 128,
) -> None:
    """Write a PNG with one column per image: the image, then one overlay per label-map row.

    images [B, 3, H, W] in [0, 1]; rows maps a name (e.g. "ground truth", "decoder masks") to a
    label map [B, h, w]. The row order is the dict order; rows named in ``ground_truth_rows``
    treat 0 as background. Small images are enlarged (nearest) so that a tile is at least
    ``min_tile`` pixels high.
    """
    n = min(max_images, images.shape[0])
    scale = max(1, -(-min_tile // images.shape[-2]))
    tiles = []
    for i in range(n):
        image = images[i].detach().float().cpu().clamp(0, 1)
        if scale > 1:
            image = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0]
        column = [image] + [
            overlay(image, labels[i].detach(), background=name in ground_truth_rows) for name, labels in rows.items()
        ]
        tiles.append(torch.cat(column, dim=1))  # stack vertically
    grid = torch.cat(tiles, dim=2)  # images side by side
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


def segmentation_maps(slot_masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and processed label maps from soft masks [B, K, H, W] (the seed's ``sa_segment``).

    Raw: argmax over slots (0..K-1). Processed: the same, but -1 where no slot reaches
    ``threshold`` (pixels spread over several slots), drawn black.
    """
    confidence, raw = slot_masks.max(dim=1)
    processed = torch.where(confidence >= threshold, raw, torch.full_like(raw, -1))
    return raw, processed


def save_prediction_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    visuals: dict[str, torch.Tensor],
    max_images: int = 8,
    threshold: float = 0.5,
    min_tile: int = 64,
) -> None:
    """Write the seed's prediction picture: one row per image.

    Columns: original, reconstruction (if ``visuals`` has ``reconstruction`` [B, 3, H, W]),
    raw segmentation, processed segmentation (see :func:`segmentation_maps`), then one image per
    slot: ``rgb_k * m_k + (1 - m_k)`` (white where the slot is absent), with ``m_k`` from
    ``slot_masks`` [B, K, H, W] and ``rgb_k`` from ``slot_rgb`` [B, K, 3, H, W] (the image itself
    when absent). All images in [0, 1]; masks are resized to the image size.
    """
    n = min(max_images, images.shape[0])
    height, width = images.shape[-2:]
    scale = max(1, -(-min_tile // height))
    masks = visuals["slot_masks"][:n].detach().float().cpu()
    if tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
    raw, processed = segmentation_maps(masks, threshold)
    rows = []
    for i in range(n):
        image = images[i].detach().float().cpu().clamp(0, 1)
        tiles = [image]
        if "reconstruction" in visuals:
            tiles.append(visuals["reconstruction"][i].detach().float().cpu().clamp(0, 1))
        tiles += [colorize(raw[i]), colorize(processed[i])]
        colours = visuals["slot_rgb"][i].detach().float().cpu().clamp(0, 1) if "slot_rgb" in visuals else None
        for k in range(masks.shape[1]):
            rgb = colours[k] if colours is not None else image
            tiles.append(rgb * masks[i, k] + (1 - masks[i, k]))
        rows.append(torch.cat(tiles, dim=2))  # side by side
    grid = torch.cat(rows, dim=1)  # one row per image
    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)
