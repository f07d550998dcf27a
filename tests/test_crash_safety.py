"""Crash safety: SIGKILL at a random moment (and during a checkpoint write), SIGTERM, exact resume."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train_spot
from ground.errors import UserError
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "8",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--epochs", "12", "--eval_every", "4", "--seed", "3",
]
TOTAL_STEPS = 48
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce."""
    log_path = tmp_path_factory.mktemp("reference")
    train_spot.main([*TINY, "--log_path", str(log_path)])
    return next(log_path.iterdir())


def assert_same_run(run: Path, reference: Path) -> None:
    a, b = load_checkpoint(reference), load_checkpoint(run)
    assert b["step"] == a["step"] == TOTAL_STEPS
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert json.loads((run / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [16, 32, 48]  # one line per evaluation, none repeated after the crash
    assert not list(run.glob(".*.tmp"))  # no temporary file left behind


def start(log_path: Path, *extra: str, code: str | None = None) -> subprocess.Popen:
    argv = [*TINY, "--log_path", str(log_path), *extra]
    if code is None:
        command = [sys.executable, "train_spot.py", *argv]
    else:  # run train_spot.main(argv) after some test-only set-up code
        command = [sys.executable, "-c", f"{code}\nimport train_spot\ntrain_spot.main({argv!r})"]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(log_path: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    """The run folder, once training has started (its TensorBoard file exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = list(log_path.glob("*/events.out.tfevents.*"))
        if events:
            return events[0].parent
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("training did not start")


def test_sigkill_at_a_random_moment_then_resume_matches(tmp_path: Path, reference: Path) -> None:
    delay = random.Random().uniform(0.0, 1.5)  # anywhere from set-up to the end of training
    process = start(tmp_path, "--checkpoint_every", "1")  # checkpoints every step: kills often land mid-write
    run = wait_for_training(tmp_path, process)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    step = load_checkpoint(run)["step"] if (run / "checkpoint.pt.tar").exists() else 0
    train_spot.main(["--resume", str(run)])
    assert_same_run(run, reference), f"killed after {delay:.2f} s at step {step}"


# Writes half of the 4th checkpoint, then the process dies as if killed (SIGKILL) mid-write.
KILL_IN_WRITE = """
import os, signal, torch
original, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 4:
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return original(obj, f, *args, **kwargs)
torch.save = save
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path, reference: Path) -> None:
    process = start(tmp_path, "--checkpoint_every", "2", code=KILL_IN_WRITE)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    run = next(tmp_path.iterdir())
    assert list(run.glob(".checkpoint.pt.tar.*.tmp"))  # the half-written file
    assert load_checkpoint(run)["step"] == 6  # the 3rd checkpoint (steps 2, 4, 6) is intact
    train_spot.main(["--resume", str(run)])
    assert_same_run(run, reference)


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path: Path, reference: Path) -> None:
    process = start(tmp_path)
    run = wait_for_training(tmp_path, process)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    step = load_checkpoint(run)["step"]
    assert 0 < step < TOTAL_STEPS, stderr[-2000:]
    assert f"stopped by SIGTERM at step {step}/{TOTAL_STEPS}" in stderr
    assert not (run / "metrics.json").exists()  # not finished
    train_spot.main(["--resume", str(run)])
    assert_same_run(run, reference)


def test_timeout_stops_cleanly_and_resume_finishes(tmp_path: Path, reference: Path) -> None:
    train_spot.main([*TINY, "--log_path", str(tmp_path), "--timeout", "0.5s"])
    run = next(tmp_path.iterdir())
    assert 0 < load_checkpoint(run)["step"] < TOTAL_STEPS
    train_spot.main(["--resume", str(run), "--timeout", "24h"])  # the recorded limit would stop it again
    assert_same_run(run, reference)


def test_skip_nonfinite_skips_and_counts(tmp_path: Path, monkeypatch) -> None:
    from models.spot import SPOT

    original, calls = SPOT.forward, [0]

    def nan_on_third_training_step(self, batch):
        out = original(self, batch)
        if self.training:
            calls[0] += 1
            if calls[0] == 3:
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SPOT, "forward", nan_on_third_training_step)
    short = [*TINY, "--epochs", "2", "--log_path", str(tmp_path)]
    with pytest.raises(UserError, match="loss became nan at step 2"):
        train_spot.main(short)
    calls[0] = 0
    train_spot.main([*short, "--skip_nonfinite"])
    run = max(tmp_path.iterdir())
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 8 and ckpt["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
