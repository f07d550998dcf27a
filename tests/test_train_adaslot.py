"""End to end: train_adaslot.py stage 1 -> stage 2 -> eval_spot.py, the seed's flags, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import eval_spot
import train_adaslot
from ground.errors import UserError
from utils.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]

# The seed README's flag names, on tiny synthetic data.
SEED = ["--dataset", "shapes", "--encoder", "vit_micro_p8", "--batch_size", "4", "--resize_to", "32", "32",
        "--train_workers", "0", "--val_workers", "0"]
TINY = ["--no_pretrained", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
        "--train_samples", "16", "--val_samples", "8", "--eval_batch_size", "8", "--lr_warmup_steps", "2"]


def stage1(tmp_path: Path, *extra: str, iters: int = 6) -> Path:
    train_adaslot.main(["--model_save_path", str(tmp_path / "s1"), "--exp_id", "S1", "--comment", "stage 1", *SEED,
                        *TINY, "--num_iters", str(iters), "--num_slots", "3", *extra])
    return next((tmp_path / "s1").iterdir())


def stage2(tmp_path: Path, warm: Path, *extra: str, iters: int = 6) -> Path:
    # As the seed's stage-2 command: architecture flags are inherited from the stage-1 checkpoint.
    train_adaslot.main(["--model_save_path", str(tmp_path / "s2"), "--exp_id", "S2", *SEED, "--train_samples", "16",
                        "--val_samples", "8", "--num_slots", "5", "--use_adaptive_slot_attention", "--use_sparsity_loss",
                        "--num_iters", str(iters), "--warmstart_checkpoint", str(warm), *extra])
    return next((tmp_path / "s2").iterdir())


def test_stage1_stage2_then_eval(tmp_path: Path) -> None:
    s1 = stage1(tmp_path)
    assert s1.name.endswith("_S1")
    args = yaml.safe_load((s1 / "args.yaml").read_text())
    assert args["log_path"] == str(tmp_path / "s1") and args["comment"] == "stage 1" and args["image_size"] == 32
    ckpt1 = load_checkpoint(s1)
    # 16 samples / batch 4 = 4 steps per epoch: 6 steps end mid-epoch, and still evaluate at the end.
    assert ckpt1["step"] == 6 and ckpt1["method"] == "adaslot" and not ckpt1["model_config"]["adaptive"]
    assert json.loads((s1 / "metrics.json").read_text())["step"] == 6
    assert list(s1.glob("events.out.tfevents.*"))

    s2 = stage2(tmp_path, s1)
    ckpt2 = load_checkpoint(s2)
    config = ckpt2["model_config"]
    assert config["adaptive"] and config["num_slots"] == 5 and config["slot_size"] == 16  # inherited
    assert ckpt2["encoder"] == ckpt1["encoder"] and ckpt2["step"] == 6
    assert any(k.startswith("selector.") for k in ckpt2["model"])
    final = json.loads((s2 / "metrics.json").read_text())
    assert final["keep_rule"] == "gumbel" and 0 <= final["num_slots_kept"] <= 5

    common = ["--checkpoint_path", str(s2), "--dataset", "shapes", "--val_samples", "8", "--num_workers", "0",
              "--no_progress"]
    sampled = eval_spot.main(common)
    assert sampled["keep_rule"] == "gumbel"
    for name in ("fg_ari", "mbo_i", "miou", "precision", "recall", "f1", "ami", "nmi", "purity", "num_slots_kept"):
        assert name in sampled, name
    assert sampled == eval_spot.main(common)  # Gumbel noise at eval comes from --seed
    thresholded = eval_spot.main([*common, "--keep_rule", "threshold", "--log_path", str(tmp_path / "ev")])
    assert thresholded["keep_rule"] == "threshold"
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["keep_rule"] == "threshold"


def test_keep_rule_is_refused_for_spot_checkpoints(tmp_path: Path) -> None:
    import train_spot

    train_spot.main(["--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
                     "--num_slots", "2", "--slot_size", "16", "--mlp_hidden_size", "16", "--dec_type", "mlp",
                     "--train_permutations", "standard", "--mlp_dec_hidden", "16", "--batch_size", "4",
                     "--train_samples", "4", "--val_samples", "4", "--num_workers", "0", "--epochs", "1",
                     "--lr_warmup_steps", "0", "--log_path", str(tmp_path / "spot")])
    run = next((tmp_path / "spot").iterdir())
    with pytest.raises(UserError, match="--keep_rule gumbel: not a flag for evaluating a spot checkpoint"):
        eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "4",
                        "--num_workers", "0", "--keep_rule", "gumbel"])


def test_dinosaur_schedule_and_stage2_resume(tmp_path: Path) -> None:
    s1 = stage1(tmp_path, "--use_dinosaur_lr_schedule", "--clip", "0", iters=4)
    assert yaml.safe_load((s1 / "args.yaml").read_text())["use_dinosaur_lr_schedule"] is True
    full = stage2(tmp_path / "full", s1, iters=8)
    part = stage2(tmp_path / "part", s1, "--max_steps", "5", iters=8)
    assert load_checkpoint(part)["step"] == 5
    # Continues without warm-starting again; worker counts may change on resume.
    train_adaslot.main(["--resume", str(part), "--train_workers", "0", "--val_workers", "1"])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


def test_warm_start_refusals(tmp_path: Path) -> None:
    s1 = stage1(tmp_path, iters=2)
    with pytest.raises(UserError, match="--slot_size 32 differs from the stage-1 checkpoint"):
        stage2(tmp_path, s1, "--slot_size", "32")
    with pytest.raises(UserError, match="add --use_adaptive_slot_attention"):
        stage1(tmp_path / "again", "--warmstart_checkpoint", str(s1))
    foreign = load_checkpoint(s1)
    foreign["method"] = "spot"
    save_checkpoint(tmp_path / "spot.pt.tar", foreign)
    with pytest.raises(UserError, match="is a spot checkpoint"):
        stage2(tmp_path, tmp_path / "spot.pt.tar")
    assert not (tmp_path / "s2").exists()  # refused before a run folder was made


@pytest.mark.parametrize(
    "args, message",
    [
        (["--resize_to", "32", "48"], "only square images are supported"),
        (["--use_sparsity_loss"], "--use_sparsity_loss needs --use_adaptive_slot_attention"),
        (["--keep_rule", "argmax"], None),
    ],
    ids=["resize", "sparsity", "keep_rule"],
)
def test_bad_input_stops_before_the_run_folder(tmp_path: Path, args: list[str], message: str | None) -> None:
    argv = ["--model_save_path", str(tmp_path), *SEED, *TINY, "--num_iters", "1", *args]
    if message is None:  # argparse choices
        with pytest.raises(SystemExit):
            train_adaslot.main(argv)
    else:
        with pytest.raises(UserError, match=message):
            train_adaslot.main(argv)
    assert not any(tmp_path.iterdir())


def test_log_wandb_without_the_package_is_one_line(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    result = subprocess.run([sys.executable, "train_adaslot.py", "--model_save_path", str(tmp_path), *SEED, *TINY,
                             "--num_iters", "1", "--log_wandb"], cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --log_wandb needs the wandb package")
    assert not any(tmp_path.iterdir())


def test_log_wandb_mirrors_the_run_to_the_named_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.machinery
    import types

    calls: dict[str, object] = {}

    class FakeRun:
        def finish(self) -> None:
            calls["finished"] = True

    def init(**kwargs: object) -> FakeRun:
        calls.update(kwargs)
        return FakeRun()

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train_adaslot.main(["--model_save_path", str(tmp_path), *SEED, *TINY, "--num_iters", "1", "--log_wandb",
                        "--wandb_project", "my_project", "--exp_id", "E1", "--comment", "a note"])
    run = next(tmp_path.iterdir())
    assert calls["project"] == "my_project" and calls["notes"] == "a note" and calls["finished"] is True
    assert calls["dir"] == str(run) and calls["sync_tensorboard"] is True
    assert calls["config"]["wandb_project"] == "my_project"  # type: ignore[index]


def test_seed_flag_names_are_aliases() -> None:
    args = train_adaslot.build_parser().parse_args(
        ["--model_save_path", "out", "--exp_id", "E", "--root", "/data/coco", "--train_workers", "3",
         "--val_workers", "1", "--resize_to", "224", "224", "--encoder", "dino-vitb-16"])
    assert (args.log_path, args.run_name, args.data_path, args.num_workers, args.val_workers, args.image_size,
            args.which_encoder) == ("out", "E", "/data/coco", 3, 1, 224, "dino-vitb-16")
    assert args.clip == 1.0 and not args.use_dinosaur_lr_schedule
    # The project's own names still work.
    args = train_adaslot.build_parser().parse_args(["--log_path", "o", "--image_size", "64", "--num_workers", "2"])
    assert (args.log_path, args.image_size, args.num_workers) == ("o", 64, 2)
