"""Mask-overlap metrics on hard label maps: mBO, Hungarian mIoU and CorLoc (docs/metrics.md#mbo-and-miou-unsupervised-mask-iou, #corloc).

These follow OCLF's ``UnsupervisedMaskIoUMetric(ignore_background=True, ignore_overlaps=True)``
as copied into SPOT, but take label maps instead of one-hot masks. Label maps cannot hold
overlapping GT objects, so "ignore overlaps" reduces to the explicit ``ignore`` mask.

All three metrics share one contingency table per image (pixel counts per (GT id, slot id)
pair over non-ignored pixels), from which intersections, areas and IoUs follow exactly.
Every function returns per-image values plus a ``valid`` flag: images with no GT object left
after removing background and ignored pixels are *skipped* by OCLF (not counted), and their
value here is NaN so that a plain ``.mean()`` cannot silently include them.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

__all__ = [
    "contingency_table",
    "iou_from_contingency",
    "iou_matrix",
    "best_overlap_from_iou",
    "hungarian_from_iou",
    "corloc_from_iou",
    "best_overlap_iou",
    "hungarian_miou",
    "corloc",
]


def _check_labels(
    pred_labels: torch.Tensor, true_labels: torch.Tensor, ignore: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate shapes/dtypes and move everything to the prediction's device."""
    if pred_labels.dim() != 3:
        raise ValueError(f"pred_labels must be [B, H, W], got shape {tuple(pred_labels.shape)}")
    if true_labels.shape != pred_labels.shape:
        raise ValueError(
            f"true_labels shape {tuple(true_labels.shape)} != pred_labels shape "
            f"{tuple(pred_labels.shape)}"
        )
    for name, t in (("pred_labels", pred_labels), ("true_labels", true_labels)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer label map, got dtype {t.dtype}")
    device = pred_labels.device
    pred_labels = pred_labels.long()
    true_labels = true_labels.to(device).long()
    if pred_labels.numel() and int(pred_labels.min()) < 0:
        raise ValueError("pred_labels contains negative slot ids")
    if true_labels.numel() and int(true_labels.min()) < 0:
        raise ValueError("true_labels contains negative ids")
    if ignore is not None:
        if ignore.shape != pred_labels.shape:
            raise ValueError(
                f"ignore shape {tuple(ignore.shape)} != label shape {tuple(pred_labels.shape)}"
            )
        ignore = ignore.to(device).bool()
    return pred_labels, true_labels, ignore


def contingency_table(
    pred_labels: torch.Tensor,
    true_labels: torch.Tensor,
    ignore: torch.Tensor | None = None,
    num_pred: int | None = None,
    num_true: int | None = None,
) -> torch.Tensor:
    """Per-image pixel counts n[b, g, k] of GT id g and slot id k, ignored pixels dropped.

    Returns float64 [B, M, K] with M = ``num_true`` (default max GT id + 1, row 0 being
    background) and K = ``num_pred`` (default max slot id + 1), i.e. the channel counts of
    OCLF's one-hot without ``num_classes``. Counts are integers stored exactly in float64.
    """
    pred_labels, true_labels, ignore = _check_labels(pred_labels, true_labels, ignore)
    b, h, w = pred_labels.shape
    max_pred = int(pred_labels.max()) + 1 if pred_labels.numel() else 1
    max_true = int(true_labels.max()) + 1 if true_labels.numel() else 1
    k = max_pred if num_pred is None else int(num_pred)
    m = max_true if num_true is None else int(num_true)
    if k < max_pred:
        raise ValueError(f"num_pred={k} but pred_labels contains slot id {max_pred - 1}")
    if m < max_true:
        raise ValueError(f"num_true={m} but true_labels contains id {max_true - 1}")

    # A single bincount over (image, GT id, slot id) is a batched contingency table without the
    # [B, H*W, K] one-hot tensors (gigabytes at 320x320 with many COCO ids). Integer bincount
    # on CUDA is deterministic; ignored pixels go to one extra bin that is cut off afterwards.
    batch_idx = torch.arange(b, device=pred_labels.device).view(b, 1, 1)
    flat = (batch_idx * m + true_labels) * k + pred_labels
    total = b * m * k
    if ignore is not None:
        flat = torch.where(ignore, torch.full_like(flat, total), flat)
    counts = torch.bincount(flat.reshape(-1), minlength=total + 1)[:total]
    return counts.view(b, m, k).to(torch.float64)


def iou_from_contingency(cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU matrix between GT objects and predicted slots from a contingency table.

    ``cont`` is [B, M, K] with row 0 = GT background. Returns ``iou`` float64 [B, M-1, K]
    (row g is GT id g+1) and ``present`` bool [B, M-1] (GT object has >= 1 non-ignored pixel).
    Predicted areas include GT-background pixels, so a slot spilling onto background pays for
    it in the union (docs/metrics.md#mbo-and-miou-unsupervised-mask-iou). Union 0 gives IoU 0.
    """
    pred_area = cont.sum(dim=1)  # [B, K], over all GT rows including background
    inter = cont[:, 1:, :]  # [B, M-1, K], background row dropped
    gt_area = inter.sum(dim=2)  # [B, M-1]
    union = pred_area[:, None, :] + gt_area[:, :, None] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    return iou, gt_area > 0


def iou_matrix(
    pred_labels: torch.Tensor,
    true_labels: torch.Tensor,
    ignore: torch.Tensor | None = None,
    num_slots: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image IoU matrix [B, M-1, K] (float64) and GT-present flags [B, M-1].

    GT id 0 (background) is dropped; ignored pixels are removed from both prediction and GT.
    """
    cont = contingency_table(pred_labels, true_labels, ignore, num_pred=num_slots)
    return iou_from_contingency(cont)


def _masked_mean(values: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over present GT objects per image; NaN for images with none (and valid False)."""
    n = present.sum(dim=1)
    valid = n > 0
    total = torch.where(present, values, torch.zeros_like(values)).sum(dim=1)
    mean = total / n.clamp_min(1).to(values.dtype)
    return torch.where(valid, mean, torch.full_like(mean, float("nan"))), valid


def best_overlap_from_iou(iou: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mBO per image: mean over GT objects of the max IoU over slots (slots may be reused)."""
    best = iou.max(dim=2).values  # K >= 1 always; M-1 may be 0 (no GT object in the batch)
    return _masked_mean(best, present)


def hungarian_from_iou(iou: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian mIoU per image: one-to-one matching maximising total IoU; unmatched GT get 0."""
    iou_np = iou.detach().cpu().numpy()
    present_np = present.detach().cpu().numpy()
    out = np.full(iou_np.shape[0], np.nan, dtype=np.float64)
    for i in range(iou_np.shape[0]):
        gt_rows = np.nonzero(present_np[i])[0]
        if gt_rows.size == 0:
            continue
        # Rows = predicted slots, columns = GT objects (OCLF's K_pred x K_gt orientation; the
        # optimum is the same either way). With K_gt > K_pred some GT stay unmatched and add 0.
        cost = iou_np[i][gt_rows].T
        rows, cols = linear_sum_assignment(cost, maximize=True)
        out[i] = cost[rows, cols].sum() / gt_rows.size
    valid = present.any(dim=1)
    return torch.from_numpy(out).to(iou.device), valid


def corloc_from_iou(iou: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CorLoc per image: 1.0 if any GT object has best-overlap IoU > 0.5 (strict), else 0.0."""
    best = iou.max(dim=2).values
    hit = ((best > 0.5) & present).any(dim=1).to(torch.float64)
    valid = present.any(dim=1)
    return torch.where(valid, hit, torch.full_like(hit, float("nan"))), valid


def best_overlap_iou(
    pred_labels: torch.Tensor, true_labels: torch.Tensor, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean best overlap (mBO) and validity flags.

    For each GT object (id >= 1, non-empty after ignore) take the max IoU over all predicted
    slots, then average over GT objects. Returns (float64 [B], bool [B]); invalid images (no GT
    object) have value NaN and must not be counted.
    """
    return best_overlap_from_iou(*iou_matrix(pred_labels, true_labels, ignore))


def hungarian_miou(
    pred_labels: torch.Tensor,
    true_labels: torch.Tensor,
    ignore: torch.Tensor | None = None,
    *,
    num_slots: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Hungarian-matched mIoU and validity flags.

    ``num_slots`` sets K_pred (default: max slot id in the batch + 1). Empty slots have IoU 0,
    so K_pred only matters in that more slots let more GT objects be matched, to zero.
    """
    return hungarian_from_iou(*iou_matrix(pred_labels, true_labels, ignore, num_slots=num_slots))


def corloc(
    pred_labels: torch.Tensor, true_labels: torch.Tensor, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mask CorLoc (1.0 / 0.0) and validity flags; validity as in mBO."""
    return corloc_from_iou(*iou_matrix(pred_labels, true_labels, ignore))
