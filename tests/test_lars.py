"""LARS against a hand computation."""
from __future__ import annotations

import torch
from torch import nn

from utils.lars import LARS


def test_lars_step_against_hand_computation() -> None:
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0, -1.0]))  # 1-D: no decay, no trust ratio
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5, 0.5])
    opt = LARS([w, b], lr=0.1, weight_decay=0.1, momentum=0.9, eta=0.001)
    opt.step()
    g = torch.tensor([[0.6 + 0.3, 0.8 + 0.4]])  # grad + wd * w
    update = g * (0.001 * 5.0 / g.norm())
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * update)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.05, -1.0 - 0.05]))
    w.grad, b.grad = torch.zeros(1, 2), torch.zeros(2)
    before = b.detach().clone()
    opt.step()  # momentum carries the previous update (b: mu = 0.9 * 0.5)
    assert torch.allclose(b.detach(), before - 0.1 * 0.45)
