"""End to end: train_slot_attention.py on tiny shapes scenes, exact resume, eval_spot.py dispatch, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval_spot
import train_slot_attention
from ground.errors import UserError
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "--dataset", "shapes", "--image_size", "32", "--decoder_upsamples", "2", "--num_slots", "3",
    "--slot_size", "16", "--mlp_hidden_size", "16", "--encoder_channels", "8", "--decoder_channels", "8",
    "--kernel_size", "3", "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16",
    "--val_samples", "8", "--num_workers", "0",
]


def train(tmp_path: Path, *extra: str, epochs: int = 2) -> Path:
    train_slot_attention.main([*TINY, "--epochs", str(epochs), "--log_path", str(tmp_path), *extra])
    return sorted(p for p in tmp_path.iterdir() if p.is_dir())[-1]


def test_train_then_eval_through_the_generic_dispatch(tmp_path: Path) -> None:
    run = train(tmp_path / "logs", "--implicit_grad", "True")
    for name in ("args.yaml", "checkpoint.pt.tar", "metrics.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    final = json.loads((run / "metrics.json").read_text())
    assert {"fg_ari", "ari", "fg_ari_slots", "ari_slots", "mbo_i"} <= set(final)
    assert sorted(p.name for p in (run / "viz").glob("*.png")) == [
        "step_0000004.png", "step_0000004_predictions.png", "step_0000008.png", "step_0000008_predictions.png"]
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "slot_attention" and ckpt["encoder"] is None and ckpt["step"] == 8
    assert ckpt["model_config"]["implicit_grad"] is True and ckpt["model_config"]["image_size"] == 32
    # The frozen slot init of the implicit gradient is stored (it cannot be rebuilt).
    assert "slot_attention.init.mu" in ckpt["model"]

    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8", "--num_workers", "0",
              "--no_progress"]
    record = eval_spot.main([*common, "--baselines", "--num_slots", "3"])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["evaluated_by"] == "eval_spot.py" and saved["method"] == "slot_attention"
    assert "eval_permutations" not in saved and "grid_fg_ari" in saved
    assert record["fg_ari"] == final["fg_ari"] and record["fg_ari_slots"] == final["fg_ari_slots"]
    for name in ("masks.png", "predictions.png"):
        assert (run / name).is_file(), name


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = train(tmp_path / "full", epochs=2)
    part = train(tmp_path / "part", "--max_steps", "3", epochs=2)
    assert load_checkpoint(part)["step"] == 3
    train_slot_attention.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert json.loads((full / "metrics.json").read_text()) == json.loads((part / "metrics.json").read_text())


def test_schedule_and_no_clipping_by_default(tmp_path: Path, monkeypatch) -> None:
    from utils.train import Trainer

    seen = []
    original = Trainer.train_step

    def spy(self, batch):
        terms = original(self, batch)
        seen.append((terms["lr"], self.cfg.clip))
        return terms

    monkeypatch.setattr(Trainer, "train_step", spy)
    train(tmp_path, "--warmup_steps_pct", "0.25", "--decay_steps_pct", "0.5", "--lr_main", "1e-3", epochs=2)
    # 8 steps: warm-up 2 steps, halving every 4 steps, from step 0.
    expected = [1e-3 * min(s / 2, 1) * 0.5 ** (s / 4) for s in range(8)]
    assert [lr for lr, _ in seen] == pytest.approx(expected)
    assert all(clip == float("inf") for _, clip in seen)


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_before_any_run_folder(tmp_path: Path) -> None:
    result = run_cli("train_slot_attention.py", "--log_path", str(tmp_path), "--image_size", "40")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "--image_size 40 is not divisible by 2**--decoder_upsamples = 16" in lines[0]
    cases = [
        (["--lr_min", "1e-6"], "--lr_min is not used by Slot Attention's schedule; use --scheduler_gamma"),
        (["--decay_steps_pct", "0"], "--decay_steps_pct must be > 0"),
        (["--kernel_size", "4"], "--kernel_size 4 must be odd"),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=message):
            train_slot_attention.main(["--log_path", str(tmp_path), *args])
    assert not any(tmp_path.iterdir())


def test_eval_rejects_flags_of_other_methods(tmp_path: Path) -> None:
    run = train(tmp_path, epochs=1)
    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "4", "--num_workers", "0"]
    with pytest.raises(UserError, match="--eval_permutations all: not a flag for evaluating a slot_attention"):
        eval_spot.main([*common, "--eval_permutations", "all"])
    with pytest.raises(UserError, match="--decoder_channels 16 does not match the checkpoint \\(8\\)"):
        eval_spot.main([*common, "--decoder_channels", "16"])
    with pytest.raises(UserError, match="has no pretrained encoder"):
        eval_spot.main([*common, "--which_encoder", "dino_vits8"])
    with pytest.raises(UserError, match="--num_slots 5 differs from the resumed run"):
        train_slot_attention.main(["--resume", str(run), "--num_slots", "5"])
