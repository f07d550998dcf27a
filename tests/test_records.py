"""Records that cannot lie: an edited args.yaml, a diverged run, the last-checkpoint claim, bad numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import train_spot
from utils.checkpoint import CHECKPOINT_NAME, load_checkpoint
from utils.errors import UserError, run_cli

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
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
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
