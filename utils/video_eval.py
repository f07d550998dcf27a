"""DAVIS-2017 video evaluation pipelines (SMTC spec 1.9-1.11): label propagation and unsupervised
multi-object discovery, writing indexed PNGs / proposals and scoring them with ``metrics.jf``.

Nothing is written into the dataset folder; all outputs go under ``out_dir``.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datasets.davis import DavisSequences, read_indexed_png, save_indexed_png, split_void
from metrics.jf import JFResults, evaluate_semi_supervised_sequence, evaluate_unsupervised_sequence, split_objects
from models.smtc import SMTCNet, instance_masks
from utils.errors import UserError
from utils.label_propagation import (
    PropagationSettings,
    hard_labels,
    label_grid,
    one_hot_labels,
    propagate,
    resize_to_stride,
)
from utils.safe_io import read_torch_file

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def run_propagation(encoder: torch.nn.Module, davis: DavisSequences, settings: PropagationSettings,
                    out_dir: Path, device: torch.device) -> None:
    """Propagate the first-frame annotation of every sequence; write indexed PNGs per frame."""
    for seq in davis.sequences:
        frames = torch.from_numpy(davis.load_frames(seq)).to(device)
        first, _ = split_void(davis.load_annotation(seq, davis.frame_names(seq)[0]))
        h, w = frames.shape[-2:]
        grid = label_grid(h, w, settings.stride)
        feats = frame_features(encoder, frames, grid)
        num_labels = int(first.max()) + 1
        soft0 = one_hot_labels(torch.from_numpy(first.astype(np.int64)).to(device), num_labels, grid)
        soft = propagate(feats, soft0, settings.topk, settings.radius, settings.temperature, settings.num_short)
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
