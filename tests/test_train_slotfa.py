"""train_slotfa.py, eval_slotfa.py and the export scripts end to end on shapes (tiny ResNet, 64 px)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval_slotfa
import train_slotfa
from ground.errors import UserError
from models.resnet import ResNet, detectron2_key
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "tiny_resnet50", "--image-size", "64", "--dim-hidden", "32", "--dim-out", "16",
        "--num-prototypes", "8", "--batch-size", "4", "--train-samples", "8", "--num-workers", "0",
        "--optimizer", "lars", "--warmup-epoch", "1", "--seed", "3", "--print-freq", "1"]



# --- command line on shapes -------------------------------------------------------------------------------
def _run_dir(root: Path) -> Path:
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(runs) == 1
    return runs[0]


def test_cli_train_resume_and_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    train_slotfa.main([*TINY, "--method", "slotcon", "--epochs", "2", "--save-freq", "1", "--output-dir", str(out),
                       "--max-steps", "3"])
    run = _run_dir(out)
    assert load_checkpoint(run)["step"] == 3
    assert (run / "ckpt_epoch_1.pth").is_file() and not (run / "ckpt_epoch_2.pth").exists()
    with pytest.raises(UserError, match="--group_loss_weight"):  # settings cannot change on resume
        train_slotfa.main(["--resume", str(run), "--group-loss-weight", "0.3"])
    train_slotfa.main(["--output-dir", str(out), "--auto-resume", "--num-workers", "0"])
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and int(ckpt["model"]["momentum_step"]) == 4
    assert ckpt["method"] == "slotcon" and ckpt["encoder"] is None
    assert (run / "ckpt_epoch_2.pth").is_file()

    d2, tv = tmp_path / "backbone.pkl", tmp_path / "backbone.pth"
    for script, target in (("convert_to_detectron2.py", d2), ("export_torchvision.py", tv)):
        subprocess.run([sys.executable, str(REPO / "scripts" / script), str(run / "ckpt_epoch_2.pth"), str(target)],
                       check=True, cwd=REPO)
    with open(d2, "rb") as f:
        payload = pickle.load(f)
    teacher = {k.removeprefix("encoder_k."): v for k, v in ckpt["model"].items() if k.startswith("encoder_k.")}
    assert set(payload["model"]) == {detectron2_key(k) for k in teacher}
    assert (payload["model"]["stem.conv1.weight"] == teacher["conv1.weight"].numpy()).all()
    backbone = ResNet("tiny_resnet50")
    backbone.load_state_dict(torch.load(tv, weights_only=True))  # strict by default

    # Evaluation without detectron2: probes on a labelled class-folder set, prototype pictures.
    for split, count in (("train", 6), ("val", 4)):
        for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = tmp_path / "labelled" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                noise = np.random.default_rng(i + 10 * label).integers(0, 50, (40, 40, 3))
                Image.fromarray((noise + colour).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    record = eval_slotfa.main(["probe", "--checkpoint", str(run), "--train-dir", str(tmp_path / "labelled" / "train"),
                               "--val-dir", str(tmp_path / "labelled" / "val"), "--k", "3", "--probe-epochs", "20"])
    assert 0 <= record["knn_top1"] <= 100 and 0 <= record["linear_top1"] <= 100 and record["classes"] == 2
    assert json.loads((run / "probe.json").read_text()) == record
    out_dir = eval_slotfa.main(["viz", "--checkpoint", str(run / "ckpt_epoch_2.pth"), "--num-images", "6", "--topk", "3",
                                "--idxs", "0", "5"])
    # 2 prototypes x top 3 images of 64 px (2-px gaps), plus margins naming the ranks and prototypes.
    width, height = Image.open(out_dir / "slots.png").size
    assert 2 * 66 + 2 < width < 2 * 66 + 80 and 3 * 66 + 2 < height < 3 * 66 + 40
    assert (out_dir / "prototype_0005.png").is_file()
    with pytest.raises(UserError, match="--idxs"):
        eval_slotfa.main(["viz", "--checkpoint", str(run), "--num-images", "4", "--idxs", "8"])


def test_cli_slotfa_and_bad_input(tmp_path: Path) -> None:
    train_slotfa.main([*TINY, "--method", "slotfa", "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                       "--group_loss_weight", "1.0", "--max-steps", "2"])  # underscore spelling too
    run = _run_dir(tmp_path / "out")
    assert load_checkpoint(run)["model_config"]["method"] == "slotfa"
    with pytest.raises(UserError, match="train2017"):
        train_slotfa.main([*TINY, "--dataset", "COCO", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "x")])
    with pytest.raises(UserError, match="start-epoch"):
        train_slotfa.main([*TINY, "--start-epoch", "5", "--output-dir", str(tmp_path / "y")])
