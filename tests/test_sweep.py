"""scripts/sweep.py + scripts/summarize.py over 3 seeds of a tiny run, one interrupted and resumed."""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import train_spot
from utils.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import summarize  # noqa: E402
import sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "0",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--epochs", "2", "--data_seed", "0",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_sweep(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "scripts/sweep.py", "--out", str(out), "--seeds", "0", "1", "2", *extra,
               "--", sys.executable, "train_spot.py", *TINY]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def test_sweep_resumes_skips_and_summarizes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    # Seed 1 was interrupted after 3 of its 8 steps (as by preemption), with the sweep's own flags.
    train_spot.main([*TINY, "--seed", "1", "--log_path", str(out / "base" / "seed_1"), "--auto_resume", "--max_steps", "3"])
    interrupted = next((out / "base" / "seed_1").iterdir())
    assert load_checkpoint(interrupted)["step"] == 3

    result = run_sweep(out)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for seed in (0, 1, 2):
        runs = list((out / "base" / f"seed_{seed}").iterdir())
        assert len(runs) == 1, runs  # one run folder each; seed 1 continued in its own folder
        assert load_checkpoint(runs[0])["step"] == 8 and (runs[0] / "metrics.json").is_file()
    assert runs[0].parent.name == "seed_2" and interrupted.is_dir()

    again = run_sweep(out)
    assert again.returncode == 0 and again.stdout.count("finished, skipped") == 3, again.stdout

    rows = summarize.main([str(out)])
    assert len(rows) == 1 and rows[0]["n"] == 3 and rows[0]["seeds"] == "0 1 2"
    values = [json.loads(next((out / "base" / f"seed_{s}").glob("*/metrics.json")).read_text())["fg_ari"] for s in range(3)]
    assert rows[0]["fg_ari_mean"] == pytest.approx(statistics.fmean(values))
    assert rows[0]["fg_ari_std"] == pytest.approx(statistics.stdev(values))
    table = (out / "summary.md").read_text()
    assert table.startswith("| n | seeds | fg_ari |") and " ± " in table
    with open(out / "summary.csv") as f:
        assert next(csv.DictReader(f))["n"] == "3"


def test_grid_configurations_and_summary_columns(tmp_path: Path) -> None:
    assert sweep.configurations(sweep.parse_grid(["num_slots=5,7", "lr_main=1e-4"])) == [
        ("num_slots=5_lr_main=1e-4", ["--num_slots", "5", "--lr_main", "1e-4"]),
        ("num_slots=7_lr_main=1e-4", ["--num_slots", "7", "--lr_main", "1e-4"]),
    ]
    runs = [
        {"seed": s, "config": {"num_slots": k, "dataset": "shapes"}, "metrics": {"fg_ari": v}, "folder": None}
        for s, k, v in [(0, 5, 10.0), (1, 5, 20.0), (0, 7, 30.0)]
    ]
    varying, rows = summarize.summarize(runs, ["fg_ari"])
    assert varying == ["num_slots"]
    assert [(r["num_slots"], r["n"], r["fg_ari_mean"]) for r in rows] == [(5, 2, 15.0), (7, 1, 30.0)]
    assert "| 5 | 2 | 0 1 | 15.00 ± 7.07 |" in summarize.markdown(varying, rows, ["fg_ari"])
