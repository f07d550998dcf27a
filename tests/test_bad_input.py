"""A catalogue of user mistakes: each gives one `error:` line (exit 2, no traceback) and damages nothing.

Cases run in-process through ``run_cli`` (the same path as the command line, without paying a
Python start per case). Every case is checked against a snapshot of an existing run folder and
of copied fixtures: no file may change and no folder may be left behind.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

import eval_spot
import train_spot
from utils.errors import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import summarize  # noqa: E402
import sweep  # noqa: E402

TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "0",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "8", "--val_samples", "4",
    "--num_workers", "0", "--epochs", "1",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A finished run in ``logs``, plus damaged and foreign copies of it in ``fixtures``."""
    root = tmp_path_factory.mktemp("bad_input")
    logs, fixtures = root / "logs", root / "fixtures"
    train_spot.main([*TINY, "--log_path", str(logs)])
    run = next(logs.iterdir())
    truncated = fixtures / "truncated"
    shutil.copytree(run, truncated)
    data = (run / "checkpoint.pt.tar").read_bytes()
    (truncated / "checkpoint.pt.tar").write_bytes(data[: len(data) // 2])
    foreign = fixtures / "foreign"  # a run of another method, with a flag train_spot.py does not have
    shutil.copytree(run, foreign)
    ckpt = torch.load(foreign / "checkpoint.pt.tar", weights_only=False)
    torch.save({**ckpt, "method": "slate"}, foreign / "checkpoint.pt.tar")
    args = yaml.safe_load((foreign / "args.yaml").read_text())
    (foreign / "args.yaml").write_text(yaml.safe_dump({**args, "vocab_size": 4096}))
    other_method = fixtures / "other_method"  # same flags, but the checkpoint is another method's
    shutil.copytree(run, other_method)
    torch.save({**ckpt, "method": "slot_attention"}, other_method / "checkpoint.pt.tar")
    (fixtures / "empty").mkdir()
    (fixtures / "a_file").write_text("not a folder")
    (fixtures / "bad_h5").mkdir()
    for split in ("train", "val"):
        (fixtures / "bad_h5" / f"{split}.h5").write_text("not HDF5")
    return {"root": root, "logs": logs, "run": run, "fixtures": fixtures, "truncated": truncated, "foreign": foreign,
            "other_method": other_method}


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def train(w: dict[str, Path], *args: str) -> Callable[[], object]:
    return lambda: train_spot.main([*TINY, "--log_path", str(w["logs"]), *args])


def resume(*args: str) -> Callable[[], object]:
    return lambda: train_spot.main(list(args))


def evaluate(*args: str) -> Callable[[], object]:
    return lambda: eval_spot.main([*args, "--dataset", "shapes", "--val_samples", "4", "--num_workers", "0", "--no_progress"])


# (id, builder of the failing call, expected text in the error line)
CASES: list[tuple[str, Callable[[dict[str, Path]], Callable[[], object]], str]] = [
    ("missing-data-path", lambda w: train(w, "--data_path", "/does/not/exist"), "/does/not/exist/train.h5 not found"),
    ("data-path-is-a-file", lambda w: train(w, "--data_path", str(w["fixtures"] / "a_file")), "not found"),
    ("wrong-data-layout", lambda w: train(w, "--data_path", str(w["fixtures"] / "bad_h5")), "cannot read shapes HDF5"),
    ("unknown-dataset", lambda w: train(w, "--dataset", "coco2017"), "unknown dataset 'coco2017'"),
    ("zero-slots", lambda w: train(w, "--num_slots", "0"), "--num_slots 0 must be at least 1"),
    ("zero-epochs", lambda w: train(w, "--epochs", "0"), "--epochs 0 must be at least 1"),
    ("batch-larger-than-dataset", lambda w: train(w, "--batch_size", "32"), "fewer than one batch of 32"),
    ("negative-lr", lambda w: train(w, "--lr_main", "-1"), "--lr_main -1.0 must be positive"),
    ("unwritable-log-path", lambda w: train_spot_at(w["fixtures"] / "a_file" / "logs"), "cannot create run folder"),
    ("flag-typo", lambda w: train(w, "--numslots", "3"), "unrecognized arguments: --numslots"),
    ("bad-choice", lambda w: train(w, "--dec_type", "cnn"), "argument --dec_type: invalid choice"),
    ("mlp-with-random-orderings", lambda w: train(w, "--train_permutations", "random"), "--train_permutations standard"),
    ("val-size-differs", lambda w: train(w, "--val_image_size", "32"), "--val_image_size must equal --image_size"),
    ("bad-timeout", lambda w: train(w, "--timeout", "soon"), "--timeout 'soon' is not a duration"),
    ("bad-device", lambda w: train(w, "--device", "gpu7"), "--device gpu7 is not a device name"),
    ("patch-size", lambda w: train(w, "--image_size", "15"), "not a multiple of the encoder's patch size"),
    ("resume-not-a-run", lambda w: resume("--resume", str(w["fixtures"] / "empty")), "args.yaml not found"),
    ("resume-truncated", lambda w: resume("--resume", str(w["truncated"])), "unreadable or truncated"),
    ("resume-other-method", lambda w: resume("--resume", str(w["foreign"])), "written by another training script"),
    ("resume-other-method-checkpoint", lambda w: resume("--resume", str(w["other_method"])),
     "model settings do not fit a slot_attention model"),
    ("resume-changed-model", lambda w: resume("--resume", str(w["run"]), "--num_slots", "5"), "differs from the resumed run"),
    ("resume-two-runs", lambda w: resume("--resume", str(w["run"]), "--checkpoint_path",
                                         str(w["truncated"] / "checkpoint.pt.tar")), "name different runs"),
    ("auto-resume-and-resume", lambda w: resume("--resume", str(w["run"]), "--auto_resume"), "--auto_resume chooses"),
    ("eval-truncated", lambda w: evaluate("--checkpoint_path", str(w["truncated"])), "unreadable or truncated"),
    ("eval-other-method", lambda w: evaluate("--checkpoint_path", str(w["foreign"])),
     "model settings do not fit a slate model"),
    ("eval-missing", lambda w: evaluate("--checkpoint_path", str(w["fixtures"] / "empty")), "not found"),
    ("eval-changed-model", lambda w: evaluate("--checkpoint_path", str(w["run"]), "--num_slots", "5"),
     "--num_slots 5 does not match the checkpoint (3)"),
    ("summarize-no-runs", lambda w: lambda: summarize.main([str(w["fixtures"] / "empty")]), "no finished run"),
    ("sweep-without-command", lambda w: lambda: sweep.main(["--out", str(w["fixtures"] / "s")]), "after --"),
    ("sweep-seed-in-command", lambda w: lambda: sweep.main(["--out", str(w["fixtures"] / "s"), "--", "python",
                                                            "train_spot.py", "--seed", "1"]), "sets --seed itself"),
]


def train_spot_at(log_path: Path) -> Callable[[], object]:
    return lambda: train_spot.main([*TINY, "--log_path", str(log_path)])


def test_catalogue_is_long_enough() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("build, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_gives_one_line_and_damages_nothing(world, capsys, build, message: str) -> None:
    before = snapshot(world["root"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(build(world))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
    assert snapshot(world["root"]) == before  # no file changed, no folder left behind
