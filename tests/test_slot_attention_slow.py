"""Slow: Slot Attention with the paper's architecture discovers objects in the shapes scenes.

On ``shapes`` at 64x64, the paper's CNNs (64 channels, 5x5 kernels, 7 slots, 3 iterations;
4x4 broadcast so the decoder has the paper's four stride-2 layers) must reach FG-ARI >= 0.5 on
256 held-out scenes after 768 steps of batch 8 (about 30 minutes of one idle CPU core: 0.28 s of
CPU per 64-px image and training step, measured). Scored on the better of the two mask sources
(alpha masks, slot-attention weights). The paper's recipe except the schedule's decay, spread
over the run. Not yet seen to pass: on 32-px scenes a smaller model had not separated its slots
after 2,048 steps (README, Slot Attention). Run with ``pytest -m slow tests/test_slot_attention_slow.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_slot_attention


@pytest.mark.slow
def test_paper_architecture_reaches_fg_ari_on_shapes(tmp_path: Path) -> None:
    train_slot_attention.main([
        "--dataset", "shapes", "--image_size", "64", "--train_samples", "1024", "--val_samples", "256",
        "--batch_size", "8", "--epochs", "6", "--eval_every", "6", "--decay_steps_pct", "1.0",
        "--num_workers", "0", "--log_path", str(tmp_path),
    ])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 768
    assert max(metrics["fg_ari"], metrics["fg_ari_slots"]) >= 50, metrics
