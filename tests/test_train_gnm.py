"""End to end: train_gnm.py on shapes, exact resume, evaluation of a rebuilt model, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train_gnm
from ground.errors import UserError
from ground.state_dict import load_model_state
from datasets import build_dataset
from metrics import SegmentationMetrics
from metrics.baselines import baseline_labels
from models import build_model
from utils.checkpoint import load_checkpoint
from utils.evaluation import evaluate
from utils.train import make_loader

TINY = [
    "--dataset", "shapes", "--image_size", "32", "--enc_dim", "16", "--draw_hidden", "16", "--mlp_hidden", "32",
    "--z_what_dim", "8", "--z_global_dim", "4", "--draw_steps", "2", "--batch_size", "4", "--eval_batch_size", "8",
    "--train_samples", "8", "--val_samples", "8", "--num_workers", "0",
]


def train(log_path: Path, *extra: str, epochs: int = 2) -> Path:
    train_gnm.main([*TINY, "--epochs", str(epochs), "--log_path", str(log_path), *extra])
    return sorted(p for p in log_path.iterdir() if p.is_dir())[-1]


def test_train_evaluate_rebuilt_model_and_nll(tmp_path: Path) -> None:
    run = train(tmp_path / "logs")
    for name in ("args.yaml", "checkpoint.pt.tar", "metrics.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    assert (run / "viz" / "gnm_step_0000004.png").is_file()
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "gnm" and ckpt["step"] == 4 and int(ckpt["model"]["step"]) == 4
    assert ckpt["args"]["clip"] == 1.0 and ckpt["args"]["clip_norm_type"] == 2.0 and ckpt["args"]["lr_main"] == 1e-4
    assert isinstance(ckpt["optimizer"]["param_groups"][0].get("alpha"), float)  # RMSprop
    model = build_model(ckpt["method"], ckpt["model_config"], ckpt["encoder"])
    load_model_state(model, ckpt["model"])
    val = build_dataset("shapes", "val", 32, num_samples=8)
    result = evaluate(model, make_loader(val, 8, 0, None, 0, False), torch.device("cpu"))
    metrics = result["metrics"]
    assert 0 <= metrics["mbo_i"] <= 100 and -100 <= metrics["fg_ari"] <= 100 and metrics["num_images"] == 8
    assert metrics == evaluate(model, make_loader(val, 8, 0, None, 0, False), torch.device("cpu"))["metrics"]
    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["fg_ari"] == pytest.approx(metrics["fg_ari"]) and "nll" not in recorded
    # The NLL of a finished run, without training further.
    record = train_gnm.main(["--resume", str(run), "--nll_samples", "2"])
    assert record["nll"] > 0 and record["nll_samples"] == 2
    assert json.loads((run / "metrics.json").read_text())["nll"] == record["nll"]
    assert load_checkpoint(run)["step"] == 4


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    # Bitwise equality holds on the CPU; CUDA backward kernels (atomic adds) are not deterministic.
    full = train(tmp_path / "full", "--device", "cpu", epochs=2)
    part = train(tmp_path / "part", "--max_steps", "3", "--device", "cpu", epochs=2)
    assert load_checkpoint(part)["step"] == 3
    train_gnm.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert json.loads((full / "metrics.json").read_text()) == json.loads((part / "metrics.json").read_text())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image_size", "48"], "--image_size 48"),
        (["--grid_size", "3"], "--grid_size 3"),
        (["--beta_global", "0", "1"], "--beta_global"),
        (["--lr_warmup_steps", "10"], "--lr_warmup_steps"),
        (["--nll_samples", "-1"], "--nll_samples"),
    ],
)
def test_bad_flags_fail_before_training(tmp_path: Path, extra: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        train_gnm.main([*TINY, "--epochs", "1", "--log_path", str(tmp_path), *extra])
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # no run folder was made


SLOW_FLAGS = [
    "--dataset", "shapes", "--image_size", "64", "--batch_size", "16", "--train_samples", "1600",
    "--val_samples", "64", "--eval_batch_size", "32", "--num_workers", "0", "--epochs", "24", "--eval_every", "4",
]


@pytest.mark.slow
def test_shapes_fg_ari_beats_one_slot_baseline(tmp_path: Path) -> None:
    """About 30 CPU minutes (2,400 steps of batch 16 at 64 px, default architecture, one thread)."""
    torch.set_num_threads(1)
    train_gnm.main([*SLOW_FLAGS, "--log_path", str(tmp_path)])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    fg_ari = json.loads((run / "metrics.json").read_text())["fg_ari"]
    val = build_dataset("shapes", "val", 64, num_samples=64)
    meter = SegmentationMetrics()
    for batch in make_loader(val, 32, 0, None, 0, False):
        gt = batch["mask_instance"]
        meter.update(baseline_labels("one_slot", gt.shape, 1), gt, batch["mask_class"], batch["mask_ignore"])
    baseline = meter.compute()["fg_ari"]
    assert fg_ari >= baseline + 30.0, (fg_ari, baseline)  # metrics are in percent
