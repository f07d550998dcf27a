"""End to end: train_spot.py (DINOSAUR and SPOT mode), eval_spot.py, exact resume, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval_spot
import train_spot
from ground.errors import UserError
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1",
    "--num_heads", "2", "--mlp_dec_hidden", "32", "--batch_size", "4", "--eval_batch_size", "8",
    "--train_samples", "16", "--val_samples", "8", "--num_workers", "0", "--lr_warmup_steps", "4",
]
DINOSAUR = ["--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False"]
SPOT = ["--dec_type", "transformer", "--train_permutations", "random", "--eval_permutations", "standard"]


def train(tmp_path: Path, *extra: str, epochs: int = 2) -> Path:
    train_spot.main([*TINY, "--epochs", str(epochs), "--log_path", str(tmp_path), *extra])
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    return runs[-1]


@pytest.mark.parametrize("mode", [DINOSAUR, SPOT], ids=["dinosaur", "spot"])
def test_train_then_eval(tmp_path: Path, mode: list[str]) -> None:
    run = train(tmp_path / "logs", *mode)
    for name in ("args.yaml", "checkpoint.pt.tar", "metrics.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "viz").glob("*.png"))
    assert list(run.glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 8 and ckpt["method"] == "spot"
    # A random-init encoder cannot be rebuilt from its name, so its weights are stored.
    assert any(k.startswith("encoder.") for k in ckpt["model"])

    perms = ["all"] if "random" in mode else ["standard"]
    record = eval_spot.main(["--checkpoint_path", str(run / "checkpoint.pt.tar"), "--dataset", "shapes",
                             "--val_samples", "8", "--num_workers", "0", "--eval_permutations", *perms,
                             "--baselines", "--no_progress"])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["evaluated_by"] == "eval_spot.py" and saved["eval_permutations"] == perms[0]
    # --baselines scores one slot, a fixed grid and per-image k-means of the encoder's features.
    for name in ("one_slot", "grid", "kmeans"):
        assert 0 <= saved[f"{name}_mbo_i"] <= 100, name
    assert 0 <= record["mbo_i"] <= 100 and -100 <= record["fg_ari"] <= 100
    assert (run / "masks.png").is_file()
    # Evaluation is deterministic (shared-Gaussian slots are drawn from a fixed seed).
    again = eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8",
                            "--num_workers", "0", "--eval_permutations", *perms, "--no_progress"])
    assert again["fg_ari"] == record["fg_ari"] and again["mbo_i"] == record["mbo_i"]


def test_eval_all_permutations_differs_from_standard(tmp_path: Path) -> None:
    run = train(tmp_path, *SPOT, epochs=1)
    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8", "--num_workers", "0",
              "--no_progress"]
    standard = eval_spot.main([*common, "--eval_permutations", "standard"])
    averaged = eval_spot.main([*common, "--eval_permutations", "all"])
    assert standard["mse"] != averaged["mse"]


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = train(tmp_path / "full", *SPOT, epochs=3)
    # Stop mid-epoch (step 6 of 12, epoch 2), then resume the same run folder to the end.
    part = train(tmp_path / "part", *SPOT, "--max_steps", "6", epochs=3)
    assert load_checkpoint(part)["step"] == 6
    train_spot.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert b["step"] == a["step"] == 12
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    metrics_a = json.loads((full / "metrics.json").read_text())
    metrics_b = json.loads((part / "metrics.json").read_text())
    assert metrics_a == metrics_b


def test_resume_refuses_changed_model_flags(tmp_path: Path) -> None:
    run = train(tmp_path, *SPOT, "--max_steps", "2", epochs=1)
    with pytest.raises(UserError, match="--num_slots"):
        train_spot.main(["--checkpoint_path", str(run / "checkpoint.pt.tar"), "--num_slots", "5"])


def test_eval_every_and_checkpoint_path_resume(tmp_path: Path) -> None:
    run = train(tmp_path, *DINOSAUR, "--eval_every", "2", "--max_steps", "4", epochs=3)
    assert not (run / "metrics.jsonl").exists()  # stopped after epoch 1: no evaluation due yet
    train_spot.main(["--checkpoint_path", str(run / "checkpoint.pt.tar")])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [2, 3]  # every 2nd epoch, and always the last
    assert load_checkpoint(run)["step"] == 12


def test_second_encoder_gives_frozen_targets() -> None:
    from models.encoders import FrozenViT
    from models.spot import SPOT as Model, SPOTConfig

    torch.manual_seed(0)
    encoder = FrozenViT("vit_micro_p8", pretrained=False, finetune_blocks_after=0)
    config = SPOTConfig(image_size=16, num_slots=2, slot_size=8, mlp_hidden_size=8, dec_type="mlp",
                        train_permutations="standard", mlp_dec_hidden=8, use_second_encoder=True)
    model = Model(encoder, config)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    model(dict(image=torch.rand(2, 3, 16, 16)))["loss"].backward()
    assert any(p.grad is not None for p in model.encoder.parameters())


def test_nan_loss_is_a_clear_error_and_keeps_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run = train(tmp_path, *DINOSAUR, epochs=1)
    before = (run / "checkpoint.pt.tar").read_bytes()
    from models.spot import SPOT as Model

    original = Model.forward

    def nan_forward(self, batch):
        out = original(self, batch)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(Model, "forward", nan_forward)
    with pytest.raises(UserError, match="loss became nan"):
        train_spot.main(["--resume", str(run), "--epochs", "2"])
    assert (run / "checkpoint.pt.tar").read_bytes() == before


def run_cli(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--data_path", "/does/not/exist"], "/does/not/exist/train.h5 not found"),
        (["--which_encoder", "not_a_vit"], "not_a_vit"),
        (["--image_size", "30"], "not a multiple of the encoder's patch size"),
        (["--dec_type", "mlp", "--train_permutations", "random"], "--train_permutations standard"),
        (["--which_encoder", "vit_micro_p8"], "--no_pretrained"),
    ],
    ids=["dataset", "data_path", "encoder", "patch", "mlp-perm", "pretrained"],
)
def test_bad_training_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    base = [a for a in TINY if a != "--no_pretrained"] if "--no_pretrained" in message else TINY
    result = run_cli("train_spot.py", *base, "--epochs", "1", "--log_path", str(tmp_path), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_bad_eval_input_is_one_line(tmp_path: Path) -> None:
    run = train(tmp_path / "logs", *DINOSAUR, epochs=1)
    cases = [
        (["--checkpoint_path", str(tmp_path / "missing.pt.tar")], "not found"),
        (["--checkpoint_path", str(run), "--num_slots", "5"], "--num_slots 5 does not match the checkpoint (3)"),
        (["--checkpoint_path", str(run), "--eval_permutations", "all"], "use --eval_permutations standard"),
    ]
    garbage = tmp_path / "garbage.pt.tar"
    garbage.write_bytes(b"not a checkpoint")
    cases.append((["--checkpoint_path", str(garbage)], "unreadable or truncated"))
    for args, message in cases:
        result = run_cli("eval_spot.py", "--dataset", "shapes", "--val_samples", "4", "--num_workers", "0", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)


def test_local_encoder_weights_are_not_stored_and_must_match_on_eval(tmp_path: Path) -> None:
    from models.encoders import FrozenViT

    torch.manual_seed(1)
    weights = tmp_path / "encoder.pth"
    torch.save(FrozenViT("vit_micro_p8", pretrained=False).state_dict(), weights)
    run = train(tmp_path / "logs", *DINOSAUR, "--encoder_weights", str(weights), epochs=1)
    ckpt = load_checkpoint(run)
    assert not any(k.startswith("encoder.") for k in ckpt["model"])
    assert ckpt["encoder"]["weights_path"] == str(weights.resolve())
    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "4", "--num_workers", "0",
              "--no_progress"]
    eval_spot.main(common)
    torch.manual_seed(2)
    other = tmp_path / "other.pth"
    torch.save(FrozenViT("vit_micro_p8", pretrained=False).state_dict(), other)
    with pytest.raises(UserError, match="differ from those used in training"):
        eval_spot.main([*common, "--encoder_weights", str(other)])


def test_run_name_checkpoint_every_and_eval_log_path(tmp_path: Path, monkeypatch) -> None:
    from utils.train import Trainer

    saved_at = []
    original = Trainer.save

    def record(self):
        saved_at.append(self.step)
        return original(self)

    monkeypatch.setattr(Trainer, "save", record)
    run = train(tmp_path / "logs", *DINOSAUR, "--run_name", "demo", "--checkpoint_every", "2", epochs=1)
    assert run.name.endswith("_demo")
    assert saved_at == [2, 4]  # every 2 steps, then the end of the (4-step) epoch
    out = tmp_path / "eval_out"
    eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "4", "--num_workers", "0",
                    "--no_progress", "--log_path", str(out)])
    assert (out / "metrics.json").is_file() and (out / "masks.png").is_file()
