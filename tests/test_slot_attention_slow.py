"""Slow (issue #9): Slot Attention with the paper's architecture discovers objects in 30 CPU minutes.

Criterion: on ``shapes`` at 64x64, the paper's CNNs (64 channels, 5x5 kernels, ReLU; 7 slots, 3
iterations, slot size 64, MLP 128; four stride-2 decoder layers from a 4x4 broadcast) reach
FG-ARI >= 0.5 on 256 held-out scenes within 30 minutes of one CPU core.

Budget: 720 steps of batch 8. One training step (forward + backward + Adam, one intra-op thread)
costs 2.4-2.5 s of process CPU time (``time.process_time``) on the project's CPU machine, measured
while the 2 cores were shared, so 720 steps are at most 30 CPU minutes of training (evaluation not
counted). Scored on the decoder's alpha masks, the paper's mask source. Evaluated every 120 steps,
so ``metrics.jsonl`` holds the FG-ARI curve (about every 5 CPU minutes).

Not yet seen to pass: the last full run of this architecture at this budget (768 steps) ended at
FG-ARI 5.5 / mBO 6.2, the slots had not broken symmetry (README, Slot Attention).
Run with ``pytest -m slow tests/test_slot_attention_slow.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_slot_attention


@pytest.mark.slow
def test_paper_architecture_reaches_fg_ari_on_shapes(tmp_path: Path) -> None:
    train_slot_attention.main([
        "--dataset", "shapes", "--image_size", "64", "--train_samples", "960", "--val_samples", "256",
        "--batch_size", "8", "--epochs", "6", "--eval_every", "1", "--decay_steps_pct", "1.0",
        "--num_workers", "0", "--log_path", str(tmp_path),
    ])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 720
    assert metrics["fg_ari"] >= 50, [(r.get("step"), r.get("fg_ari"), r.get("fg_ari_slots")) for r in curve]
