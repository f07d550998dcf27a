"""Frozen-feature evaluation of pretrained backbones (k-NN and linear probe) and prototype statistics."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

KNN_TEMPERATURE = 0.07  # DINO's weighted k-NN


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, num_classes: int | None = None) -> float:
    """Top-1 accuracy (%) of a cosine k-NN with votes weighted by exp(similarity / 0.07)."""
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    sims = F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).t()
    k = min(k, train_x.shape[0])
    top, idx = sims.topk(k, dim=1)
    votes = torch.zeros(test_x.shape[0], num_classes, dtype=sims.dtype)
    votes.scatter_add_(1, train_y[idx], (top / KNN_TEMPERATURE).exp())
    return float((votes.argmax(dim=1) == test_y).float().mean() * 100)


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                          epochs: int = 200, lr: float = 0.1, weight_decay: float = 0.0, seed: int = 0,
                          num_classes: int | None = None) -> tuple[float, float]:
    """(train, test) top-1 accuracy (%) of a full-batch softmax regression on standardised features."""
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.01)
        head.bias.zero_()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(head(xs), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy: Callable[[torch.Tensor, torch.Tensor], float] = lambda x, y: float((head(x).argmax(1) == y).float().mean() * 100)  # noqa: E731
        return accuracy(xs, train_y), accuracy(xt, test_y)


def prototype_scores(dots: torch.Tensor) -> torch.Tensor:
    """[N, K]: per image, the mean score of prototype k over the pixels it wins (viz_slots' ranking).

    The winner mask gets +1e-6 everywhere, so a prototype that wins no pixel scores about its
    plain spatial mean (as upstream).
    """
    winners = F.one_hot(dots.argmax(dim=1), dots.shape[1]).permute(0, 3, 1, 2).float() + 1e-6
    return (dots * winners).sum(dim=(2, 3)) / winners.sum(dim=(2, 3))
