"""SMTC and SlotCon/SlotFA under a 2-process gloo torchrun on the CPU, through the shared DDP loop."""
from __future__ import annotations

from pathlib import Path

import eval_smtc
from tests.test_distributed import torchrun
from tests.test_eval_smtc import TINY as SMTC_TINY
from tests.test_eval_smtc import davis_fixture
from tests.test_train_slotfa import TINY as SLOTFA_TINY
from utils.checkpoint import load_checkpoint


def only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 0 alone made a run folder
    return runs[0]


def test_smtc_two_processes_then_both_eval_tasks(tmp_path: Path) -> None:
    result = torchrun(2, *SMTC_TINY, "--batch_size", "1", "--device", "cpu", "--output_path", str(tmp_path / "runs"),
                      script="train_smtc.py")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path / "runs")
    checkpoint = load_checkpoint(run)
    assert checkpoint["method"] == "smtc" and checkpoint["step"] == 3 and checkpoint["world_size"] == 2
    assert any(key.startswith("teacher.") for key in checkpoint["model"])

    davis_fixture(tmp_path / "DAVIS")
    for task in ("propagation", "discovery"):
        extra = ["--setting", "stride8"] if task == "propagation" else ["--discovery_size", "48", "64"]
        res = eval_smtc.main(["--task", task, "--davis_path", str(tmp_path / "DAVIS"), "--checkpoint_path", str(run),
                              "--output_dir", str(tmp_path / "eval"), "--device", "cpu", *extra])
        assert 0.0 <= res["J&F-Mean"] <= 1.0
        assert len(list((tmp_path / "eval").glob("*/global_results-val.csv"))) == (1 if task == "propagation" else 2)
        # The same evaluation with the sequences shared out over 2 processes: identical scores.
        result = torchrun(2, "--task", task, "--davis_path", str(tmp_path / "DAVIS"), "--checkpoint_path", str(run),
                          "--output_dir", str(tmp_path / "eval2"), "--device", "cpu", *extra, script="eval_smtc.py")
        assert result.returncode == 0, result.stderr[-3000:]
        name = "propagation_stride8" if task == "propagation" else "discovery_sequence"
        one, two = ((tmp_path / d / name / "global_results-val.csv").read_text() for d in ("eval", "eval2"))
        assert one == two


def test_slotfa_two_processes_share_one_global_batch(tmp_path: Path) -> None:
    # --batch-size is global (SlotCon's convention): 2 images per process, 2 steps per epoch.
    result = torchrun(2, *SLOTFA_TINY, "--method", "slotfa", "--epochs", "1", "--device", "cpu",
                      "--output-dir", str(tmp_path / "out"), script="train_slotfa.py")
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path / "out")
    checkpoint = load_checkpoint(run)
    assert checkpoint["method"] == "slotfa" and checkpoint["world_size"] == 2
    assert checkpoint["step"] == 2 and int(checkpoint["model"]["momentum_step"]) == 2
    assert "global batch 4" in result.stderr + result.stdout
