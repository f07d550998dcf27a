"""The quickstart's own flags stay valid: scripts/quickstart.sh's train and eval commands, run for a few steps.

The commands are read from the script itself (not copied here), so a flag renamed or removed in an
entry script fails this test instead of the quickstart. Only sizes are overridden (argparse keeps
the last value of a repeated flag): a handful of 32-px scenes and two steps.
"""
from __future__ import annotations

import importlib
import json
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "quickstart.sh"


def script_commands() -> list[tuple[str, list[str]]]:
    """``(entry module, arguments)`` of every ``.venv/bin/python X.py ...`` command in the script."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) >= 2 and words[0] == ".venv/bin/python" and words[1].endswith(".py") \
                and not words[1].startswith("scripts/"):
            commands.append((words[1][:-3], words[2:]))
    return commands


def without(args: list[str], *names: str) -> list[str]:
    """Drop ``--name value`` pairs (and the shell's ``$@``) from an argument list."""
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in names:
            skip = True
        elif word != "$@":
            out.append(word)
    return out


@pytest.mark.filterwarnings("ignore:warm-up of")  # the script's warm-up is longer than two steps
def test_quickstart_commands_run_for_a_few_steps(tmp_path: Path) -> None:
    commands = script_commands()
    assert len(commands) == 2 and commands[0][0].startswith("train_"), commands
    (train_name, train_args), (eval_name, eval_args) = commands
    assert eval_name == "eval_spot" and "--baselines" in eval_args
    train = importlib.import_module(train_name)
    # Same flags, tiny sizes: 32-px scenes, 8 training scenes, two steps of batch 4.
    train.main([*without(train_args, "--log_path"), "--image_size", "32", "--train_samples", "8",
                "--val_samples", "4", "--batch_size", "4", "--epochs", "1", "--num_workers", "0",
                "--log_path", str(tmp_path)])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((run / "metrics.json").read_text())["step"] == 2
    evaluate = importlib.import_module(eval_name)
    record = evaluate.main([*without(eval_args, "--checkpoint_path", "--val_samples", "--num_workers"),
                            "--checkpoint_path", str(run), "--val_samples", "4", "--num_workers", "0",
                            "--no_progress"])
    # The model's figures and the three baselines' are all in the record.
    assert {"fg_ari", "mbo_i", "one_slot_fg_ari", "one_slot_mbo_i", "grid_fg_ari", "grid_mbo_i", "kmeans_fg_ari",
            "kmeans_mbo_i"} <= set(record)
    assert (run / "masks.png").is_file()
    # The curve picture is drawn from the run's metrics.jsonl with the script's own arguments.
    plot = [shlex.split(line) for line in SCRIPT.read_text().splitlines() if "scripts/plot_metrics.py" in line]
    assert len(plot) == 1
    plot_metrics = importlib.import_module("scripts.plot_metrics")
    out = plot_metrics.main([str(run), *plot[0][3:]])
    assert out == run / "curves.png" and out.stat().st_size > 0

