"""Video evaluation pipelines for SMTC (docs/video_evaluation.md).

- DAVIS-2017: label propagation and unsupervised multi-object discovery, writing indexed PNGs /
  proposals and scoring them with ``metrics.jf``;
- SegTrack-v2 / FBMS-59: unsupervised discovery scored as single-object foreground J
  (``metrics.foreground``) on the annotated frames;
- JHMDB: keypoint propagation scored with PCK (``metrics.pck``);
- VIP: part propagation scored with mIoU from one confusion matrix (``metrics.confusion``).

All propagation goes through ``utils.label_propagation.propagate``. Nothing is written into the
dataset folder; all outputs go under ``out_dir``.
"""
from __future__ import annotations

import csv
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasets.davis import DavisSequences, read_indexed_png, save_indexed_png, split_void
from datasets.jhmdb import JhmdbVideos
from datasets.video_folders import ForegroundSequences
from datasets.vip import NUM_CLASSES as VIP_CLASSES, VipVideos
from ground.constants import IMAGENET_MEAN, IMAGENET_STD
from ground.errors import UserError
from ground.safe_io import read_torch_file
from metrics.confusion import confusion_matrix, segmentation_scores
from metrics.foreground import binary_iou, merge_proposals
from metrics.jf import JFResults, evaluate_semi_supervised_sequence, evaluate_unsupervised_sequence, split_objects
from metrics.pck import normalised_distances, pck
from models.smtc import SMTCNet, instance_masks
from utils.logging import get_logger
from utils.label_propagation import (
    PropagationSettings,
    grid_to_pixels,
    hard_labels,
    keypoints_to_maps,
    label_grid,
    maps_to_keypoints,
    pixels_to_grid,
    one_hot_labels,
    propagate,
    resize_to_stride,
)

log = get_logger()

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@torch.no_grad()
def frame_features(encoder: torch.nn.Module, frames: torch.Tensor, grid: tuple[int, int], chunk: int = 8) -> torch.Tensor:
    """Pre-LayerNorm last-block tokens of frames [T, 3, H, W], resized (not cropped) to a multiple of
    the patch size, then bilinearly interpolated to ``grid``: [T, C, h, w]."""
    size = resize_to_stride(frames.shape[-2], frames.shape[-1], encoder.patch_size)
    feats = []
    for start in range(0, frames.shape[0], chunk):
        x = F.interpolate(frames[start : start + chunk], size=size, mode="bilinear", align_corners=False)
        tokens = encoder(x)  # [t, N, C]
        gh, gw = encoder.token_grid(size)
        tokens = tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
        feats.append(F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False))
    return torch.cat(feats)


def propagate_video(encoder: torch.nn.Module, frames: torch.Tensor, first_labels: torch.Tensor,
                    settings: PropagationSettings) -> torch.Tensor:
    """Soft labels [T, L, h, w] of a video: frames [T, 3, H, W], first-frame soft labels [L, h, w]
    on the label grid (the one propagation used by every dataset)."""
    feats = frame_features(encoder, frames, tuple(first_labels.shape[-2:]))
    return propagate(feats, first_labels, settings.topk, settings.radius, settings.temperature, settings.num_short)


def run_propagation(encoder: torch.nn.Module, davis: DavisSequences, settings: PropagationSettings,
                    out_dir: Path, device: torch.device) -> None:
    """Propagate the first-frame annotation of every sequence; write indexed PNGs per frame."""
    for seq in davis.sequences:
        frames = torch.from_numpy(davis.load_frames(seq)).to(device)
        first, _ = split_void(davis.load_annotation(seq, davis.frame_names(seq)[0]))
        h, w = frames.shape[-2:]
        grid = label_grid(h, w, settings.stride)
        num_labels = int(first.max()) + 1
        soft0 = one_hot_labels(torch.from_numpy(first.astype(np.int64)).to(device), num_labels, grid)
        soft = propagate_video(encoder, frames, soft0, settings)
        labels = hard_labels(soft, (h, w)).cpu().numpy()
        for name, lab in zip(davis.frame_names(seq), labels):
            save_indexed_png(out_dir / seq / f"{name}.png", lab)


def _read_results(results_dir: Path, seq: str, names: list[str]) -> np.ndarray:
    paths = [results_dir / seq / f"{n}.png" for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"result PNG {missing[0]} not found ({len(missing)} missing in {seq})")
    return np.stack([read_indexed_png(p) for p in paths])


def score_semi_supervised(davis: DavisSequences, results_dir: Path) -> JFResults:
    """Official semi-supervised J&F: first and last frames excluded, void unused."""
    res = JFResults(protocol="semi-supervised label propagation (official DAVIS protocol)")
    for seq in davis.sequences:
        gt, names = davis.load_annotations(seq)
        gt, _ = split_void(gt)
        num_objects = int(gt[0].max())
        pred = _read_results(results_dir, seq, names[1:-1])
        gt_obj = split_objects(gt[1:-1], num_objects)
        pred_obj = split_objects(pred, int(pred.max()))
        j, f = evaluate_semi_supervised_sequence(gt_obj, pred_obj)
        res.add_sequence(seq, j, f)
    return res


@torch.no_grad()
def run_discovery(net: SMTCNet, davis: DavisSequences, out_dir: Path, device: torch.device, size: tuple[int, int],
                  num_frames: int, num_iterations: int, min_cos: float = 0.5, kinetics: bool = True,
                  seed: int = 0) -> None:
    """Instance-mask proposals of every frame in non-overlapping ``num_frames`` windows (the last one
    padded with the video's last frames); saves ``<seq>.pt`` = {frame id: {"masks": [K, h, w],
    "slot_ids": [K]}} with the K instance masks whose semantic-instance cosine is >= ``min_cos``
    (slot id = s * P + p, an identity that is stable over time).

    The random instance initialisation is seeded per sequence (from ``seed`` and its name), so a
    sequence's proposals do not depend on which other sequences ran before it (or on which process).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for seq in davis.sequences:
        torch.manual_seed(seed + zlib.crc32(seq.encode()))
        frames = torch.from_numpy(davis.load_frames(seq)).to(device)
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        if kinetics:  # the original normalises with Kinetics statistics; the encoder applies ImageNet's
            km, ks = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (KINETICS_MEAN, KINETICS_STD))
            im, is_ = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
            frames = (frames - km) / ks * is_ + im
        names = davis.frame_names(seq)
        gh, gw = net.encoder.token_grid(size)
        proposals: dict[str, torch.Tensor] = {}
        for start in range(0, len(names), num_frames):
            idx = [min(i, len(names) - 1) for i in range(start, start + num_frames)]
            out = net(frames[idx][None], num_iterations=num_iterations)
            masks, cos = instance_masks(out)  # [1, T, S, P, N], [1, T, S, P]
            for k, i in enumerate(range(start, min(start + num_frames, len(names)))):
                keep = cos[0, k].flatten() >= min_cos
                proposals[names[i]] = {"masks": masks[0, k].flatten(0, 1)[keep].view(-1, gh, gw).cpu(),
                                       "slot_ids": torch.nonzero(keep).flatten().cpu()}
        torch.save(proposals, out_dir / f"{seq}.pt")


def _gt_objects(davis: DavisSequences, seq: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    gt, names = davis.load_annotations(seq)
    gt, void = split_void(gt)
    return split_objects(gt, int(gt[0].max())), void, names


def score_discovery_per_frame(davis: DavisSequences, proposals_dir: Path, max_proposals: int = 300,
                              threshold: float = 0.3) -> JFResults:
    """SMTC-compatible scoring: per-frame proposals (nearest-upsampled, min-max normalised,
    > ``threshold``, may overlap) matched to GT objects by an independent Hungarian per frame."""
    res = JFResults(protocol="unsupervised discovery, per-frame Hungarian matching, up to "
                             f"{max_proposals} overlapping proposals (SMTC-compatible; NOT the official protocol)")
    for seq in davis.sequences:
        gt, void, names = _gt_objects(davis, seq)
        props = read_torch_file(proposals_dir / f"{seq}.pt", what="proposals file")
        h, w = gt.shape[-2:]
        count = max([props[n]["masks"].shape[0] for n in names] + [1])
        binary = np.zeros((count, len(names), h, w), bool)
        for t, name in enumerate(names):
            m = props[name]["masks"].float()
            if m.shape[0] == 0:
                continue
            m = F.interpolate(m[None], size=(h, w), mode="nearest")[0]
            lo = m.flatten(1).min(1).values.view(-1, 1, 1)
            hi = m.flatten(1).max(1).values.view(-1, 1, 1)
            binary[: m.shape[0], t] = ((m - lo) / (hi - lo + 1e-8) > threshold).numpy()
        j, f = evaluate_unsupervised_sequence(gt, binary, void, matcher="per_frame", max_proposals=max_proposals)
        res.add_sequence(seq, j, f)
    return res


def write_official_proposals(davis: DavisSequences, proposals_dir: Path, png_dir: Path, max_objects: int = 20) -> None:
    """Turn per-frame proposals into the official unsupervised format: one indexed PNG per frame,
    ids consistent over time (id = instance slot), the ``max_objects`` largest ids kept."""
    for seq in davis.sequences:
        props = read_torch_file(proposals_dir / f"{seq}.pt", what="proposals file")
        names = davis.frame_names(seq)
        gt0 = davis.load_annotation(seq, names[0])
        h, w = gt0.shape
        labels = []
        for name in names:
            m, ids = props[name]["masks"], props[name]["slot_ids"]
            if m.shape[0] == 0:
                labels.append(np.zeros((h, w), np.int64))
                continue
            up = F.interpolate(m[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
            labels.append(ids.numpy()[up.argmax(0).numpy()] + 1)
        stack = np.stack(labels)
        ids, counts = np.unique(stack[stack > 0], return_counts=True)
        keep = ids[np.argsort(-counts, kind="stable")][:max_objects]
        remap = np.zeros(int(stack.max()) + 1, np.int64)
        remap[keep] = np.arange(1, len(keep) + 1)
        for name, lab in zip(names, remap[stack]):
            save_indexed_png(png_dir / seq / f"{name}.png", lab)


def score_discovery_official(davis: DavisSequences, png_dir: Path) -> JFResults:
    """Official unsupervised J&F: void used, at most 20 proposals, one Hungarian per sequence."""
    res = JFResults(protocol="unsupervised discovery, one Hungarian matching per sequence, at most 20 "
                             "proposals (official DAVIS protocol)")
    for seq in davis.sequences:
        gt, void, names = _gt_objects(davis, seq)
        pred = _read_results(png_dir, seq, names)
        j, f = evaluate_unsupervised_sequence(gt, split_objects(pred, int(pred.max())), void, matcher="sequence")
        res.add_sequence(seq, j, f)
    return res


# --- Results of the non-DAVIS protocols ------------------------------------------------------------

def write_summary(folder: Path, split: str, protocol: str, summary: dict[str, float],
                  per_sequence: list[tuple[str, dict[str, float]]]) -> None:
    """Write ``results-<split>.csv`` (metric, value), ``per-sequence_results-<split>.csv`` and
    ``protocol-<split>.txt`` into ``folder``; values in [0, 1], 4 decimals."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"results-{split}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["metric", "value"])
        w.writerows([k, f"{v:.4f}"] for k, v in summary.items())
    keys = list(per_sequence[0][1]) if per_sequence else []
    with open(folder / f"per-sequence_results-{split}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Sequence", *keys])
        w.writerows([name, *(f"{row[k]:.4f}" for k in keys)] for name, row in per_sequence)
    (folder / f"protocol-{split}.txt").write_text(protocol + "\n")


def _square_frames(frames: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """Frames resized to size x size (aspect ratio not kept, as CRW does for JHMDB and VIP)."""
    x = torch.from_numpy(frames).to(device)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


# --- JHMDB: keypoint propagation, PCK ---------------------------------------------------------------

def _jhmdb_length(video: str, num_frames: int, num_poses: int) -> int:
    if num_frames != num_poses:
        # Two JHMDB clips have trailing frames without poses; score the frames that have both.
        log.warning(f"{video}: {num_frames} frames but {num_poses} poses; using the first {min(num_frames, num_poses)}")
    return min(num_frames, num_poses)


def run_keypoint_propagation(encoder: torch.nn.Module, jhmdb: JhmdbVideos, settings: PropagationSettings,
                             size: int, out_dir: Path, device: torch.device, sigma: float = 0.5) -> None:
    """Propagate the first-frame joints of every video as Gaussian maps on the label grid of the
    size x size frames; save ``<action>/<video>.npy``: (x, y) pixel positions in the original
    frame, float [T, 15, 2], NaN where a joint's map vanished."""
    for video in jhmdb.sequences:
        frames = jhmdb.load_frames(video)
        joints = jhmdb.load_joints(video)
        n = _jhmdb_length(video, len(frames), len(joints))
        h, w = frames.shape[-2:]
        grid = label_grid(size, size, settings.stride)
        first = pixels_to_grid(torch.from_numpy(joints[0]).float(), (h, w), grid)
        soft0 = keypoints_to_maps(first, grid, sigma).to(device)
        soft = propagate_video(encoder, _square_frames(frames[:n], size, device), soft0, settings)
        points = grid_to_pixels(maps_to_keypoints(soft[:, 1:]).cpu(), (h, w), grid)
        path = out_dir / f"{video}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, points.numpy().astype(np.float64))


def score_keypoints(jhmdb: JhmdbVideos, pred_dir: Path, thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)
                    ) -> tuple[dict[str, float], list[tuple[str, dict[str, float]]]]:
    """PCK over every frame but the first of every video, pooled per joint type, averaged over the 15
    joints; returns the summary ``{"PCK@0.1": ...}`` and per-video PCK."""
    pooled, rows = [], []
    for video in jhmdb.sequences:
        path = pred_dir / f"{video}.npy"
        if not path.is_file():
            raise UserError(f"prediction {path} not found")
        pred = torch.from_numpy(np.load(path))
        gt = torch.from_numpy(jhmdb.load_joints(video))
        n = min(len(pred), len(gt))
        dist = normalised_distances(pred[1:n], gt[1:n]).flatten(0, -2) if n > 1 else torch.zeros(0, gt.shape[1])
        if len(dist):
            pooled.append(dist)
            rows.append((video, {f"PCK@{a}": v for a, v in pck(dist, thresholds).items()}))
    if not pooled:
        raise UserError("no JHMDB video has a frame after the first to score")
    summary = {f"PCK@{a}": v for a, v in pck(torch.cat(pooled), thresholds).items()}
    return summary, rows


# --- VIP: part propagation, mIoU ----------------------------------------------------------------------

def run_part_propagation(encoder: torch.nn.Module, vip: VipVideos, settings: PropagationSettings, size: int,
                         out_dir: Path, device: torch.device) -> None:
    """Propagate the first frame's part labels of every video (frames resized to size x size);
    write one class-id PNG per frame at the original frame size (``<video>/<frame>.png``).

    The label set is the classes present in the first frame's annotation at its own resolution;
    labels go to the grid as one-hot maps averaged down, never as interpolated class ids.
    """
    for video in vip.sequences:
        names = vip.frame_names(video)
        frames = vip.load_frames(video)
        h, w = frames.shape[-2:]
        first = vip.load_parts(video, names[0])
        if first.shape != (h, w):
            raise UserError(f"{video}: annotation {first.shape} and frame {(h, w)} of {names[0]} differ in size")
        label_set = np.unique(first[(first >= 0) & (first < VIP_CLASSES)])
        if len(label_set) == 0:
            raise UserError(f"the first annotation of {video} has no class id in 0..{VIP_CLASSES - 1}")
        index = np.full(first.shape, len(label_set), np.int64)  # ignored ids get no label at all
        for i, c in enumerate(label_set):
            index[first == c] = i
        grid = label_grid(size, size, settings.stride)
        soft0 = one_hot_labels(torch.from_numpy(index).to(device), len(label_set) + 1, grid)[:-1]
        soft = propagate_video(encoder, _square_frames(frames, size, device), soft0, settings)
        labels = label_set[hard_labels(soft, (h, w)).cpu().numpy()]
        for name, lab in zip(names, labels):
            save_indexed_png(out_dir / video / f"{name}.png", lab)


def score_parts(vip: VipVideos, pred_dir: Path) -> tuple[dict[str, float], list[tuple[str, dict[str, float]]]]:
    """One 20 x 20 confusion matrix over every annotated frame except the first of every video;
    returns mIoU, pixel / mean accuracy and frequency-weighted IoU, plus per-video mIoU."""
    total = torch.zeros(VIP_CLASSES, VIP_CLASSES, dtype=torch.float64)
    rows = []
    for video in vip.sequences:
        first = vip.frame_names(video)[0]
        conf = torch.zeros_like(total)
        for name in vip.annotated_names(video):
            if name == first:
                continue
            gt = torch.from_numpy(vip.load_parts(video, name))
            path = pred_dir / video / f"{name}.png"
            if not path.is_file():
                raise UserError(f"prediction {path} not found")
            pred = torch.from_numpy(read_indexed_png(path).astype(np.int64))
            if pred.shape != gt.shape:  # nearest only: class ids must never be blended
                pred = F.interpolate(pred[None, None].float(), size=tuple(gt.shape), mode="nearest")[0, 0].long()
            conf += confusion_matrix(gt, pred, VIP_CLASSES)
        if conf.sum() > 0:
            rows.append((video, {"mIoU": segmentation_scores(conf)["mIoU"]}))
        total += conf
    if total.sum() == 0:
        raise UserError("no annotated VIP frame after the first to score")
    scores = segmentation_scores(total)
    summary: dict[str, float] = {k: v for k, v in scores.items() if k != "per_class_iou"}
    return summary, rows


# --- SegTrack-v2 / FBMS-59: unsupervised discovery, foreground J ------------------------------------

def score_foreground(seqs: ForegroundSequences, proposals_dir: Path
                     ) -> tuple[dict[str, Any], list[tuple[str, dict[str, float]]]]:
    """J of the merged foreground on every annotated frame (``metrics.foreground.merge_proposals``):
    ``J-Mean (frames)`` averages over all scored frames of all sequences, ``J-Mean (sequences)``
    over the per-sequence means."""
    per_frame, rows = [], []
    for seq in seqs.sequences:
        props = read_torch_file(proposals_dir / f"{seq}.pt", what="proposals")
        values = []
        for name in seqs.annotated_names(seq):
            if name not in props:
                raise UserError(f"{proposals_dir / (seq + '.pt')} has no proposals for frame {name}; it was made "
                                "from other data: use a new --output_dir")
            gt = torch.from_numpy(seqs.load_foreground(seq, name))
            pred = merge_proposals(props[name]["masks"], gt)
            values.append(float(binary_iou(pred, gt)))
        per_frame.extend(values)
        rows.append((seq, {"J-Mean": float(np.mean(values)), "frames": float(len(values))}))
    summary = {"J-Mean (frames)": float(np.mean(per_frame)),
               "J-Mean (sequences)": float(np.mean([r["J-Mean"] for _, r in rows])),
               "frames": float(len(per_frame))}
    return summary, rows
