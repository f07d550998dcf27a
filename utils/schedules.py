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


class WarmupExponentialDecay:
    """Slot Attention's schedule: ``base_lr * min(step / warmup, 1) * gamma ** (step / decay)``.

    The official recipe (spec sa_slate_gnm.md 1.1, pitfall 5): the decay runs from step 0, also
    during the linear warm-up, and the rate is 0 at step 0. With 500k steps, warm-up 10k and
    decay 100k steps this is ``4e-4 * min(step / 1e4, 1) * 0.5 ** (step / 1e5)``.
    """

    def __init__(self, base_lr: float, warmup_steps: int, decay_steps: int, gamma: float = 0.5) -> None:
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.base_lr, self.warmup_steps, self.decay_steps, self.gamma = base_lr, warmup_steps, decay_steps, gamma

    def __call__(self, step: int) -> float:
        warmup = min(step / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0
        return self.base_lr * warmup * self.gamma ** (step / self.decay_steps)
