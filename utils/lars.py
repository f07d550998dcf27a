"""LARS (Barlow Twins style), the optimiser of SlotCon/SlotFA's recipes."""
from __future__ import annotations

from typing import Iterable

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios.

    For every parameter with ``ndim != 1`` (weights, prototypes): the weight decay is added to
    the gradient, which is then scaled by ``eta * |w| / |g|`` (1 when either norm is zero).
    1-D parameters (biases, BatchNorm) get neither. Then ``mu = momentum * mu + g`` and
    ``w -= lr * mu``.
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim != 1:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(grad)
                    one = torch.ones_like(param_norm)
                    ratio = torch.where(param_norm > 0,
                                        torch.where(update_norm > 0, group["eta"] * param_norm / update_norm, one), one)
                    grad = grad.mul(ratio)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(grad)
                p.add_(mu, alpha=-group["lr"])
        return loss
