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


class LinearAnneal:
    """A value that moves linearly from ``start_value`` to ``end_value`` between two steps.

    At or before ``start_step`` it is ``start_value``, at or after ``end_step`` it is
    ``end_value``, linear in between. ``end_step <= start_step`` means "constant start value"
    (GNM's convention: an end step of 0 keeps the start value for the whole run).
    """

    def __init__(self, start_value: float, end_value: float, start_step: int = 0, end_step: int = 0) -> None:
        self.start_value, self.end_value = float(start_value), float(end_value)
        self.start_step, self.end_step = int(start_step), int(end_step)

    @classmethod
    def from_values(cls, values: list[float] | tuple[float, ...]) -> "LinearAnneal":
        """``[value]`` (constant) or ``[start_value, end_value, start_step, end_step]``."""
        if len(values) == 1:
            return cls(values[0], values[0])
        if len(values) != 4:
            raise ValueError(f"expected 1 or 4 values (start end start_step end_step), got {len(values)}")
        start_value, end_value, start_step, end_step = values
        return cls(start_value, end_value, int(start_step), int(end_step))

    def __call__(self, step: int) -> float:
        if self.end_step <= self.start_step or step <= self.start_step:
            return self.start_value
        if step >= self.end_step:
            return self.end_value
        progress = (step - self.start_step) / (self.end_step - self.start_step)
        return self.start_value + progress * (self.end_value - self.start_value)
