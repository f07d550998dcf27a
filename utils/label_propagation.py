"""Semi-supervised label propagation through dense features (CRW protocol, as SMTC uses it; docs/methods/smtc.md).

For target frame t the context is the first frame (long-term memory, never masked) plus the
``num_short`` immediately preceding frames, where indices before 0 are copies of the first frame
(the first frame replicated in front of the video). Affinity = cosine similarity between each
target position and every context position; short-term positions at grid distance >= ``radius``
are masked out; the affinities are divided by ``temperature``; the top-k over *all* context
positions are kept and softmax-normalised; the prediction is the weighted sum of the context soft
labels. Predicted soft labels are fed back as context for later frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASKED = -1e10


@dataclass(frozen=True)
class PropagationSettings:
    """One published setting; ``stride`` is the label-grid stride in pixels."""

    stride: int = 16
    topk: int = 7
    radius: float = 7.0
    temperature: float = 0.2
    num_short: int = 20


# The published settings: setting 1 (the script's default) and setting 2 (stride 8, features upsampled).
SETTINGS: dict[str, PropagationSettings] = {
    "stride16": PropagationSettings(stride=16, topk=7, radius=7, temperature=0.2),
    "stride8": PropagationSettings(stride=8, topk=28, radius=35, temperature=0.2),
}


def resize_to_stride(height: int, width: int, stride: int) -> tuple[int, int]:
    """The frame size fed to the encoder: each side rounded down to a multiple of ``stride``."""
    if height < stride or width < stride:
        raise ValueError(f"frame {height}x{width} is smaller than the stride {stride}")
    return height // stride * stride, width // stride * stride


def label_grid(height: int, width: int, stride: int) -> tuple[int, int]:
    """Label-map grid: floor(H/s) x floor(W/s) (30x53 for 480x854 at stride 16)."""
    return height // stride, width // stride


def context_frames(t: int, num_short: int) -> list[int]:
    """Frame indices forming the context of target frame ``t`` >= 1: [0] + the ``num_short``
    preceding frames, oldest first, negative indices clamped to 0 (replicated first frame)."""
    return [0] + [max(t - k, 0) for k in range(num_short, 0, -1)]


def radius_mask(height: int, width: int, radius: float) -> torch.Tensor:
    """Bool [h*w (target), h*w (context)]: True where the grid distance is < ``radius``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
    return torch.cdist(pos, pos) < radius


def one_hot_labels(labels: torch.Tensor, num_labels: int, grid: tuple[int, int]) -> torch.Tensor:
    """Label map [H, W] (0..num_labels-1) -> soft labels [num_labels, h, w] resized bilinearly."""
    onehot = F.one_hot(labels.long(), num_labels).permute(2, 0, 1).float()
    return F.interpolate(onehot[None], size=grid, mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def propagate(
    features: torch.Tensor,
    first_labels: torch.Tensor,
    topk: int = 7,
    radius: float = 7.0,
    temperature: float = 0.2,
    num_short: int = 20,
) -> torch.Tensor:
    """Propagate soft labels through a video.

    features: [T, C, h, w] (L2-normalised here over C); first_labels: soft labels [L, h, w] of frame 0.
    Returns soft labels [T, L, h, w] (frame 0 = ``first_labels``).
    """
    t_total, _, h, w = features.shape
    feats = F.normalize(features.flatten(2), dim=1).transpose(1, 2)  # [T, hw, C]
    near = radius_mask(h, w, radius).to(features.device)  # [hw, hw]
    labels = [first_labels.flatten(1).t()]  # per frame [hw, L]
    for t in range(1, t_total):
        ctx = context_frames(t, num_short)
        ctx_feats = feats[ctx]  # [n, hw, C]
        aff = torch.einsum("qc,nkc->qnk", feats[t], ctx_feats)  # [hw, n, hw]
        # Short-term frames only see a neighbourhood; the long-term first frame sees everything.
        aff[:, 1:] = aff[:, 1:].masked_fill(~near[:, None, :], MASKED)
        aff = aff.flatten(1) / temperature  # [hw, n*hw]
        k = min(topk, aff.shape[1])
        top, idx = aff.topk(k, dim=1)
        weights = top.softmax(dim=1)  # [hw, k]
        ctx_labels = torch.cat([labels[i] for i in ctx], dim=0)  # [n*hw, L]
        labels.append(torch.einsum("qk,qkl->ql", weights, ctx_labels[idx]))
    return torch.stack(labels).transpose(1, 2).reshape(t_total, -1, h, w)


def hard_labels(soft: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Soft labels [T, L, h, w] -> label maps [T, H, W] (bilinear upsampling, then argmax)."""
    return F.interpolate(soft, size=size, mode="bilinear", align_corners=False).argmax(dim=1)


# --- Keypoints as propagated labels (JHMDB; docs/video_evaluation.md) --------------------------
# Grid coordinates are cell-centred: cell i covers pixels [i*W/w, (i+1)*W/w) of a W-wide frame and
# its centre is grid coordinate i. Encoding and decoding use the same convention, so a keypoint
# survives the round trip to within the decoder's top-3 averaging error.


def pixels_to_grid(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(x, y) pixel coordinates [..., 2] of an H x W frame -> cell-centred grid coordinates."""
    (h, w), (gh, gw) = image_size, grid
    scale = points.new_tensor([gw / w, gh / h])
    return (points + 0.5) * scale - 0.5


def grid_to_pixels(points: torch.Tensor, image_size: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pixels_to_grid`."""
    (h, w), (gh, gw) = image_size, grid
    scale = points.new_tensor([w / gw, h / gh])
    return (points + 0.5) * scale - 0.5


def keypoints_to_maps(points: torch.Tensor, grid: tuple[int, int], sigma: float = 0.5) -> torch.Tensor:
    """Keypoints [J, 2] (x, y grid coordinates) -> soft labels [J + 1, h, w].

    Channel 0 is the background (1 where no joint channel is positive); channel j + 1 holds an
    unnormalised Gaussian (peak 1 at the exact, sub-cell keypoint position) truncated to 3 sigma
    per axis. ``sigma == 0`` sets the nearest cell to 1. A keypoint off the grid leaves its
    channel (near) empty.
    """
    gh, gw = grid
    ys = torch.arange(gh, dtype=points.dtype, device=points.device).view(1, gh, 1)
    xs = torch.arange(gw, dtype=points.dtype, device=points.device).view(1, 1, gw)
    dx = xs - points[:, 0].view(-1, 1, 1)
    dy = ys - points[:, 1].view(-1, 1, 1)
    if sigma > 0:
        maps = torch.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        maps = maps * ((dx.abs() <= 3 * sigma) & (dy.abs() <= 3 * sigma))
    else:
        maps = ((dx.abs() <= 0.5) & (dy.abs() <= 0.5)).to(points.dtype)
        # A keypoint exactly between two cells would light both; keep the first one per axis.
        maps = maps * (maps.flatten(1).cumsum(1).view_as(maps) <= 1)
    background = (maps.sum(0, keepdim=True) == 0).to(points.dtype)
    return torch.cat([background, maps])


def maps_to_keypoints(maps: torch.Tensor, topk: int = 3) -> torch.Tensor:
    """Soft joint maps [..., J, h, w] (background channel dropped) -> keypoints [..., J, 2].

    Each keypoint is the value-weighted mean (x, y) of its channel's ``topk`` highest cells; a
    channel whose top cells are all zero gives NaN (a vanished joint, scored as wrong).
    """
    h, w = maps.shape[-2:]
    values, idx = maps.flatten(-2).topk(min(topk, h * w), dim=-1)
    values = values.clamp_min(0)
    total = values.sum(-1, keepdim=True)
    weights = values / total
    xy = torch.stack([(idx % w).to(maps.dtype), (idx // w).to(maps.dtype)], dim=-1)  # [..., J, k, 2]
    out = (weights.unsqueeze(-1) * xy).sum(-2)
    return out.masked_fill(total == 0, float("nan"))
