"""Semantic-segmentation scores from one confusion matrix (VIP part propagation); see
docs/video_evaluation.md.

One matrix is accumulated over all scored pixels of all frames of all videos (rows = GT class,
columns = predicted class). Mean IoU is the nanmean of the per-class IoU over every class
(background included); a class absent from both GT and prediction has no IoU and is skipped.
"""
from __future__ import annotations

import torch

from metrics.masks import contingency_table

__all__ = ["confusion_matrix", "segmentation_scores"]


def confusion_matrix(gt: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel counts [C, C] (float64; rows GT, columns prediction) of label maps [..., H, W].

    GT pixels outside ``[0, num_classes)`` are ignored; a predicted id outside it is an error.
    """
    gt, pred = gt.reshape(-1, *gt.shape[-2:]).long(), pred.reshape(-1, *pred.shape[-2:]).long()
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class ids must lie in [0, {num_classes})")
    ignore = (gt < 0) | (gt >= num_classes)
    table = contingency_table(pred, gt.masked_fill(ignore, 0), ignore, num_pred=num_classes, num_true=num_classes)
    return table.sum(dim=0)


def segmentation_scores(conf: torch.Tensor) -> dict[str, float | list[float]]:
    """Pixel accuracy, mean class accuracy, per-class IoU, mIoU (nanmean) and frequency-weighted
    IoU of a confusion matrix [C, C]; values in [0, 1], NaN for a class without IoU."""
    conf = conf.double()
    tp = conf.diag()
    gt_count, pred_count = conf.sum(dim=1), conf.sum(dim=0)
    union = gt_count + pred_count - tp
    iou = tp / union  # 0/0 -> NaN: class absent from GT and prediction
    acc = tp / gt_count
    freq = gt_count / conf.sum()
    seen = ~iou.isnan()
    return {
        "pixel_accuracy": float(tp.sum() / conf.sum()),
        "mean_accuracy": float(acc.nanmean()),
        "mIoU": float(iou.nanmean()),
        "fwIoU": float((freq[seen] * iou[seen]).sum()),
        "per_class_iou": iou.tolist(),
    }
