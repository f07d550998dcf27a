"""Metrics AdaSlot reports for models with a variable number of slots (docs/metrics.md#adaslots-metrics).

All clustering scores compare the predicted slot partition with the ground-truth objects on the
*foreground* pixels of one image (GT id > 0, ignored pixels dropped), computed from the
per-image contingency table n[g, k] (pixels of GT object g assigned to slot k), then averaged
over images. Images without a foreground pixel are skipped (not counted), as OCLF's
``MutualInfoAndPairCounting`` does; a score that is undefined for an image (NaN) is skipped for
that image only.

- Pair counting (sklearn ``pair_confusion_matrix`` over ordered pixel pairs):
  ``precision = C11 / (C11 + C01)``: of the pairs the model puts in one slot, the fraction that
  share a GT object (merging objects lowers it); ``recall = C11 / (C11 + C10)``: of the pairs
  sharing a GT object, the fraction the model keeps in one slot (splitting lowers it);
  ``f1 = 2 P R / (P + R)`` per image. These are pixel-pair scores, not object-count scores.
- ``ami`` / ``nmi``: sklearn's ``adjusted_mutual_info_score`` / ``normalized_mutual_info_score``
  (natural log, arithmetic-mean normaliser, expected MI under the hypergeometric model), with
  sklearn's conventions for one-cluster partitions.
- ``purity``: one-to-one (Hungarian) matching of GT objects to slots maximising matched pixels;
  matched pixels / foreground pixels.
- Slot counts: ``num_slots_kept`` (mean kept slots per image), ``slot_keep_prob`` (mean keep
  probability), ``gt_objects`` (mean GT objects per image), ``kept_objects_pearson`` (Pearson
  correlation over images between kept slots and GT objects; NaN if either is constant) and
  ``kept_slots_by_objects`` ({GT object count: mean kept slots}).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln

from metrics.masks import contingency_table

__all__ = [
    "foreground_contingency",
    "pair_counting_scores",
    "mutual_information_scores",
    "expected_mutual_information",
    "hungarian_purity",
    "AdaptiveSlotMetrics",
]

CLUSTERING_NAMES: tuple[str, ...] = ("precision", "recall", "f1", "ami", "nmi", "purity")


def foreground_contingency(
    pred_labels: torch.Tensor, true_labels: torch.Tensor, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-image counts n[b, g, k] over foreground pixels: float64 [B, M, K], GT background removed."""
    return contingency_table(pred_labels, true_labels, ignore)[:, 1:, :]


def pair_counting_scores(cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image pair-counting (precision, recall, F1), float64 [B] each, NaN where undefined."""
    cont = cont.to(torch.float64)
    n = cont.sum(dim=(1, 2))
    squares = (cont**2).sum(dim=(1, 2))
    together_both = squares - n  # C11: ordered pairs of distinct pixels, same object and same slot
    together_pred = (cont.sum(dim=1) ** 2).sum(dim=1) - n  # C11 + C01
    together_true = (cont.sum(dim=2) ** 2).sum(dim=1) - n  # C11 + C10
    nan = torch.full_like(n, math.nan)
    precision = torch.where(together_pred > 0, together_both / together_pred.clamp_min(1), nan)
    recall = torch.where(together_true > 0, together_both / together_true.clamp_min(1), nan)
    f1 = 2 * precision * recall / (precision + recall)  # NaN if P + R = 0 or either is NaN
    return precision, recall, f1


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def expected_mutual_information(rows: np.ndarray, cols: np.ndarray) -> float:
    """E[MI] of two random partitions with these cluster sizes (hypergeometric model, nats)."""
    n = float(rows.sum())
    a = rows.astype(np.float64)[:, None]
    b = cols.astype(np.float64)[None, :]
    start = np.maximum(1.0, a + b - n)
    stop = np.minimum(a, b)  # inclusive
    lengths = np.maximum(stop - start + 1, 0).astype(np.int64).ravel()
    if lengths.sum() == 0:
        return 0.0
    # Flatten every (i, j, n_ij) term; offsets restart the counter at each (i, j) pair.
    pair = np.repeat(np.arange(lengths.size), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ai = np.broadcast_to(a, start.shape).ravel()[pair]
    bj = np.broadcast_to(b, start.shape).ravel()[pair]
    nij = start.ravel()[pair] + offsets
    log_prob = (gammaln(ai + 1) + gammaln(bj + 1) + gammaln(n - ai + 1) + gammaln(n - bj + 1) - gammaln(n + 1)
                - gammaln(nij + 1) - gammaln(ai - nij + 1) - gammaln(bj - nij + 1) - gammaln(n - ai - bj + nij + 1))
    terms = nij / n * np.log(n * nij / (ai * bj)) * np.exp(log_prob)
    return float(terms.sum())


def mutual_information_scores(cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (AMI, NMI) as sklearn computes them, float64 [B]; NaN for images without pixels."""
    ami, nmi = [], []
    for table in cont.to(torch.float64).cpu().numpy():
        table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]  # clusters present
        n = table.sum()
        rows, cols = table.sum(axis=1), table.sum(axis=0)
        if n == 0:
            ami.append(math.nan), nmi.append(math.nan)
            continue
        if len(rows) == len(cols) == 1:  # neither partition splits the pixels: a perfect match
            ami.append(1.0), nmi.append(1.0)
            continue
        nz = table > 0
        mi = float((table[nz] / n * np.log(n * table[nz] / np.outer(rows, cols)[nz])).sum())
        h_true, h_pred = _entropy(rows), _entropy(cols)
        nmi.append(0.0 if mi == 0 else mi / ((h_true + h_pred) / 2))
        if len(rows) == 1 or len(cols) == 1:
            ami.append(0.0)
            continue
        emi = expected_mutual_information(rows, cols)
        eps = np.finfo(np.float64).eps
        # sklearn keeps the signs of numerator and denominator away from 0 (float round-off).
        denominator = (h_true + h_pred) / 2 - emi
        denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
        numerator = mi - emi
        numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
        ami.append(numerator / denominator)
    return torch.tensor(ami, dtype=torch.float64), torch.tensor(nmi, dtype=torch.float64)


def hungarian_purity(cont: torch.Tensor) -> torch.Tensor:
    """Per-image one-to-one purity: max matched pixels / foreground pixels, float64 [B] (NaN if empty)."""
    out = []
    for table in cont.to(torch.float64).cpu().numpy():
        n = table.sum()
        if n == 0:
            out.append(math.nan)
            continue
        rows, cols = linear_sum_assignment(table, maximize=True)
        out.append(float(table[rows, cols].sum() / n))
    return torch.tensor(out, dtype=torch.float64)


class AdaptiveSlotMetrics:
    """Clustering scores and slot counts for (adaptive) slot models; see the module docstring.

    ``update`` per batch with hard label maps (from the kept slots' masks), GT instance ids
    (0 = background), the optional ignore mask and the keep decisions [B, K] (and keep
    probabilities); ``compute`` gives clustering scores x100 and the slot-count statistics.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._scores: dict[str, list[float]] = {name: [] for name in CLUSTERING_NAMES}
        self._kept: list[float] = []
        self._objects: list[float] = []
        self._keep_prob: list[float] = []

    @torch.no_grad()
    def update(
        self,
        pred_labels: torch.Tensor,
        mask_instance: torch.Tensor,
        mask_ignore: torch.Tensor | None,
        slot_keep: torch.Tensor,
        slot_keep_prob: torch.Tensor | None = None,
    ) -> None:
        """Add one batch: label maps [B, H, W], GT [B, H, W], ignore [B, H, W] or None, keep [B, K]."""
        cont = foreground_contingency(pred_labels, mask_instance, mask_ignore).cpu()
        precision, recall, f1 = pair_counting_scores(cont)
        ami, nmi = mutual_information_scores(cont)
        values = dict(precision=precision, recall=recall, f1=f1, ami=ami, nmi=nmi, purity=hungarian_purity(cont))
        for name, per_image in values.items():
            self._scores[name] += per_image.tolist()
        self._kept += slot_keep.float().sum(dim=1).cpu().tolist()
        # GT objects: foreground ids with at least one non-ignored pixel.
        self._objects += (cont.sum(dim=2) > 0).sum(dim=1).double().tolist()
        if slot_keep_prob is not None:
            self._keep_prob += slot_keep_prob.float().mean(dim=1).cpu().tolist()

    def merge(self, other: "AdaptiveSlotMetrics") -> None:
        """Add the images another meter has seen (e.g. another DDP rank's shard)."""
        for name, values in other._scores.items():
            self._scores[name] += values
        self._kept += other._kept
        self._objects += other._objects
        self._keep_prob += other._keep_prob

    def compute(self) -> dict[str, float | dict[str, float]]:
        """Means over images (clustering scores x100, NaN values skipped) and slot-count statistics."""
        out: dict[str, float | dict[str, float]] = {}
        for name, values in self._scores.items():
            finite = [v for v in values if not math.isnan(v)]
            out[name] = 100.0 * sum(finite) / len(finite) if finite else math.nan
        kept, objects = np.array(self._kept), np.array(self._objects)
        out["num_slots_kept"] = float(kept.mean()) if kept.size else math.nan
        out["slot_keep_prob"] = float(np.mean(self._keep_prob)) if self._keep_prob else math.nan
        out["gt_objects"] = float(objects.mean()) if objects.size else math.nan
        constant = kept.size < 2 or kept.std() == 0 or objects.std() == 0
        out["kept_objects_pearson"] = math.nan if constant else float(np.corrcoef(kept, objects)[0, 1])
        out["kept_slots_by_objects"] = {
            str(int(count)): float(kept[objects == count].mean()) for count in np.unique(objects)
        }
        return out
