"""PCK (percentage of correct keypoints) for keypoint propagation on JHMDB; see docs/video_evaluation.md.

A predicted joint is correct at threshold ``alpha`` when its distance to the ground-truth joint,
divided by the frame's normaliser, is <= ``alpha``. The normaliser is 0.6 x the diagonal of the
bounding box of the frame's ground-truth joints (the CRW convention). PCK is computed per joint type
over every scored frame of every video, then averaged over the joint types.

Unlike CRW's scorer, a joint whose prediction is missing (NaN, e.g. a propagated map that
vanished) counts as wrong instead of being dropped from the statistics.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["NORMALISER_SCALE", "pck_normaliser", "normalised_distances", "pck", "pck_per_joint"]

NORMALISER_SCALE = 0.6


def pck_normaliser(gt: torch.Tensor) -> torch.Tensor:
    """0.6 x the diagonal of the bounding box of the GT joints: gt [..., J, 2] (x, y) -> [...]."""
    span = gt.amax(dim=-2) - gt.amin(dim=-2)  # [..., 2]
    return NORMALISER_SCALE * span.norm(dim=-1)


def normalised_distances(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Distances ||pred - gt|| / normaliser of every joint: pred, gt [..., J, 2] -> [..., J].

    A missing prediction (NaN) gives +inf, i.e. wrong at every threshold.
    """
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be [..., J, 2]")
    dist = (pred - gt).norm(dim=-1) / pck_normaliser(gt).unsqueeze(-1)
    return torch.nan_to_num(dist, nan=float("inf"))


def pck_per_joint(distances: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fraction of distances <= ``alpha`` per joint type: distances [N, J] pooled over N -> [J]."""
    return (distances <= alpha).double().mean(dim=0)


def pck(distances: torch.Tensor, thresholds: Sequence[float] = (0.1, 0.2)) -> dict[float, float]:
    """PCK@alpha in [0, 1] for each threshold: the mean over joint types of :func:`pck_per_joint`."""
    if distances.dim() != 2 or distances.shape[0] == 0:
        raise ValueError(f"distances must be a non-empty [N, J] tensor, got {tuple(distances.shape)}")
    return {float(a): float(pck_per_joint(distances, a).mean()) for a in thresholds}
