"""Evaluation of any image slot model that returns ``masks`` (dict of [B, K, h, w]) from forward."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from ground.errors import UserError
from metrics import SegmentationMetrics, masks_to_labels
from utils import distributed
from metrics.adaptive import AdaptiveSlotMetrics


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch dict to ``device``."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _keep(examples: dict[str, torch.Tensor], key: str, values: torch.Tensor, limit: int) -> None:
    """Collect the first ``limit`` items of ``values`` across batches, on the CPU."""
    have = examples.get(key, values[:0].cpu())
    if len(have) < limit:
        examples[key] = torch.cat([have, values[: limit - len(have)].cpu()])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    seed: int = 0,
    primary_masks: str = "decoder",
    progress: bool = False,
    keep_examples: int = 8,
    masks_optional: bool = False,
) -> dict[str, Any]:
    """Score every mask source of ``model`` on ``loader`` (docs/metrics.md#pipeline).

    Soft masks are upsampled bilinearly to the ground-truth size before the argmax. Metrics of
    the ``primary_masks`` source (the model's first mask source when it has no such source)
    carry plain names (``fg_ari``, ``mbo_i``...); the others get a suffix (``fg_ari_slots``). Sampling inside the model (Gaussian slot init, random orderings)
    is drawn from a fixed seed so that evaluating one checkpoint twice gives the same numbers,
    without disturbing the training RNG.

    Under DDP, pass a loader whose sampler is a :class:`utils.distributed.ShardSampler`: each
    rank scores its shard and the per-image sums and counts (not per-rank means) are added over
    ranks, so every rank returns the metrics of the whole dataset. Loaders with any other
    sampler are never reduced (every rank would otherwise count the full set once more).

    Models that decide per-slot keep/drop (``slot_keep`` in their output, e.g. AdaSlot) also get
    :class:`metrics.adaptive.AdaptiveSlotMetrics` on the primary masks (kept slots only):
    pair-counting precision/recall/F1, AMI, NMI, purity, kept slots per image, and ``keep_rule``
    (how the keep decisions were made, e.g. ``gumbel`` sampling or ``threshold``).

    With ``masks_optional`` a loader without ground-truth masks (``mask_instance``) is scored
    on reconstruction only (``mse``, ``loss``); otherwise it is an error.

    Returns ``{"metrics": {...}, "examples": {...}, "visuals": {...}}`` where examples hold the
    first images and their label maps for visualisation (of this rank's shard), and visuals the
    first items of the model's optional ``visuals`` output (images such as reconstructions, for
    prediction pictures).
    """
    was_training = model.training
    model.eval()
    meters: dict[str, SegmentationMetrics] = {}
    mse_sum, loss_sum, num_images = 0.0, 0.0, 0
    examples: dict[str, torch.Tensor] = {}
    adaptive: AdaptiveSlotMetrics | None = None
    keep_rule = None
    visuals: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            has_gt = "mask_instance" in batch
            if not has_gt and not masks_optional:
                raise UserError("this split has no ground-truth masks (training splits of the real datasets carry "
                                "images only); evaluate a split with masks, e.g. --split val")
            batch = move_to(batch, device)
            out = model(batch)
            b = batch["image"].shape[0]
            mse_sum += float(out["losses"]["mse"]) * b if "mse" in out["losses"] else 0.0
            loss_sum += float(out["loss"]) * b
            num_images += b
            _keep(examples, "image", batch["image"], keep_examples)
            if has_gt:
                gt = batch["mask_instance"]
                _keep(examples, "ground truth", gt, keep_examples)
            for source, masks in out["masks"].items():
                labels = masks_to_labels(masks.float(), tuple((gt if has_gt else batch["image"]).shape[-2:]))
                if not has_gt:  # pictures only: nothing to score the masks against
                    _keep(examples, source, labels, keep_examples)
                    continue
                meter = meters.setdefault(source, SegmentationMetrics())
                meter.update(labels, gt, batch.get("mask_class"), batch.get("mask_ignore"))
                _keep(examples, source, labels, keep_examples)
                if source == primary_masks and "slot_keep" in out:
                    adaptive = adaptive or AdaptiveSlotMetrics()
                    adaptive.update(labels, gt, batch.get("mask_ignore"), out["slot_keep"], out.get("slot_keep_prob"))
                    keep_rule = out.get("keep_rule")
            for name, values in out.get("visuals", {}).items():
                _keep(visuals, name, values, keep_examples)
    model.train(was_training)
    if isinstance(getattr(loader, "sampler", None), distributed.ShardSampler) and distributed.world_size() > 1:
        (mse_sum, loss_sum), num_images, meters, adaptive = _merge_over_ranks(
            (mse_sum, loss_sum), num_images, meters, adaptive)
    results: dict[str, Any] = {
        "mse": mse_sum / max(num_images, 1),
        "loss": loss_sum / max(num_images, 1),  # monitored by plateau LR decay (SLATE)
        "num_images": num_images,
    }
    if primary_masks not in meters and meters:
        primary_masks = next(iter(meters))
    for source, meter in meters.items():
        suffix = "" if source == primary_masks else f"_{source}"
        results.update({f"{name}{suffix}": value for name, value in meter.compute().items()})
    if adaptive is not None:
        results.update(adaptive.compute(), keep_rule=keep_rule)
    return {"metrics": results, "examples": examples, "visuals": visuals}


def _merge_over_ranks(
    sums: tuple[float, ...],
    num_images: int,
    meters: dict[str, SegmentationMetrics],
    adaptive: AdaptiveSlotMetrics | None,
) -> tuple[tuple[float, ...], int, dict[str, SegmentationMetrics], AdaptiveSlotMetrics | None]:
    """Add every rank's sums and counts (a rank with an empty shard contributes nothing)."""
    gathered = distributed.all_gather_objects((sums, num_images, meters, adaptive))
    totals, total_images = [0.0] * len(sums), 0
    merged: dict[str, SegmentationMetrics] = {}
    merged_adaptive: AdaptiveSlotMetrics | None = None
    for rank_sums, rank_images, rank_meters, rank_adaptive in gathered:
        if rank_adaptive is not None:
            merged_adaptive = merged_adaptive or AdaptiveSlotMetrics()
            merged_adaptive.merge(rank_adaptive)
        totals = [t + r for t, r in zip(totals, rank_sums)]
        total_images += rank_images
        for source, meter in rank_meters.items():
            merged.setdefault(source, SegmentationMetrics(meter.names)).merge(meter)
    # Keep the rank-0 order of mask sources (dicts preserve insertion order).
    return tuple(totals), total_images, merged, merged_adaptive
