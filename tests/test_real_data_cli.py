"""train_spot.py and eval_spot.py on each miniature real dataset, from the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import eval_spot
import train_spot
from ground.errors import UserError
from datasets.movi import SAMPLING_FILE
from real_data_fixtures import write_coco, write_movi, write_voc

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained", "--num_slots", "3",
    "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1", "--num_heads", "2",
    "--mlp_dec_hidden", "32", "--batch_size", "2", "--eval_batch_size", "4", "--num_workers", "0",
    "--lr_warmup_steps", "0", "--epochs", "1", "--dec_type", "mlp", "--train_permutations", "standard",
]


def train(log_path: Path, *extra: str) -> Path:
    train_spot.main([*TINY, "--log_path", str(log_path), *extra])
    return sorted(p for p in log_path.iterdir() if p.is_dir())[-1]


def evaluate(run: Path, *extra: str) -> dict:
    eval_spot.main(["--checkpoint_path", str(run), "--num_workers", "0", "--no_progress", *extra])
    return json.loads((run / "metrics.json").read_text())


def test_coco_train_and_eval_under_both_protocols(tmp_path: Path) -> None:
    coco = write_coco(tmp_path / "coco", num_train=4)
    data = ["--dataset", "coco", "--data_path", str(coco), "--val_mask_size", "24"]
    run = train(tmp_path / "logs", *data)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 2 and records[-1]["eval_protocol"] == "spot"
    spot = evaluate(run, *data, "--num_workers", "2")
    dino = evaluate(run, *data, "--eval_protocol", "dinosaur")
    assert spot["eval_protocol"] == "spot" and dino["eval_protocol"] == "dinosaur"
    assert spot["num_images"] == dino["num_images"] == 3
    # Dropping the crowd annotation changes the ground truth of image 101, hence the scores.
    assert spot["mbo_i"] != dino["mbo_i"]


def test_voc_train_and_eval(tmp_path: Path) -> None:
    write_voc(tmp_path / "voc")
    data = ["--dataset", "voc", "--data_path", str(tmp_path / "voc"), "--val_mask_size", "24",
            "--sbd_path", str(tmp_path / "voc" / "benchmark_RELEASE")]
    run = train(tmp_path / "logs", *data)
    assert json.loads((run / "metrics.json").read_text())["step"] == 4  # 9 trainaug ids, batch 2
    record = evaluate(run, "--dataset", "voc", "--data_path", str(tmp_path / "voc"), "--val_mask_size", "24",
                      "--eval_protocol", "dinosaur")
    assert record["eval_protocol"] == "dinosaur" and record["num_images"] == 3
    with pytest.raises(UserError, match="no ground-truth masks"):
        evaluate(run, "--dataset", "voc", "--data_path", str(tmp_path / "voc"), "--split", "train",
                 "--sbd_path", str(tmp_path / "voc" / "benchmark_RELEASE"))


def test_movi_stage_two_reuses_the_frames_of_stage_one(tmp_path: Path) -> None:
    movi = write_movi(tmp_path / "MOVi" / "e", num_train=2, train_frames=12)
    data = ["--dataset", "movi", "--data_path", str(movi), "--val_mask_size", "16", "--train_samples", "6"]
    first = train(tmp_path / "stage1", *data, "--seed", "1")
    frames = json.loads((first / SAMPLING_FILE).read_text())["frames"]
    assert len(frames) == 18
    second = train(tmp_path / "stage2", *data, "--seed", "2", "--predefined_movi_json_paths", str(first / SAMPLING_FILE))
    assert json.loads((second / SAMPLING_FILE).read_text())["frames"] == frames
    record = evaluate(first, "--dataset", "movi", "--data_path", str(movi), "--val_mask_size", "16")
    assert record["num_images"] == 6 and 0 <= record["mbo_i"] <= 100


def test_layout_error_is_one_line_before_training(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "train_spot.py", *TINY, "--dataset", "voc", "--data_path", str(tmp_path),
         "--log_path", str(tmp_path / "logs")],
        cwd=REPO, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no JPEGImages folder in ") and len(lines) == 1
    assert not list((tmp_path / "logs").glob("*/checkpoint.pt.tar"))


@pytest.mark.parametrize("flag", ["--eval_protocol", "--strict_data", "--predefined_movi_json_paths", "--sbd_path"])
def test_data_flags_are_shared(flag: str) -> None:
    assert flag in train_spot.build_parser().format_help() and flag in eval_spot.build_parser().format_help()
