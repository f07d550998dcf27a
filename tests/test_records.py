"""Records that cannot lie: an edited args.yaml, a diverged run, the last-checkpoint claim, bad numbers."""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train_spot
from ground.errors import UserError
from utils.checkpoint import CHECKPOINT_NAME, load_checkpoint
from utils.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "0",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--epochs", "1", "--data_seed", "0",
]


def one_error_line(capsys, call) -> str:
    """The single ``error:`` line that ``call`` (run like an entry script) ends with."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(call)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    lines = re.findall(r"error: .*", err)  # (a progress bar may share the terminal line)
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_an_edited_args_yaml_is_refused_on_resume(tmp_path: Path, capsys) -> None:
    train_spot.main([*TINY, "--log_path", str(tmp_path)])
    run = next(tmp_path.iterdir())
    record = yaml.safe_load((run / "args.yaml").read_text())
    before = (run / CHECKPOINT_NAME).read_bytes()
    (run / "args.yaml").write_text(yaml.safe_dump({**record, "num_slots": 7, "lr_main": 0.5}))
    line = one_error_line(capsys, lambda: train_spot.main(["--resume", str(run), "--epochs", "2"]))
    assert "args.yaml differs from the flags stored in its checkpoint" in line
    assert "lr_main: 0.5 in args.yaml vs 0.0004 in the checkpoint" in line
    assert "num_slots: 7 in args.yaml vs 3 in the checkpoint" in line
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    # Runtime flags are not part of the check: edited back, with another --num_workers typed, it resumes.
    (run / "args.yaml").write_text(yaml.safe_dump({**record, "num_workers": 1}))
    train_spot.main(["--resume", str(run), "--epochs", "2", "--num_workers", "0"])
    assert load_checkpoint(run)["step"] == 8


# --- --skip_nonfinite has bounds -----------------------------------------------------------------
def test_a_diverged_run_stops_instead_of_skipping_on(tmp_path: Path, capsys) -> None:
    argv = [*TINY, "--epochs", "3", "--log_path", str(tmp_path), "--lr_main", "1e9", "--skip_nonfinite"]
    line = one_error_line(capsys, lambda: train_spot.main(argv))
    assert "training diverged: --skip_nonfinite skipped 10 steps in a row (bound --max_skipped_steps 10)" in line
    run = next(tmp_path.iterdir())
    assert not (run / "metrics.json").exists()  # no final record of a dead model
    # The flag sets the bound: 3 in a row stop the run earlier.
    line = one_error_line(capsys, lambda: train_spot.main([*argv, "--max_skipped_steps", "3"]))
    assert "skipped 3 steps in a row (bound --max_skipped_steps 3)" in line


def test_the_skipped_fraction_bound_and_an_honest_metrics_file(tmp_path: Path, capsys) -> None:
    argv = [*TINY, "--epochs", "6", "--log_path", str(tmp_path), "--lr_main", "1e9", "--skip_nonfinite",
            "--max_skipped_steps", "0"]
    line = one_error_line(capsys, lambda: train_spot.main([*argv, "--max_skipped_fraction", "0.5"]))
    assert "of 20 steps" in line and "bound --max_skipped_fraction 0.5" in line  # checked from step 20 on
    # With both bounds off the run ends, and its metrics.json says what happened.
    train_spot.main([*argv, "--max_skipped_fraction", "1"])
    record = json.loads((max(tmp_path.iterdir()) / "metrics.json").read_text())
    assert record["skipped_steps"] > 12 and "training steps were skipped" in record["warning"]


def test_bad_skip_bounds_are_refused(tmp_path: Path, capsys) -> None:
    for flags, text in ((["--max_skipped_steps", "-1"], "--max_skipped_steps -1 must be >= 0"),
                        (["--max_skipped_fraction", "1.5"], "--max_skipped_fraction 1.5 must be between 0 and 1")):
        assert text in one_error_line(capsys, lambda: train_spot.main([*TINY, "--log_path", str(tmp_path), *flags]))
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_a_nan_before_any_checkpoint_does_not_claim_one(tmp_path: Path, monkeypatch, capsys) -> None:
    from models.spot import SPOT

    forward = SPOT.forward

    def nan_loss(self, batch):
        out = forward(self, batch)
        if self.training:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SPOT, "forward", nan_loss)
    line = one_error_line(capsys, lambda: train_spot.main([*TINY, "--log_path", str(tmp_path)]))
    assert "the loss became nan at step 0; no checkpoint was written yet (nothing to resume from)" in line
    assert "untouched" not in line


# --- numbers the checks refuse -------------------------------------------------------------------
@pytest.mark.parametrize("flags, text", [
    (["--seed", "-1"], "--seed -1 must be at least 0"),
    (["--seed", str(2**32)], f"--seed {2**32} must be at most"),
    (["--data_seed", "-3"], "--data_seed -3 must be at least 0"),
    (["--lr_main", "inf"], "--lr_main inf must be positive and finite"),
    (["--lr_main", "nan"], "--lr_main nan must be positive and finite"),
    (["--lr_min", "inf"], "--lr_min inf must be a finite learning rate"),
    (["--clip", "nan"], "--clip nan is not a number"),
])
def test_bad_numbers_give_one_line(tmp_path: Path, capsys, flags: list[str], text: str) -> None:
    assert text in one_error_line(capsys, lambda: train_spot.main([*TINY, "--log_path", str(tmp_path), *flags]))
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing created


def test_seed_everything_refuses_what_numpy_cannot_take() -> None:
    from utils.run import seed_everything

    with pytest.raises(UserError, match="--seed -1 must be between 0 and 4294967295"):
        seed_everything(-1)


# --- checkpoints: permissions, disk full ---------------------------------------------------------
def test_checkpoints_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        train_spot.main([*TINY, "--log_path", str(tmp_path)])
    finally:
        os.umask(old)
    run = next(tmp_path.iterdir())
    assert stat.S_IMODE((run / CHECKPOINT_NAME).stat().st_mode) == 0o640
    assert stat.S_IMODE((run / "args.yaml").stat().st_mode) == 0o640  # like every other file


def test_a_full_disk_gives_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    train_spot.main([*TINY, "--log_path", str(tmp_path)])
    run = next(tmp_path.iterdir())
    before = (run / CHECKPOINT_NAME).read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    line = one_error_line(capsys, lambda: train_spot.main(["--resume", str(run), "--epochs", "2"]))
    assert f"cannot write the checkpoint into {run}: no space left on " in line and "MiB free" in line
    assert f"the previous checkpoint {run / CHECKPOINT_NAME} is intact" in line
    assert "Free space there or train into a folder on another disk, then resume with --resume" in line
    assert (run / CHECKPOINT_NAME).read_bytes() == before and not list(run.glob(".*.tmp"))


FILE_SIZE_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
import train_spot
from utils.errors import run_cli
run_cli(lambda: train_spot.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_a_file_size_limit_gives_one_line(tmp_path: Path) -> None:
    """The issue's case (``ulimit -f``): torch's RuntimeError becomes one line naming the limit (about 5 s)."""
    train_spot.main([*TINY, "--log_path", str(tmp_path)])
    run = next(tmp_path.iterdir())
    before = (run / CHECKPOINT_NAME).read_bytes()
    limit = len(before) // 2  # room for the logs, not for a checkpoint
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(limit), "--resume", str(run), "--epochs", "2"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"the file size limit of this process ({limit} bytes, ulimit -f) is too small" in lines[0]
    assert (run / CHECKPOINT_NAME).read_bytes() == before and not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_corrupt_image_met_by_the_first_batch_leaves_no_run_folder(tmp_path: Path, capsys, workers: str) -> None:
    from tests.fixtures_pixel import write_clevrtex_folder

    root = write_clevrtex_folder(tmp_path / "clevrtex", num_samples=12)
    for image in root.rglob("*.png"):
        if not image.name.endswith("_flat.png"):  # every scene image cut short, as by a broken download
            image.write_bytes(image.read_bytes()[:100])
    argv = [*TINY, "--dataset", "clevrtex", "--data_path", str(tmp_path / "clevrtex"), "--train_samples", "8",
            "--val_samples", "4", "--num_workers", workers, "--log_path", str(tmp_path / "logs")]
    line = one_error_line(capsys, lambda: train_spot.main(argv))
    assert line.startswith("error: cannot read ")
    assert "(image file is truncated); re-extract the ClevrTex archives" in line
    assert not list((tmp_path / "logs").iterdir())  # the run folder made for it is gone again
