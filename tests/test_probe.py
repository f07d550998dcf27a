"""k-NN / linear probe and prototype scores on frozen features."""
from __future__ import annotations

import pytest
import torch

from utils.probe import knn_accuracy, linear_probe_accuracy, prototype_scores


def test_probes_on_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    y = torch.arange(3).repeat(20)
    x = centres[y] + 0.5 * torch.randn(60, 3, generator=g)
    assert knn_accuracy(x[:45], y[:45], x[45:], y[45:], k=5) == 100.0
    train_acc, test_acc = linear_probe_accuracy(x[:45], y[:45], x[45:], y[45:], epochs=100)
    assert train_acc == 100.0 and test_acc == 100.0
    flipped = (y[45:] + 1) % 3  # wrong labels score 0
    assert knn_accuracy(x[:45], y[:45], x[45:], flipped, k=5) == 0.0


def test_prototype_scores_average_over_claimed_pixels() -> None:
    dots = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]], [[0.0, 0.0]]]])  # [1, 3 prototypes, 1, 2]
    scores = prototype_scores(dots)[0]
    assert scores[0].item() == pytest.approx(0.9, abs=1e-5) and scores[1].item() == pytest.approx(0.8, abs=1e-5)
    assert scores[2].item() == pytest.approx(0.0, abs=1e-5)  # wins nothing: about its plain mean
