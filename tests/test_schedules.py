import math

import numpy as np
import pytest

from ground.schedules import WarmupCosine, spot_warmup_steps


def spot_reference(base, final, epochs, iters, warmup_epochs):
    """SPOT's precomputed array: linspace warm-up, then cosine over the remaining iterations."""
    warmup = np.linspace(0, base, warmup_epochs * iters)
    rest = np.arange(epochs * iters - warmup_epochs * iters)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * rest / len(rest)))
    return np.concatenate([warmup, cosine])


def test_matches_spot_array():
    reference = spot_reference(4e-4, 4e-7, epochs=10, iters=7, warmup_epochs=2)
    schedule = WarmupCosine(4e-4, 4e-7, total_steps=70, warmup_steps=14)
    np.testing.assert_allclose([schedule(i) for i in range(70)], reference, rtol=1e-12)


def test_warmup_rounds_down_to_whole_epochs():
    # COCO: 118,287 images, batch 64 -> 1,848 iterations/epoch, 5 warm-up epochs = 9,240 steps.
    assert spot_warmup_steps(10000, 118287, 64, 1848) == 9240
    assert spot_warmup_steps(10000, 10582, 64, 165) == 9900


def test_too_long_warmup_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="lower --lr_warmup_steps"):
        schedule = WarmupCosine(1.0, 0.0, total_steps=10, warmup_steps=50)
    assert schedule.warmup_steps == 1
    assert math.isclose(schedule(9), 0.5 * (1 + math.cos(math.pi * 8 / 9)))


def test_warmup_exponential_decay_is_the_official_formula():
    from ground.schedules import WarmupExponentialDecay

    schedule = WarmupExponentialDecay(4e-4, warmup_steps=10_000, decay_steps=100_000, gamma=0.5)
    for step in (0, 1, 5_000, 10_000, 123_456, 499_999):
        expected = 4e-4 * min(step / 10_000, 1) * 0.5 ** (step / 100_000)
        assert abs(schedule(step) - expected) < 1e-15, step
    assert schedule(0) == 0.0
    # The decay also runs during the warm-up (as AdaSlot's schedule does).
    assert schedule(5_000) < 2e-4
    assert WarmupExponentialDecay(1.0, warmup_steps=0, decay_steps=10)(0) == 1.0
