"""Learning-rate and coefficient schedules, as functions of the global step (pure math).

Every cosine in the project is :func:`cosine`. timm's ``CosineLRScheduler`` is not used: it steps
per epoch or update with its own warm-up and cycle semantics, while each schedule here reproduces
one method's own per-step values exactly.
"""
from __future__ import annotations

import math
import warnings


def spot_warmup_steps(lr_warmup_steps: int, num_samples: int, batch_size: int, steps_per_epoch: int) -> int:
    """SPOT rounds the warm-up down to whole epochs: ``int(warmup / (N / B))`` epochs."""
    warmup_epochs = int(lr_warmup_steps / (num_samples / batch_size))
    return warmup_epochs * steps_per_epoch



def _fit_warmup(warmup_steps: int, total_steps: int) -> int:
    """``warmup_steps``, or a tenth of training (with a warning) when it is not shorter than training."""
    if warmup_steps < total_steps:
        return warmup_steps
    clamped = total_steps // 10
    warnings.warn(f"warm-up of {warmup_steps} steps is not shorter than training ({total_steps} steps); "
                  f"using {clamped} (lower --lr_warmup_steps to silence this)", stacklevel=3)
    return clamped

def cosine(start: float, end: float, step: float, total: float = 1.0) -> float:
    """Half-cosine from ``start`` (``step`` 0) to ``end`` (``step == total``):
    ``end + 0.5 (start - end)(1 + cos(pi step / total))``.

    ``pi * step / total`` is evaluated in that order, so callers that hold a progress fraction pass
    it as ``step`` with ``total`` 1 and get ``cos(pi * progress)`` bit for bit. Callers clamp ``step``.
    """
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * step / total))


class WarmupCosine:
    """Linear warm-up from 0 to ``base_lr`` (endpoint included), then cosine to ``min_lr``.

    Matches SPOT's precomputed array: warm-up ``np.linspace(0, base, W)`` followed by
    ``min + 0.5 (base - min)(1 + cos(pi i / L))`` for i in 0..L-1.
    """

    def __init__(self, base_lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> None:
        warmup_steps = _fit_warmup(warmup_steps, total_steps)
        self.base_lr, self.min_lr = base_lr, min_lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / max(self.warmup_steps - 1, 1)
        decay_steps = self.total_steps - self.warmup_steps
        i = min(step - self.warmup_steps, decay_steps - 1)
        return cosine(self.base_lr, self.min_lr, i, decay_steps)


def cosine_anneal(step: int, start: float, final: float, final_step: int, start_step: int = 0) -> float:
    """Half-cosine from ``start`` (at ``start_step``) to ``final`` (at ``final_step``), constant outside.

    SLATE's Gumbel-softmax temperature: 1.0 -> 0.1 over steps 0..30,000.
    """
    if step <= start_step:
        return start
    if step >= final_step:
        return final
    progress = (step - start_step) / (final_step - start_step)
    return cosine(start, final, progress)


class SlateSchedule:
    """SLATE's two learning rates: ``[main, dvae]`` for the optimizer's two parameter groups.

    The main group warms up linearly, ``lr_main * min(1, (step + 1) / warmup_steps)``; the dVAE
    group has no warm-up. With ``patience > 0`` a plateau factor (SLATE's ``lr_decay_factor``)
    halves **both** groups whenever the monitored validation value has not improved for
    ``patience`` evaluations in a row; it multiplies the warm-up instead of being overwritten by
    it (the flaw of a LambdaLR + ReduceLROnPlateau pair). ``warmup=False``
    keeps both rates constant (no warm-up, no decay).

    Its state (best value, stagnation count, factor) goes into checkpoints via ``state_dict``.
    """

    def __init__(
        self,
        lr_main: float,
        lr_dvae: float,
        warmup_steps: int,
        patience: int = 4,
        decay: float = 0.5,
        monitor: str = "loss",
        warmup: bool = True,
    ) -> None:
        self.lr_main, self.lr_dvae, self.warmup_steps = lr_main, lr_dvae, warmup_steps
        self.patience, self.decay, self.monitor, self.warmup = patience, decay, monitor, warmup
        self.factor, self.best, self.stagnant = 1.0, math.inf, 0

    def __call__(self, step: int) -> list[float]:
        if not self.warmup:
            return [self.lr_main, self.lr_dvae]
        ramp = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return [self.lr_main * ramp * self.factor, self.lr_dvae * self.factor]

    def observe(self, metrics: dict[str, float]) -> None:
        """Feed one validation record; halves the factor after ``patience`` evaluations without improvement."""
        if not self.warmup or self.patience <= 0 or self.monitor not in metrics:
            return
        value = float(metrics[self.monitor])
        if value < self.best:
            self.best, self.stagnant = value, 0
            return
        self.stagnant += 1
        if self.stagnant >= self.patience:
            self.factor *= self.decay
            self.stagnant = 0

    def state_dict(self) -> dict[str, float]:
        return {"factor": self.factor, "best": self.best, "stagnant": self.stagnant}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.factor, self.best, self.stagnant = float(state["factor"]), float(state["best"]), int(state["stagnant"])


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
        return cosine(self.base_lr, self.min_lr, t)


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


class WarmupExponentialDecay:
    """Linear warm-up and exponential decay, per step: ``base_lr * min(step / W, 1) * gamma ** (d / H)``.

    ``decay_during_warmup=True`` (``d = step``, the decay runs from step 0): Slot Attention's official
    recipe (docs/methods/slot_attention.md; ``4e-4 * min(step / 1e4, 1) * 0.5 ** (step / 1e5)``)
    and AdaSlot's ``exp_decay_with_warmup_fn``. ``False`` (``d = max(step - W, 0)``): DINOSAUR's
    (OCLF ``exponential_decay_after_optional_warmup``). Both give 0 at step 0 (docs/methods/adaslot.md#recipe).
    With ``gamma`` 0.5, ``decay_steps`` H is the half-life.
    """

    def __init__(self, base_lr: float, warmup_steps: int, decay_steps: int, gamma: float = 0.5,
                 decay_during_warmup: bool = True) -> None:
        if decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {decay_steps}")
        self.base_lr, self.warmup_steps, self.decay_steps, self.gamma = base_lr, warmup_steps, decay_steps, gamma
        self.decay_during_warmup = decay_during_warmup

    def __call__(self, step: int) -> float:
        warmup = min(step / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0
        decayed = step if self.decay_during_warmup else max(step - self.warmup_steps, 0)
        return self.base_lr * warmup * self.gamma ** (decayed / self.decay_steps)


class GroupWarmupCosine:
    """One warm-up + cosine shape for several parameter groups, each with its own peak LR.

    Per step: linear warm-up ``peak * (step + 0.5) / warmup_steps`` for ``step < warmup_steps``,
    then ``min_lr + 0.5 (peak - min_lr)(1 + cos(pi t))`` with ``t = (step - W) / (total - W - 1)``
    clamped to [0, 1]. ``min_lr`` is an absolute LR shared by every group, not a fraction of each
    peak (FT-DINOSAUR's schedule, docs/methods/ftdinosaur.md). Returns one LR per group.
    """

    def __init__(self, peak_lrs: list[float], min_lr: float, total_steps: int, warmup_steps: int) -> None:
        warmup_steps = _fit_warmup(warmup_steps, total_steps)
        self.peak_lrs, self.min_lr = [float(lr) for lr in peak_lrs], float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, step: int) -> list[float]:
        if step < self.warmup_steps:
            ramp = (step + 0.5) / self.warmup_steps
            return [peak * ramp for peak in self.peak_lrs]
        t = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps - 1, 1)
        t = min(max(t, 0.0), 1.0)
        return [cosine(peak, self.min_lr, t) for peak in self.peak_lrs]
