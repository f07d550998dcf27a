"""Ctrl-C ends an entry script with the line ``interrupted`` (exit 130) and nothing half-written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train_spot
from utils.errors import run_cli
from utils.logging import write_json

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "0",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--epochs", "1",
]
# eval_spot.py as from the command line, with Ctrl-C (SIGINT) arriving in the middle of the evaluation.
CTRL_C_DURING_EVAL = """
import os, signal, sys
import torch
import eval_spot
from utils.errors import run_cli
evaluate = eval_spot.evaluate
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it
    return evaluate(*args, **kwargs)
eval_spot.evaluate = interrupted
torch.set_grad_enabled(False)
run_cli(lambda: eval_spot.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_during_evaluation(tmp_path: Path) -> None:
    """A real SIGINT in a separate eval_spot.py process (about 5 s)."""
    train_spot.main([*TINY, "--log_path", str(tmp_path / "logs")])
    run = next((tmp_path / "logs").iterdir())
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_DURING_EVAL, "--checkpoint_path", str(run), "--dataset", "shapes",
         "--val_samples", "8", "--num_workers", "0", "--no_progress", "--log_path", str(out)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in result.stderr
    assert not out.exists() or not list(out.iterdir())  # nothing written, not even half


def test_run_cli_turns_ctrl_c_into_one_line(capsys) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run_cli(interrupted)
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_write_json_replaces_the_file_atomically(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"fg_ari": 1.0})

    def interrupted_dump(obj, f, **kwargs):
        f.write('{"fg_ari": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", interrupted_dump)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"fg_ari": 2.0})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"fg_ari": 1.0}  # the previous document, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left
