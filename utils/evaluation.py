"""Evaluation of any image slot model that returns ``masks`` (dict of [B, K, h, w]) from forward."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from metrics import SegmentationMetrics, masks_to_labels


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
) -> dict[str, Any]:
    """Score every mask source of ``model`` on ``loader`` (spec section 5.1 pipeline).

    Soft masks are upsampled bilinearly to the ground-truth size before the argmax. Metrics of
    the ``primary_masks`` source (the model's first mask source when it has no such source)
    carry plain names (``fg_ari``, ``mbo_i``...); the others get a suffix (``fg_ari_slots``). Sampling inside the model (Gaussian slot init, random orderings)
    is drawn from a fixed seed so that evaluating one checkpoint twice gives the same numbers,
    without disturbing the training RNG.

    Returns ``{"metrics": {...}, "examples": {...}, "visuals": {...}}`` where examples hold the
    first images and their label maps for visualisation, and visuals the first items of the
    model's optional ``visuals`` output (images such as reconstructions, for prediction pictures).
    """
    was_training = model.training
    model.eval()
    meters: dict[str, SegmentationMetrics] = {}
    mse_sum, num_images = 0.0, 0
    examples: dict[str, torch.Tensor] = {}
    visuals: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            batch = move_to(batch, device)
            out = model(batch)
            b = batch["image"].shape[0]
            mse_sum += float(out["losses"]["mse"]) * b if "mse" in out["losses"] else 0.0
            num_images += b
            gt = batch["mask_instance"]
            _keep(examples, "image", batch["image"], keep_examples)
            _keep(examples, "ground truth", gt, keep_examples)
            for source, masks in out["masks"].items():
                labels = masks_to_labels(masks.float(), tuple(gt.shape[-2:]))
                meter = meters.setdefault(source, SegmentationMetrics())
                meter.update(labels, gt, batch.get("mask_class"), batch.get("mask_ignore"))
                _keep(examples, source, labels, keep_examples)
            for name, values in out.get("visuals", {}).items():
                _keep(visuals, name, values, keep_examples)
    model.train(was_training)
    results: dict[str, Any] = {"mse": mse_sum / max(num_images, 1), "num_images": num_images}
    if primary_masks not in meters and meters:
        primary_masks = next(iter(meters))
    for source, meter in meters.items():
        suffix = "" if source == primary_masks else f"_{source}"
        results.update({f"{name}{suffix}": value for name, value in meter.compute().items()})
    return {"metrics": results, "examples": examples, "visuals": visuals}
