"""Single-object (foreground) scoring of unsupervised discovery on SegTrack-v2 and FBMS-59; see
docs/video_evaluation.md.

The model proposes several soft masks per frame; the annotation is one foreground (all objects
merged). :func:`merge_proposals` builds one foreground prediction the way SMTC's own (unused)
helper does: every proposal is upsampled (nearest) to the GT size; those whose min-max normalised
map overlaps the foreground more than the background (IoU at threshold 0.5) are summed; the sum
is min-max normalised and thresholded at 0.5. The selection looks at the GT (as every published
protocol on these sets does), so it measures how well the proposals *can* cover the object.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["binary_iou", "merge_proposals"]


def binary_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks [..., H, W] (per leading index); 1 where both are empty (DAVIS's J)."""
    inter = (pred & gt).flatten(-2).sum(-1).double()
    union = (pred | gt).flatten(-2).sum(-1).double()
    return torch.where(union == 0, torch.ones_like(inter), inter / union.clamp_min(1))


def _min_max(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(-2)
    lo, hi = flat.min(-1).values[..., None, None], flat.max(-1).values[..., None, None]
    return (x - lo) / (hi - lo + 1e-8)


def merge_proposals(proposals: torch.Tensor, gt: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Soft proposals [K, h, w] and GT foreground bool [H, W] -> predicted foreground bool [H, W].

    An empty set of proposals, or none overlapping the foreground more than the background,
    predicts an empty foreground.
    """
    if proposals.shape[0] == 0:
        return torch.zeros_like(gt, dtype=torch.bool)
    up = F.interpolate(proposals[None].float(), size=tuple(gt.shape), mode="nearest")[0]
    binary = _min_max(up) > threshold
    keep = binary_iou(binary, gt) > binary_iou(binary, ~gt)
    if not keep.any():
        return torch.zeros_like(gt, dtype=torch.bool)
    return _min_max(up[keep].sum(0)) > threshold  # the kept masks' raw values are summed
