"""Trivial baselines: one slot, a fixed grid, per-image k-means of features."""
from __future__ import annotations

import torch

from metrics.baselines import baseline_labels, grid_shape, kmeans_masks


def test_grid_and_one_slot() -> None:
    assert grid_shape(7) == (3, 3) and grid_shape(4) == (2, 2)
    grid = baseline_labels("grid", (1, 4, 4), 4)
    assert grid[0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    assert baseline_labels("one_slot", (2, 3, 3), 5).eq(0).all()


def test_kmeans_separates_clearly_separated_feature_groups() -> None:
    # Two images; tokens 0-5 point one way, 6-11 another (plus noise): two clusters per image.
    generator = torch.Generator().manual_seed(0)
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    features = torch.cat([a.expand(6, 3), b.expand(6, 3)])[None].repeat(2, 1, 1)
    features = features + 0.01 * torch.randn(features.shape, generator=generator)
    masks = kmeans_masks(features, num_clusters=2, seed=3)
    assert masks.shape == (2, 2, 12)
    assert masks.sum(dim=1).eq(1).all()  # one-hot per token
    labels = masks.argmax(dim=1)
    for image in labels:
        assert len(set(image[:6].tolist())) == 1 and len(set(image[6:].tolist())) == 1
        assert image[0] != image[6]


def test_kmeans_is_repeatable_and_handles_more_clusters_than_distinct_points() -> None:
    features = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(kmeans_masks(features, 4, seed=7), kmeans_masks(features, 4, seed=7))
    same = torch.ones(1, 5, 4)  # every token identical: all in one cluster, no NaN
    masks = kmeans_masks(same, 3, seed=0)
    assert masks.sum() == 5 and not torch.isnan(masks).any()
