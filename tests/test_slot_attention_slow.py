"""Slow: Slot Attention with the paper's architecture discovers objects in the shapes scenes.

On ``shapes`` at 64x64 the paper's CNNs (64 channels, 5x5 kernels, 7 slots, 3 iterations) must
reach FG-ARI >= 0.5 on 256 held-out scenes within about 30 CPU minutes (fixed step count; the
duration is not asserted). Run with ``pytest -m slow tests/test_slot_attention_slow.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_slot_attention

STEPS_PER_EPOCH = 64  # 1024 scenes, batch 16


@pytest.mark.slow
def test_paper_architecture_reaches_fg_ari_on_shapes(tmp_path: Path) -> None:
    train_slot_attention.main([
        "--dataset", "shapes", "--image_size", "64", "--train_samples", "1024", "--val_samples", "256",
        "--batch_size", "16", "--epochs", "EPOCHS_PLACEHOLDER", "--eval_every", "100", "--num_workers", "0",
        "--log_path", str(tmp_path),
    ])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    metrics = json.loads((run / "metrics.json").read_text())
    best = max(metrics["fg_ari"], metrics["fg_ari_slots"])
    assert best >= 50, metrics
