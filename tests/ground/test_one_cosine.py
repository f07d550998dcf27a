"""Every cosine schedule of the project is ``ground.schedules.cosine``, bit for bit equal to the
formula each module wrote out before."""
from __future__ import annotations

import math

from ground.schedules import GroupWarmupCosine, WarmupCosine, WarmupCosineFrom, cosine, cosine_anneal
from models.slotfa import momentum_at
from models.smtc import lr_at
from models.spot_self_training import cosine_weight

TOTAL = 1000
STEPS = range(-5, TOTAL + 20)


def test_warmup_cosine_matches_spot_array() -> None:
    base, low, warmup = 4e-4, 1e-6, 100
    schedule = WarmupCosine(base, low, TOTAL, warmup)
    decay = TOTAL - warmup
    for step in range(warmup, TOTAL + 20):
        i = min(step - warmup, decay - 1)
        assert schedule(step) == low + 0.5 * (base - low) * (1 + math.cos(math.pi * i / decay))


def test_cosine_anneal_matches_slate_temperature() -> None:
    for step in range(1, 30_000, 7):
        progress = step / 30_000
        assert cosine_anneal(step, 1.0, 0.1, 30_000) == 0.1 + 0.5 * (1.0 - 0.1) * (1 + math.cos(math.pi * progress))


def test_warmup_cosine_from_matches_slotcon() -> None:
    base, low, warmup = 0.5, 1e-6, 50
    schedule = WarmupCosineFrom(base, TOTAL, warmup, min_lr=low)
    decay = TOTAL - warmup
    for step in range(warmup, TOTAL + 20):
        t = min(step - warmup, decay) / decay
        assert schedule(step) == low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


def test_group_warmup_cosine_matches_ftdinosaur() -> None:
    peaks, low, warmup = [4e-4, 1e-5, 3e-3], 4e-7, 100
    schedule = GroupWarmupCosine(peaks, low, TOTAL, warmup)
    for step in range(warmup, TOTAL + 20):
        t = (step - warmup) / max(TOTAL - warmup - 1, 1)
        old = 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
        assert schedule(step) == [low + (peak - low) * old for peak in peaks]


def test_slotfa_momentum_matches() -> None:
    for base in (0.99, 0.996):
        for step in STEPS:
            assert momentum_at(step, TOTAL, base) == 1.0 - (1.0 - base) * (math.cos(math.pi * step / TOTAL) + 1) / 2


def test_spot_ce_weight_matches() -> None:
    for step in STEPS:
        i = min(max(step, 0), TOTAL - 1)
        assert cosine_weight(0.01, 0.001, step, TOTAL) == 0.001 + 0.5 * (0.01 - 0.001) * (1 + math.cos(math.pi * i / TOTAL))


def test_smtc_lr_matches_with_its_floor() -> None:
    lr = 1e-4
    for step in STEPS:
        progress = min(step, TOTAL) / TOTAL
        old = 0.1 * lr + 0.5 * (lr - 0.1 * lr) * (1 + math.cos(math.pi * progress))
        assert lr_at(step, TOTAL, lr, False, 0) == old
        assert lr_at(step, TOTAL, lr, True, 10) == old * (0.0 if step < 10 else 0.01)


def test_cosine_endpoints() -> None:
    assert cosine(2.0, 0.5, 0, 10) == 2.0
    assert cosine(2.0, 0.5, 10, 10) == 0.5
    assert cosine(2.0, 0.5, 0.5) == 1.25
