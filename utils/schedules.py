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


class ExponentialDecayWarmup:
    """Linear warm-up and exponential decay (halving every ``half_life`` steps), per step.

    ``decay_during_warmup=True`` is AdaSlot's ``exp_decay_with_warmup_fn``:
    ``lr(s) = base * min(1, s / W) * 0.5 ** (s / H)`` (the decay counts from step 0).
    ``False`` is DINOSAUR's (OCLF ``exponential_decay_after_optional_warmup``):
    ``base * s / W`` for ``s < W``, then ``base * 0.5 ** ((s - W) / H)``.
    Both give 0 at step 0 (spec/adaslot.md section 2.3).
    """

    def __init__(self, base_lr: float, warmup_steps: int, half_life: int, decay_during_warmup: bool = True) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        self.base_lr, self.warmup_steps, self.half_life = base_lr, warmup_steps, half_life
        self.decay_during_warmup = decay_during_warmup

    def __call__(self, step: int) -> float:
        warm = min(1.0, step / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        decay_steps = step if self.decay_during_warmup else max(step - self.warmup_steps, 0)
        return self.base_lr * warm * 0.5 ** (decay_steps / self.half_life)
