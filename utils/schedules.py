"""Learning-rate schedules, as functions of the global step."""
from __future__ import annotations

import math
import warnings


def spot_warmup_steps(lr_warmup_steps: int, num_samples: int, batch_size: int, steps_per_epoch: int) -> int:
    """SPOT rounds the warm-up down to whole epochs: ``int(warmup / (N / B))`` epochs."""
    warmup_epochs = int(lr_warmup_steps / (num_samples / batch_size))
    return warmup_epochs * steps_per_epoch


class WarmupCosine:
    """Linear warm-up from 0 to ``base_lr`` (endpoint included), then cosine to ``min_lr``.

    Matches SPOT's precomputed array: warm-up ``np.linspace(0, base, W)`` followed by
    ``min + 0.5 (base - min)(1 + cos(pi i / L))`` for i in 0..L-1.
    """

    def __init__(self, base_lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> None:
        if warmup_steps >= total_steps:
            clamped = total_steps // 10
            warnings.warn(
                f"warm-up of {warmup_steps} steps is not shorter than training ({total_steps} steps); "
                f"using {clamped} (lower --lr_warmup_steps to silence this)",
                stacklevel=2,
            )
            warmup_steps = clamped
        self.base_lr, self.min_lr = base_lr, min_lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / max(self.warmup_steps - 1, 1)
        decay_steps = self.total_steps - self.warmup_steps
        i = min(step - self.warmup_steps, decay_steps - 1)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * i / decay_steps))


class WarmupCosineFrom:
    """SlotCon's per-step LR: linear from ``base_lr / warmup_multiplier`` to ``base_lr`` over
    ``warmup_steps``, then cosine from ``base_lr`` to ``min_lr`` at ``total_steps``."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int, warmup_multiplier: float = 100.0,
                 min_lr: float = 1e-6) -> None:
        self.base_lr, self.total_steps = base_lr, total_steps
        self.warmup_steps = min(warmup_steps, total_steps)
        self.start_lr, self.min_lr = base_lr / warmup_multiplier, min_lr

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_lr + (self.base_lr - self.start_lr) * step / self.warmup_steps
        decay = max(self.total_steps - self.warmup_steps, 1)
        t = min(step - self.warmup_steps, decay) / decay
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))
