"""DAVIS J (region) and F (boundary) measures and the sequence/dataset J&F protocol (docs/metrics.md#jf-davis).

Definitions follow the official ``davis2017-evaluation`` package (BSD-3) and are re-implemented
here with NumPy/SciPy (no OpenCV): the boundary dilation uses a disk structuring element with
``scipy.ndimage.binary_dilation``, which gives the same maps as the official ``cv2.dilate``.

- J = |pred ∩ gt| / |pred ∪ gt| over non-void pixels; 1 when the union is empty.
- F = harmonic mean of boundary precision and recall, boundaries matched within
  ``ceil(0.008 * image diagonal)`` pixels. Both empty -> 1; exactly one empty -> 0.
- Per object over frames: M = nanmean, O (recall) = fraction of frames > 0.5, D (decay) = mean of
  the first quarter minus mean of the last quarter (official binning).
- Global J&F-Mean = (mean over objects of J-M + mean over objects of F-M) / 2.

Two unsupervised matchers: ``"sequence"`` (official: one Hungarian per sequence on the mean
(J+F)/2 over frames, at most 20 proposals) and ``"per_frame"`` (SMTC's vendored evaluator: one
Hungarian per frame on J+F, identities may change over time; SMTC allows 300 proposals). Every
result records the protocol it was computed with.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import binary_dilation
from scipy.optimize import linear_sum_assignment

__all__ = [
    "region_j",
    "boundary_f",
    "boundary_map",
    "boundary_tolerance",
    "db_statistics",
    "evaluate_semi_supervised_sequence",
    "evaluate_unsupervised_sequence",
    "JFResults",
    "MATCHERS",
    "OFFICIAL_MAX_PROPOSALS",
    "SMTC_MAX_PROPOSALS",
]

MATCHERS: tuple[str, ...] = ("sequence", "per_frame")
OFFICIAL_MAX_PROPOSALS = 20
SMTC_MAX_PROPOSALS = 300


def region_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray | float:
    """Jaccard index of boolean masks [..., H, W]; per leading index; 1 where the union is empty."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != pred shape {pred.shape}")
    keep = np.ones_like(gt) if void is None else ~np.asarray(void, bool)
    inter = np.sum(gt & pred & keep, axis=(-2, -1))
    union = np.sum((gt | pred) & keep, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j) if j.ndim == 0 else j


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-pixel boundary of a boolean mask [H, W] (official ``seg2bmap`` at native size).

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour;
    the last row compares only to the right, the last column only downwards.
    """
    seg = np.asarray(mask, bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Matching radius in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def _f_single(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None, bound_th: float) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~np.asarray(void, bool)
    radius = boundary_tolerance(gt.shape, bound_th)
    fg_b = boundary_map(np.asarray(pred, bool) & keep)
    gt_b = boundary_map(np.asarray(gt, bool) & keep)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 -> F = 0
    disk = _disk(radius)
    fg_dil = binary_dilation(fg_b, structure=disk)
    gt_dil = binary_dilation(gt_b, structure=disk)
    precision = float((fg_b & gt_dil).sum()) / n_fg
    recall = float((gt_b & fg_dil).sum()) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> np.ndarray | float:
    """Boundary F-measure of boolean masks [H, W] or [T, H, W] (per frame)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != pred shape {pred.shape}")
    if void is not None and np.shape(void) != gt.shape:
        raise ValueError(f"void shape {np.shape(void)} != mask shape {gt.shape}")
    if gt.ndim == 2:
        return _f_single(gt, pred, void, bound_th)
    if gt.ndim != 3:
        raise ValueError(f"masks must be [H, W] or [T, H, W], got {gt.shape}")
    return np.array(
        [_f_single(gt[t], pred[t], None if void is None else void[t], bound_th) for t in range(gt.shape[0])]
    )


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean M, recall O (fraction > 0.5) and decay D of per-frame values (official binning)."""
    values = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        # Official: ids = round(linspace(1, n, 5)) - 1, cast to uint8, bins inclusive of the end.
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def split_objects(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """Label maps [T, H, W] -> boolean object masks [num_objects, T, H, W] for ids 1..num_objects."""
    ids = np.arange(1, num_objects + 1)[:, None, None, None]
    return np.asarray(labels)[None] == ids


def _jf_matrices(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """J and F for every (prediction, GT object, frame): two arrays [P, G, T]."""
    n_pred, n_gt, n_frames = pred.shape[0], gt.shape[0], gt.shape[1]
    j = np.zeros((n_pred, n_gt, n_frames))
    f = np.zeros((n_pred, n_gt, n_frames))
    for g in range(n_gt):
        for p in range(n_pred):
            j[p, g] = region_j(gt[g], pred[p], void)
            f[p, g] = boundary_f(gt[g], pred[p], void)
    return j, f


def evaluate_semi_supervised_sequence(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official semi-supervised protocol for one sequence.

    ``gt`` [G, T, H, W] and ``pred`` [P, T, H, W] boolean object masks over the *scored* frames
    (the caller drops the first and last frame). More predicted objects than GT objects is an
    error; fewer are zero-padded. Void pixels are not used. Returns J, F, each [G, T].
    """
    if pred.shape[0] > gt.shape[0]:
        raise ValueError(
            f"prediction has {pred.shape[0]} object ids but the ground truth only {gt.shape[0]}"
        )
    if pred.shape[0] < gt.shape[0]:
        pad = np.zeros((gt.shape[0] - pred.shape[0], *pred.shape[1:]), bool)
        pred = np.concatenate([pred, pad], axis=0)
    j = np.zeros(gt.shape[:2])
    f = np.zeros(gt.shape[:2])
    for g in range(gt.shape[0]):
        j[g] = region_j(gt[g], pred[g])
        f[g] = boundary_f(gt[g], pred[g])
    return j, f


def evaluate_unsupervised_sequence(
    gt: np.ndarray,
    proposals: np.ndarray,
    void: np.ndarray | None = None,
    matcher: str = "sequence",
    max_proposals: int = OFFICIAL_MAX_PROPOSALS,
) -> tuple[np.ndarray, np.ndarray]:
    """Unsupervised protocol for one sequence: match proposals to GT objects, return J, F [G, T].

    ``gt`` [G, T, H, W], ``proposals`` [P, T, H, W] (boolean; may overlap), ``void`` [T, H, W].
    ``matcher="sequence"``: one Hungarian assignment on the per-pair mean over frames of (J+F)/2
    (official). ``matcher="per_frame"``: an independent assignment per frame on J+F (SMTC).
    Rows are ordered by GT object (the official code orders them by proposal index; the
    per-object values are the same set, so every mean is unchanged).
    """
    if matcher not in MATCHERS:
        raise ValueError(f"unknown matcher {matcher!r}; choose from {list(MATCHERS)}")
    if proposals.shape[0] > max_proposals:
        raise ValueError(f"{proposals.shape[0]} proposals exceed the maximum of {max_proposals}")
    n_gt = gt.shape[0]
    if proposals.shape[0] < n_gt:
        pad = np.zeros((n_gt - proposals.shape[0], *proposals.shape[1:]), bool)
        proposals = np.concatenate([proposals, pad], axis=0)
    j, f = _jf_matrices(gt, proposals, void)  # [P, G, T]
    out_j = np.zeros((n_gt, gt.shape[1]))
    out_f = np.zeros((n_gt, gt.shape[1]))
    if matcher == "sequence":
        score = (j.mean(axis=2) + f.mean(axis=2)) / 2
        rows, cols = linear_sum_assignment(-score)
        out_j[cols] = j[rows, cols]
        out_f[cols] = f[rows, cols]
    else:
        for t in range(gt.shape[1]):
            rows, cols = linear_sum_assignment(-(j[:, :, t] + f[:, :, t]))
            out_j[cols, t] = j[rows, cols, t]
            out_f[cols, t] = f[rows, cols, t]
    return out_j, out_f


@dataclass
class JFResults:
    """Per-object J/F statistics accumulated over sequences, labelled with the protocol used.

    ``protocol`` is a short human-readable description written next to every result (e.g.
    ``"semi-supervised (official)"`` or ``"unsupervised, per-frame matching (SMTC, not official)"``).
    """

    protocol: str
    objects: list[str] = field(default_factory=list)
    stats: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")}
    )

    def add_sequence(self, name: str, j: np.ndarray, f: np.ndarray) -> None:
        """Add one sequence's J, F [G, T]; objects are named ``<seq>_<k>`` (k from 1) as officially."""
        for g in range(j.shape[0]):
            self.objects.append(f"{name}_{g + 1}")
            for prefix, values in (("J", j[g]), ("F", f[g])):
                m, o, d = db_statistics(values)
                self.stats[f"{prefix}-Mean"].append(m)
                self.stats[f"{prefix}-Recall"].append(o)
                self.stats[f"{prefix}-Decay"].append(d)

    def global_results(self) -> dict[str, float]:
        """The seven official global measures (means over objects), in [0, 1]."""
        if not self.objects:
            raise ValueError("no object was evaluated")
        g = {k: float(np.mean(v)) for k, v in self.stats.items()}
        return {"J&F-Mean": (g["J-Mean"] + g["F-Mean"]) / 2, **g}

    def write_csv(self, folder: str | os.PathLike, split: str = "val") -> tuple[str, str]:
        """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` (official
        names and columns, 3 decimals) plus ``protocol-<split>.txt``; returns the two CSV paths."""
        os.makedirs(folder, exist_ok=True)
        g = self.global_results()
        order = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
        global_path = os.path.join(folder, f"global_results-{split}.csv")
        with open(global_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(order)
            w.writerow([f"{g[k]:.3f}" for k in order])
        seq_path = os.path.join(folder, f"per-sequence_results-{split}.csv")
        with open(seq_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Sequence", "J-Mean", "F-Mean"])
            for name, jm, fm in zip(self.objects, self.stats["J-Mean"], self.stats["F-Mean"]):
                w.writerow([name, f"{jm:.3f}", f"{fm:.3f}"])
        with open(os.path.join(folder, f"protocol-{split}.txt"), "w") as fh:
            fh.write(self.protocol + "\n")
        return global_path, seq_path
