"""Trivial segmentations that every model should beat: everything in one slot, a fixed grid, and
per-image k-means of the encoder's features (docs/quickstart.md says why the last one matters)."""
from __future__ import annotations

import math

import torch


def grid_shape(num_slots: int) -> tuple[int, int]:
    """Rows x columns of the most square grid with at least ``num_slots`` cells."""
    rows = max(1, round(math.sqrt(num_slots)))
    return rows, math.ceil(num_slots / rows)


def baseline_labels(name: str, shape: torch.Size | tuple[int, ...], num_slots: int) -> torch.Tensor:
    """Label maps [B, H, W] of baseline ``one_slot`` (all zeros) or ``grid`` (fixed cells)."""
    b, h, w = shape
    if name == "one_slot":
        return torch.zeros(b, h, w, dtype=torch.long)
    if name == "grid":
        rows, cols = grid_shape(num_slots)
        r = torch.arange(h) * rows // h
        c = torch.arange(w) * cols // w
        return (r[:, None] * cols + c[None, :]).expand(b, h, w).clone()
    raise ValueError(f"unknown baseline {name!r}")


def kmeans_masks(features: torch.Tensor, num_clusters: int, iterations: int = 20, seed: int = 0) -> torch.Tensor:
    """Per-image k-means of token features [B, N, D]: one-hot cluster masks [B, K, N].

    Each image is clustered on its own (Lloyd's algorithm in float32 on L2-normalised features,
    k-means++ initialisation from a generator seeded with ``seed``, so the result is repeatable).
    A cluster that loses all its points keeps its previous centre. The masks can be scored like a
    model's slot masks: upsampled to the ground-truth size, then the argmax.
    """
    b, n, _ = features.shape
    k = min(num_clusters, n)
    x = torch.nn.functional.normalize(features.float(), dim=-1)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    masks = torch.zeros(b, num_clusters, n, dtype=torch.float32, device=features.device)
    for i in range(b):
        points = x[i]
        centres = _kmeans_pp(points, k, generator)
        for _ in range(iterations):
            assign = torch.cdist(points, centres).argmin(dim=1)  # [N]
            for c in range(k):
                members = points[assign == c]
                if len(members):
                    centres[c] = members.mean(dim=0)
        assign = torch.cdist(points, centres).argmin(dim=1)
        masks[i, assign, torch.arange(n, device=features.device)] = 1.0
    return masks


def _kmeans_pp(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre is drawn with probability proportional to squared distance."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [points[first]]
    dist = ((points - centres[0]) ** 2).sum(dim=1)
    for _ in range(1, k):
        weights = dist.cpu().double()
        index = int(torch.multinomial(weights, 1, generator=generator)) if weights.sum() > 0 else int(
            torch.randint(n, (1,), generator=generator))
        centres.append(points[index])
        dist = torch.minimum(dist, ((points - points[index]) ** 2).sum(dim=1))
    return torch.stack(centres).clone()
