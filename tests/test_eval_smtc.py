"""train_smtc.py on moving-shapes clips, then both eval_smtc.py tasks on a DAVIS-layout fixture."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import eval_smtc
import train_smtc
from ground.errors import UserError
from tests.fixtures_video import write_davis_fixture

TINY = ["--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained", "--num_slots", "4",
        "--num_instance", "2", "--num_frames", "3", "--gap", "1", "--batch_size", "2", "--train_samples", "4",
        "--num_train_steps", "3", "--grad_iter", "2", "--lr", "1e-4", "--entro_cons", "--bi_cons"]


def davis_fixture(root: Path) -> None:
    """Two sequences of 4 frames (48x64) with objects moving one pixel a frame."""
    seqs = {}
    for name, n_obj in (("bear", 1), ("cats", 2)):
        lab = np.zeros((4, 48, 64), np.uint8)
        for t in range(4):
            lab[t, 8 + t : 24 + t, 10 + t : 30 + t] = 1
            if n_obj == 2:
                lab[t, 28:44, 36 + t : 56 + t] = 2
        seqs[name] = lab
    write_davis_fixture(root, seqs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    train_smtc.main([*TINY, "--output_path", str(out)])
    (run,) = out.iterdir()
    return run


def test_training_writes_checkpoint_with_teacher(run_dir: Path):
    ckpt = torch.load(run_dir / "checkpoint.pt.tar", weights_only=False)
    assert ckpt["method"] == "smtc" and ckpt["step"] == 3
    assert any(k.startswith("teacher.slot_attention") for k in ckpt["model"])


def test_propagation_writes_palette_pngs_and_official_csvs(run_dir: Path, tmp_path: Path):
    davis_fixture(tmp_path / "DAVIS")
    out = tmp_path / "eval"
    res = eval_smtc.main(["--task", "propagation", "--davis_path", str(tmp_path / "DAVIS"), "--checkpoint_path",
                          str(run_dir), "--output_dir", str(out), "--setting", "stride8"])
    folder = out / "propagation_stride8"
    pngs = sorted((folder / "results" / "cats").glob("*.png"))
    assert len(pngs) == 4
    from PIL import Image
    assert Image.open(pngs[1]).mode == "P"
    rows = list(csv.reader(open(folder / "global_results-val.csv")))
    assert rows[0][:2] == ["J&F-Mean", "J-Mean"] and 0.0 <= res["J&F-Mean"] <= 1.0
    seq_rows = list(csv.reader(open(folder / "per-sequence_results-val.csv")))
    assert [r[0] for r in seq_rows[1:]] == ["bear_1", "cats_1", "cats_2"]
    assert "official" in (folder / "protocol-val.txt").read_text()
    assert not any(p.suffix == ".npy" for p in (tmp_path / "DAVIS").rglob("*"))  # no caches in the dataset


@pytest.mark.parametrize("matcher", ["sequence", "per_frame"])
def test_discovery_both_matchers(run_dir: Path, tmp_path: Path, matcher: str):
    davis_fixture(tmp_path / "DAVIS")
    out = tmp_path / "eval"
    res = eval_smtc.main(["--task", "discovery", "--davis_path", str(tmp_path / "DAVIS"), "--checkpoint_path",
                          str(run_dir), "--output_dir", str(out), "--matcher", matcher, "--discovery_size", "48", "64"])
    folder = out / f"discovery_{matcher}"
    assert (folder / "proposals" / "cats.pt").is_file() and (folder / "global_results-val.csv").is_file()
    assert ("NOT the official" in res["protocol"]) == (matcher == "per_frame")
    if matcher == "sequence":
        assert len(list((folder / "results" / "bear").glob("*.png"))) == 4


def test_propagation_of_a_plain_encoder(tmp_path: Path):
    davis_fixture(tmp_path / "DAVIS")
    res = eval_smtc.main(["--task", "propagation", "--davis_path", str(tmp_path / "DAVIS"), "--which_encoder",
                          "vit_micro_p8", "--no_pretrained", "--output_dir", str(tmp_path / "eval"), "--setting", "stride8"])
    assert (tmp_path / "eval" / "propagation_stride8" / "results" / "bear" / "00003.png").is_file()
    assert 0.0 <= res["J-Mean"] <= 1.0


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(UserError, match="ImageSets/2017/val.txt"):
        eval_smtc.main(["--task", "propagation", "--davis_path", str(tmp_path)])
    davis_fixture(tmp_path / "DAVIS")
    with pytest.raises(UserError, match="needs --checkpoint_path"):
        eval_smtc.main(["--task", "discovery", "--davis_path", str(tmp_path / "DAVIS")])
    with pytest.raises(UserError, match="not a training video dataset"):
        train_smtc.main([*TINY, "--dataset", "coco", "--output_path", str(tmp_path / "r")])


def test_resume_matches_uninterrupted_run(tmp_path: Path):
    common = [*TINY, "--num_train_steps", "4", "--checkpoint_every", "1"]
    train_smtc.main([*common, "--output_path", str(tmp_path / "full")])
    train_smtc.main([*common, "--output_path", str(tmp_path / "part"), "--max_steps", "2"])
    (full,), (part,) = (tmp_path / "full").iterdir(), (tmp_path / "part").iterdir()
    assert torch.load(part / "checkpoint.pt.tar", weights_only=False)["step"] == 2
    train_smtc.main(["--resume", str(part)])
    a = torch.load(full / "checkpoint.pt.tar", weights_only=False)
    b = torch.load(part / "checkpoint.pt.tar", weights_only=False)
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
