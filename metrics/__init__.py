"""Object-discovery metrics with OCLF semantics (docs/metrics.md), on hard label maps.

Functions return per-image values in [0, 1]; :class:`SegmentationMetrics` accumulates them over
a dataset (and over ranks via :meth:`SegmentationMetrics.state_tensor`) and reports x100.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from metrics.ari import adjusted_rand_index, ari_from_contingency
from metrics.masks import (
    best_overlap_from_iou,
    best_overlap_iou,
    contingency_table,
    corloc,
    corloc_from_iou,
    hungarian_from_iou,
    hungarian_miou,
    iou_from_contingency,
    iou_matrix,
)

__all__ = [
    "SegmentationMetrics",
    "METRIC_NAMES",
    "masks_to_labels",
    "adjusted_rand_index",
    "best_overlap_iou",
    "hungarian_miou",
    "corloc",
    "iou_matrix",
    "contingency_table",
]

METRIC_NAMES: tuple[str, ...] = ("fg_ari", "ari", "mbo_i", "mbo_c", "miou", "corloc")


def masks_to_labels(masks: torch.Tensor, size: tuple[int, int] | int) -> torch.Tensor:
    """Soft slot masks [B, K, h, w] -> hard label map LongTensor [B, H, W] at ``size``.

    Upsamples bilinearly (``align_corners=False``) *before* the argmax, as SPOT/OCLF do
    (docs/metrics.md#pipeline): the argmax of interpolated maps gives smooth boundaries that
    argmax-then-nearest cannot, and the two disagree near slot borders.
    """
    if masks.dim() != 4:
        raise ValueError(f"masks must be [B, K, h, w], got shape {tuple(masks.shape)}")
    if isinstance(size, int):
        size = (size, size)
    masks = masks if masks.is_floating_point() else masks.float()
    up = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
    return up.argmax(dim=1)


class SegmentationMetrics:
    """Dataset-level object-discovery metrics, OCLF-exact definitions (docs/metrics.md).

    Call :meth:`update` per batch with hard label maps, then :meth:`compute`. Per metric the
    result is ``100 * sum / count`` over images (a mean over images, not over batches).

    - ``fg_ari``: OCLF ``ARIMetric(foreground=True, ignore_overlaps=True)`` on instance GT.
      GT-background and ignored pixels are dropped; ARI = 1 where its denominator is 0 (no
      foreground pixel, or one object in one slot). Every image counts.
    - ``ari``: same with ``foreground=False``: background is one more GT cluster. Every image
      counts.
    - ``mbo_i`` / ``mbo_c``: ``UnsupervisedMaskIoUMetric(matching="best_overlap",
      ignore_background=True, ignore_overlaps=True)`` on instance / class GT. Ignored pixels are
      removed from prediction and GT, background stays in the predicted slots' unions; per GT
      object the max IoU over slots (reuse allowed), mean over objects. Images without any GT
      object are not counted. ``mbo_c`` is skipped (not counted) when ``mask_class`` is None.
    - ``miou``: same with ``matching="hungarian"`` on *instance* GT; unmatched GT objects
      (more objects than slots) score 0.
    - ``corloc``: ``MaskCorLocMetric``: 1 if any GT object has best-overlap IoU > 0.5 (strict).

    For distributed evaluation, all-reduce (sum) :meth:`state_tensor` across ranks and
    :meth:`load_state_tensor` the result, which gives the exact mean over all images.
    """

    def __init__(self, names: Sequence[str] = METRIC_NAMES) -> None:
        names = tuple(names)
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric names {unknown}; choose from {list(METRIC_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate metric names in {list(names)}")
        self.names: tuple[str, ...] = names
        self._state = torch.zeros(len(names), 2, dtype=torch.float64)

    def reset(self) -> None:
        """Clear all sums and counts."""
        self._state.zero_()

    @property
    def counts(self) -> dict[str, int]:
        """Number of images counted so far per metric."""
        return {n: int(c) for n, c in zip(self.names, self._state[:, 1].tolist())}

    @property
    def sums(self) -> dict[str, float]:
        """Sum of per-image values (in [0, 1]) per metric."""
        return {n: float(s) for n, s in zip(self.names, self._state[:, 0].tolist())}

    def _add(self, name: str, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        if valid is not None:
            values = values[valid]
        row = self.names.index(name)
        self._state[row, 0] += float(values.double().sum())
        self._state[row, 1] += values.numel()

    @torch.no_grad()
    def update(
        self,
        pred_labels: torch.Tensor,
        mask_instance: torch.Tensor,
        mask_class: torch.Tensor | None = None,
        mask_ignore: torch.Tensor | None = None,
        *,
        num_slots: int | None = None,
    ) -> None:
        """Add one batch: ``pred_labels`` [B, H, W] slot ids, GT label maps (0 = background).

        ``num_slots`` only sets K_pred for Hungarian matching (default: max slot id + 1).
        """
        want = set(self.names)
        inst_names = {"fg_ari", "ari", "mbo_i", "miou", "corloc"}
        if want & inst_names:
            # One contingency table serves all instance-GT metrics.
            cont = contingency_table(pred_labels, mask_instance, mask_ignore, num_pred=num_slots)
            if "fg_ari" in want:
                self._add("fg_ari", ari_from_contingency(cont, foreground=True))
            if "ari" in want:
                self._add("ari", ari_from_contingency(cont, foreground=False))
            if want & {"mbo_i", "miou", "corloc"}:
                iou, present = iou_from_contingency(cont)
                if "mbo_i" in want:
                    self._add("mbo_i", *best_overlap_from_iou(iou, present))
                if "miou" in want:
                    self._add("miou", *hungarian_from_iou(iou, present))
                if "corloc" in want:
                    self._add("corloc", *corloc_from_iou(iou, present))
        if "mbo_c" in want and mask_class is not None:
            self._add("mbo_c", *best_overlap_iou(pred_labels, mask_class, mask_ignore))

    def compute(self) -> dict[str, float]:
        """``100 * sum / count`` per metric; NaN for a metric that counted no image."""
        out = {}
        for name, (s, c) in zip(self.names, self._state.tolist()):
            out[name] = 100.0 * s / c if c > 0 else float("nan")
        return out

    def state_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """A copy of the state, float64 [num_metrics, 2] = (sum, count), for all_reduce(SUM)."""
        return self._state.clone() if device is None else self._state.to(device, copy=True)

    def merge(self, other: "SegmentationMetrics") -> None:
        """Add another meter's sums and counts (e.g. another rank's shard of the dataset)."""
        if other.names != self.names:
            raise ValueError(f"cannot merge metrics {list(other.names)} into {list(self.names)}")
        self._state += other._state

    def load_state_tensor(self, t: torch.Tensor) -> None:
        """Replace the state with ``t`` (e.g. the all-reduced sum of every rank's state)."""
        if tuple(t.shape) != tuple(self._state.shape):
            raise ValueError(f"state shape {tuple(t.shape)} != expected {tuple(self._state.shape)}")
        self._state = t.detach().to("cpu", torch.float64).clone()
