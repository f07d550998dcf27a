"""Released checkpoints from the command line: scripts/import_checkpoint.py, then eval_spot.py and
predict.py on the run folder; eval_spot.py and train_spot_2.py given the released file directly.

The fixtures are SPOT-repository files at tiny sizes (64 px images, 4x4 tokens), evaluated on the
built-in synthetic shapes data, whose image size is taken from the imported model.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import eval_spot
import predict
import train_spot_2
from ground.errors import UserError
from ground.safe_io import read_torch_file
from released_fixtures import FIXTURES
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import import_checkpoint  # noqa: E402
import summarize  # noqa: E402

STAGE1 = FIXTURES / "spot_stage1" / "checkpoint.pt.tar"
TINY_SETTINGS = ["--set", "num_slots=4", "--set", "num_heads=2", "--set", "encoder.num_heads=2"]
EVAL = ["--dataset", "shapes", "--val_samples", "4", "--eval_batch_size", "4", "--num_workers", "0", "--no_progress"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Encoder weights of files evaluated in place go to a test folder, not the user's cache."""
    monkeypatch.setenv("OCL_RELEASED_CACHE", str(tmp_path / "cache"))


def test_import_then_evaluate_and_predict(tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint = import_checkpoint.main([str(STAGE1), "--out", str(run), *TINY_SETTINGS])
    printed = capsys.readouterr().out
    assert "detected format: spot_stage1" in printed and f"eval_spot.py --dataset DATASET" in printed
    assert {p.name for p in run.iterdir()} >= {"args.yaml", "checkpoint.pt.tar", "encoder.safetensors"}
    stored = read_torch_file(run / "checkpoint.pt.tar")  # the safe reader: plain containers only
    assert stored["method"] == "spot" and stored["model_config"]["num_slots"] == 4
    assert stored["encoder"]["weights_path"] == str((run / "encoder.safetensors").resolve())
    assert stored["encoder"]["fingerprint"] == checkpoint["encoder"]["fingerprint"]
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["released_format"] == "spot_stage1" and args["image_size"] == 64
    record = eval_spot.main(["--checkpoint_path", str(run), "--eval_permutations", "all", *EVAL])
    assert record["method"] == "spot" and record["released_format"] == "spot_stage1"
    assert json.loads((run / "metrics.json").read_text())["eval_permutations"] == "all"
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (80, 64), (200, 30, 30)).save(images / "a.png")
    predict.main(["--checkpoint", str(run), "--input", str(images), "--output", str(tmp_path / "pred"),
                  "--device", "cpu", "--no_progress"])
    assert any((tmp_path / "pred").iterdir())


def test_import_settings_are_checked(tmp_path):
    with pytest.raises(UserError, match="records this itself"):
        import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "a"), "--set", "slot_size=8"])
    with pytest.raises(UserError, match="expected NAME=VALUE"):
        import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "b"), "--set", "num_slots"])
    # The official default of 6 decoder heads does not divide this tiny model's width: refused before writing.
    with pytest.raises(UserError, match="--num_heads 6 does not divide the width 64"):
        import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()  # nothing written
    with pytest.raises(UserError, match="does not have the layout of format 'adaslot_oclf'"):
        import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "d"), "--format", "adaslot_oclf"])


def test_the_flag_given_sets_what_the_file_does_not_record(tmp_path):
    """--set num_slots changes the imported model (the flag is not ignored)."""
    a = import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "a"), *TINY_SETTINGS])
    b = import_checkpoint.main([str(STAGE1), "--out", str(tmp_path / "b"), *TINY_SETTINGS, "--set", "num_slots=5"])
    assert (a["model_config"]["num_slots"], b["model_config"]["num_slots"]) == (4, 5)


def test_unknown_layout_is_one_line(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": {"layer.weight": torch.zeros(2)}}, foreign)
    result = subprocess.run([sys.executable, "scripts/import_checkpoint.py", str(foreign), "--out", str(tmp_path / "o")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "known formats: spot_stage2, spot_stage1" in line and "adaslot_oclf" in line
    with pytest.raises(UserError, match="neither a checkpoint written by this project.*known formats"):
        eval_spot.main(["--checkpoint_path", str(foreign), *EVAL])


def test_eval_spot_takes_the_released_file_directly(tmp_path, caplog):
    """The seed's command shape with the released file: detected, imported in memory, evaluated."""
    released = tmp_path / "released" / "checkpoint.pt.tar"
    released.parent.mkdir()
    released.write_bytes(STAGE1.read_bytes())
    record = eval_spot.main(["--checkpoint_path", str(released), "--num_slots", "4", "--num_heads", "2",
                             "--eval_permutations", "all", *EVAL])
    assert record["released_format"] == "spot_stage1"
    assert list((tmp_path / "cache").glob("*.safetensors")), "the stored ViT is kept for the encoder record"
    # The seed's command as written for the final SPOT model (stage 2; its slot count is in the file).
    stage2 = eval_spot.main(["--checkpoint_path", str(FIXTURES / "spot_stage2" / "checkpoint.pt.tar"), "--num_slots",
                             "4", "--num_heads", "2", "--eval_permutations", "all", *EVAL,
                             "--log_path", str(tmp_path / "s2")])
    assert stage2["released_format"] == "spot_stage2" and stage2["eval_permutations"] == "all"
    # A flag that contradicts what the file records is refused with one line.
    with pytest.raises(UserError, match="--slot_size 16 does not match the checkpoint"):
        eval_spot.main(["--checkpoint_path", str(released), "--num_slots", "4", "--num_heads", "2",
                        "--slot_size", "16", *EVAL])


def test_eval_flag_num_slots_reaches_the_released_model(tmp_path):
    released = STAGE1
    four = eval_spot.main(["--checkpoint_path", str(released), "--num_slots", "4", "--num_heads", "2", *EVAL,
                           "--log_path", str(tmp_path / "a")])
    two = eval_spot.main(["--checkpoint_path", str(released), "--num_slots", "2", "--num_heads", "2", *EVAL,
                          "--log_path", str(tmp_path / "b")])
    metrics = ("fg_ari", "mbo_i", "mbo_c")
    assert [four[m] for m in metrics] != [two[m] for m in metrics]  # different slot counts segment differently


def test_train_spot_2_with_a_released_teacher(tmp_path):
    """--teacher_checkpoint_path takes SPOT's stage-1 file; the student's checkpoint then evaluates."""
    teacher = FIXTURES / "spot_stage2" / "teacher_checkpoint.pt.tar"
    train_spot_2.main(["--dataset", "shapes", "--image_size", "64", "--num_slots", "4", "--num_heads", "2",
                       "--slot_size", "32", "--mlp_hidden_size", "64", "--num_dec_blocks", "2",
                       "--finetune_blocks_after", "1", "--teacher_checkpoint_path", str(teacher),
                       "--batch_size", "2", "--eval_batch_size", "2", "--train_samples", "4", "--val_samples", "2",
                       "--num_workers", "0", "--epochs", "1", "--max_steps", "2", "--log_path", str(tmp_path / "logs")])
    run = next((tmp_path / "logs").iterdir())
    stored = load_checkpoint(run / "checkpoint.pt.tar")
    assert stored["step"] == 2 and stored["encoder"]["weights_path"].startswith(str(tmp_path / "cache"))
    assert stored["encoder"]["model_overrides"]["embed_dim"] == 64
    record = eval_spot.main(["--checkpoint_path", str(run), *EVAL])
    assert record["method"] == "spot"


def test_summarize_tabulates_released_evaluations(tmp_path, capsys):
    """scripts/summarize.py --released: one row per evaluated import, the published figures beside
    them; without the flag the usual grouped table is made instead."""
    run = tmp_path / "released" / "spot_coco"
    import_checkpoint.main([str(STAGE1), "--out", str(run), *TINY_SETTINGS])
    eval_spot.main(["--checkpoint_path", str(run), *EVAL])
    # A SPOT stage-2 COCO evaluation (as the released COCO model gives) shows the README's figures.
    other = tmp_path / "released" / "spot_stage2_coco"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"released_format": "spot_stage2", "dataset": "coco",
                                                    "eval_protocol": "spot", "eval_permutations": "all",
                                                    "mbo_i": 35.0, "mbo_c": 44.0, "fg_ari": 37.1}))
    rows = summarize.main([str(tmp_path / "released"), "--released"])
    assert [r["model"] for r in rows] == ["spot_coco", "spot_stage2_coco"]
    assert rows[0]["format"] == "spot_stage1" and rows[0]["dataset"] == "shapes"
    assert rows[1]["mbo_i"] == 35.0 and rows[1]["mbo_i_published"] == 34.9
    out = capsys.readouterr().out
    assert "35.00 (published 34.9)" in out and (tmp_path / "released" / "released.md").is_file()
    grouped = summarize.main([str(tmp_path / "released")])  # the imported run folder has args.yaml too
    assert "model" not in grouped[0] and grouped[0]["n"] == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no evaluation of an imported released model"):
        summarize.main([str(tmp_path / "empty"), "--released"])


def test_evaluate_released_script_skips_what_is_missing(tmp_path):
    """The all-in-one script imports nothing it cannot find, says so per model, and ends in the table."""
    script = REPO / "scripts" / "evaluate_released.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "spot_coco.pt.tar").write_bytes(STAGE1.read_bytes())
    env = {"PATH": "/usr/bin:/bin", "RELEASED": str(tmp_path / "files"), "PYTHON": sys.executable,
           "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script), str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                            env=env)
    assert "skip spot_coco: set COCO to its dataset folder" in result.stdout
    assert "skip sa_clevr6: set CLEVR to its dataset folder" in result.stdout
    assert result.returncode == 2 and "no evaluation of an imported released model" in result.stderr


def test_adaslot_imports_evaluate(tmp_path):
    """Official AdaSlot (OCLF Lightning file with its ViT) -> run folder -> eval_spot.py; the unofficial
    DINOSAURpp file (no ViT) imports without downloading its named encoder."""
    run = tmp_path / "adaslot"
    import_checkpoint.main([str(FIXTURES / "adaslot_oclf" / "checkpoint.ckpt"), "--out", str(run),
                            "--set", "num_slots=6", "--set", "encoder.num_heads=2"])
    record = eval_spot.main(["--checkpoint_path", str(run), "--keep_rule", "threshold", *EVAL])
    assert record["method"] == "adaslot" and record["released_format"] == "adaslot_oclf"
    assert record["keep_rule"] == "threshold"
    other = tmp_path / "dinosaurpp"
    checkpoint = import_checkpoint.main([str(FIXTURES / "adaslot_stage2" / "checkpoint.pt"), "--out", str(other),
                                         "--set", "num_slots=6"])
    assert checkpoint["encoder"]["name"] == "dino-vitb-16" and checkpoint["encoder"]["weights_path"] is None
    assert not (other / "encoder.safetensors").exists()
    with pytest.raises(UserError, match="pass a divisor of 64"):
        import_checkpoint.main([str(FIXTURES / "adaslot_oclf" / "checkpoint.ckpt"), "--out", str(tmp_path / "x"),
                                "--set", "encoder.num_heads=3"])


def test_trust_checkpoint_flag(tmp_path, capsys):
    """A file that needs full unpickling is refused unless --trust_checkpoint is given; with it, the file
    is read and then judged by its layout."""
    import datetime

    odd = tmp_path / "odd.pt"
    torch.save({"made": datetime.date(2020, 1, 1), "model": {}}, odd)  # a class the safe loader refuses
    with pytest.raises(UserError, match="--trust_checkpoint"):
        import_checkpoint.main([str(odd), "--out", str(tmp_path / "a")])
    with pytest.raises(UserError, match="not a checkpoint layout this project can import"):
        import_checkpoint.main([str(odd), "--out", str(tmp_path / "a"), "--trust_checkpoint"])
    assert "warning: --trust_checkpoint: fully unpickling" in capsys.readouterr().err
    with pytest.raises(UserError, match="neither a checkpoint written by this project"):
        eval_spot.main(["--checkpoint_path", str(odd), "--trust_checkpoint", *EVAL])
    assert "warning: --trust_checkpoint: fully unpickling" in capsys.readouterr().err
