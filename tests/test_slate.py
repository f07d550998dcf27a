"""SLATE: dVAE, temperature and LR schedules, decoder parametrisation, masks, CLI, resume, evaluation."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_slate
from ground.errors import UserError
from ground.schedules import SlateSchedule, cosine_anneal
from ground.state_dict import load_model_state
from models import build_model
from models.decoders import AutoregressiveDecoder
from models.dvae import DVAE
from models.slate import SLATE, SLATEConfig
from utils.checkpoint import load_checkpoint
from utils.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = dict(image_size=32, vocab_size=32, d_model=32, num_heads=2, num_dec_blocks=1, slot_size=16,
                  mlp_hidden_size=16, num_slots=3, dvae_hidden_size=16)
TINY = [
    "--dataset", "shapes", "--image_size", "32", "--vocab_size", "32", "--d_model", "32", "--num_heads", "2",
    "--num_dec_blocks", "1", "--slot_size", "16", "--mlp_hidden_size", "16", "--num_slots", "3",
    "--dvae_hidden_size", "16", "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16",
    "--val_samples", "8", "--num_workers", "0", "--lr_warmup_steps", "4", "--tau_steps", "8",
]


def tiny_model(**overrides) -> SLATE:
    torch.manual_seed(0)
    return SLATE(SLATEConfig(**{**TINY_MODEL, **overrides}))


def train(tmp_path: Path, *extra: str, epochs: int = 2) -> Path:
    train_slate.main([*TINY, "--epochs", str(epochs), "--log_path", str(tmp_path), *extra])
    return sorted(p for p in tmp_path.iterdir() if p.is_dir())[-1]


# --- dVAE and schedules ------------------------------------------------------------------------


def test_dvae_shapes_and_samples() -> None:
    torch.manual_seed(0)
    dvae = DVAE(vocab_size=10, hidden_dim=8)
    images = torch.rand(2, 3, 32, 32)
    out = dvae(images, tau=0.5)
    assert out["log_probs"].shape == (2, 10, 8, 8)  # one token per 4x4 pixels
    torch.testing.assert_close(out["log_probs"].logsumexp(dim=1), torch.zeros(2, 8, 8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["sample"].sum(dim=1), torch.ones(2, 8, 8), atol=1e-5, rtol=0)
    assert out["reconstruction"].shape == images.shape
    assert not torch.equal(out["sample"], dvae(images, tau=0.5)["sample"])  # a fresh Gumbel sample
    hard = dvae(images, tau=0.5, hard=True)["sample"]
    assert set(hard.unique().tolist()) == {0.0, 1.0} and torch.equal(hard.sum(dim=1), torch.ones(2, 8, 8))


def test_temperature_cosine_schedule() -> None:
    # SLATE: tau 1.0 -> 0.1 over 30k steps, a half cosine, then constant.
    assert cosine_anneal(0, 1.0, 0.1, 30000) == 1.0
    assert cosine_anneal(15000, 1.0, 0.1, 30000) == pytest.approx(0.55)
    assert cosine_anneal(7500, 1.0, 0.1, 30000) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert cosine_anneal(30000, 1.0, 0.1, 30000) == pytest.approx(0.1)
    assert cosine_anneal(10**6, 1.0, 0.1, 30000) == pytest.approx(0.1)
    model = tiny_model(tau_steps=100)
    for step, tau in ((0, 1.0), (50, 0.55), (100, 0.1), (500, 0.1)):
        model.set_step(step)
        assert float(model.tau) == pytest.approx(tau)
        assert float(model({"image": torch.rand(1, 3, 32, 32)})["losses"]["tau"]) == pytest.approx(tau)


def test_lr_schedule_warmup_and_plateau_halving() -> None:
    schedule = SlateSchedule(lr_main=1e-4, lr_dvae=3e-4, warmup_steps=100, patience=2)
    assert schedule(0) == pytest.approx([1e-6, 3e-4])  # (step + 1) / warmup; dVAE without warm-up
    assert schedule(49) == pytest.approx([5e-5, 3e-4])
    assert schedule(99) == pytest.approx([1e-4, 3e-4]) and schedule(5000) == pytest.approx([1e-4, 3e-4])
    for loss in (10.0, 9.0, 9.5, 9.2):  # two evaluations without a new best -> both halved
        schedule.observe({"loss": loss})
    assert schedule(5000) == pytest.approx([5e-5, 1.5e-4])
    assert schedule(49) == pytest.approx([2.5e-5, 1.5e-4])  # the factor multiplies the warm-up
    restored = SlateSchedule(lr_main=1e-4, lr_dvae=3e-4, warmup_steps=100, patience=2)
    restored.load_state_dict(schedule.state_dict())
    assert restored(5000) == schedule(5000) and restored.state_dict() == schedule.state_dict()
    constant = SlateSchedule(1e-4, 3e-4, 100, warmup=False)
    constant.observe({"loss": 1.0})
    assert constant(0) == [1e-4, 3e-4]


# --- model -------------------------------------------------------------------------------------


def test_decoder_parametrisation_keeps_spot_path() -> None:
    spot = AutoregressiveDecoder(feature_dim=16, slot_dim=8, num_tokens=4, num_blocks=1, num_heads=2)
    spot_keys = set(spot.state_dict())
    assert {"input_proj.0.weight", "input_proj.1.weight", "slot_proj.1.weight"} <= spot_keys
    assert not any(k.startswith("head.") for k in spot_keys)
    slots, feats = torch.randn(2, 3, 8), torch.randn(2, 4, 16)
    spot.eval()
    out = spot(slots, feats)
    assert out["reconstruction"].shape == (2, 4, 16)
    # SPOT's prediction is the final LayerNorm output itself (no head).
    torch.testing.assert_close(out["reconstruction"].mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)

    slate = AutoregressiveDecoder(feature_dim=16, slot_dim=8, num_tokens=4, num_blocks=1, num_heads=2,
                                  input_proj=False, slot_proj_norm=False, output_dim=11)
    keys = set(slate.state_dict())
    assert not any(k.startswith("input_proj.") for k in keys) and "slot_proj.1.weight" not in keys
    assert slate.head.weight.shape == (11, 16) and slate.head.bias is None
    assert slate(slots, feats)["reconstruction"].shape == (2, 4, 11)


def test_masks_are_normalised_over_slots_and_losses_are_sums() -> None:
    model = tiny_model()
    images = torch.rand(2, 3, 32, 32)
    out = model({"image": images})
    for name in ("slots", "decoder"):
        masks = out["masks"][name]
        assert masks.shape == (2, 3, 8, 8)
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 8, 8), atol=1e-5, rtol=0)
    # The official loss: per-image sums, batch mean.
    mse = ((images - out["reconstruction"]) ** 2).sum() / 2
    torch.testing.assert_close(out["losses"]["mse"], mse.detach())
    log_probs = out["logits"].log_softmax(-1).gather(-1, out["tokens"][..., None])
    torch.testing.assert_close(out["losses"]["cross_entropy"], -log_probs.sum().detach() / 2)
    assert torch.equal(out["loss"].detach(), out["losses"]["mse"] + out["losses"]["cross_entropy"])


def test_gradients_are_separated() -> None:
    """The dVAE learns only from pixels, the slot path only from the token cross-entropy."""
    model = tiny_model()
    out = model({"image": torch.rand(2, 3, 32, 32)})
    ce = torch.nn.functional.cross_entropy(out["logits"].flatten(0, 1), out["tokens"].flatten(), reduction="sum")
    ce.backward(retain_graph=True)
    assert all(p.grad is None for p in model.dvae.parameters())
    assert model.slot_attention.to_q.weight.grad is not None
    model.zero_grad(set_to_none=True)
    ((out["reconstruction"] - 0.5) ** 2).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("dvae."))


def test_greedy_generation_is_consistent_with_teacher_forcing() -> None:
    model = tiny_model().eval()
    slots = torch.randn(2, 3, 16)
    tokens = model.generate_tokens(slots)
    assert tokens.shape == (2, 64) and tokens.dtype == torch.long
    logits = model.decoder(slots, model.embed(tokens), bos=model.bos(2))["reconstruction"]
    assert torch.equal(logits.argmax(-1), tokens)  # each token is the greedy choice given its prefix
    pictures = model.visual_outputs(torch.rand(2, 3, 32, 32))
    assert pictures["reconstructions"]["autoregressive"].shape == (2, 3, 32, 32)
    assert pictures["attention"].shape == (2, 3, 8, 8) and not model.training


# --- command line ------------------------------------------------------------------------------


def test_train_then_rebuild_and_evaluate(tmp_path: Path) -> None:
    run = train(tmp_path / "logs", "--device", "cpu")  # the stored metrics are compared with a CPU evaluation
    for name in ("args.yaml", "checkpoint.pt.tar", "metrics.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "viz").glob("step_*.png")) and list((run / "viz").glob("reconstructions_step_*.png"))
    assert list(run.glob("events.out.tfevents.*"))
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "slate" and ckpt["encoder"] is None and ckpt["step"] == 8
    assert [g["name"] for g in ckpt["optimizer"]["param_groups"]] == ["main", "dvae"]
    # The temperature at the checkpoint's step (8) is stored with the weights.
    assert float(ckpt["model"]["tau"]) == pytest.approx(cosine_anneal(8, 1.0, 0.1, 8))
    saved = json.loads((run / "metrics.json").read_text())
    assert {"fg_ari", "fg_ari_decoder", "mbo_i", "loss"} <= set(saved)

    model = build_model(ckpt["method"], ckpt["model_config"], ckpt["encoder"])
    load_model_state(model, ckpt["model"])
    from datasets import build_dataset
    from utils.train import make_loader

    val = build_dataset("shapes", "val", 32, None, None, 8, 0)
    result = evaluate(model, make_loader(val, 8, 0, None, 0, False), torch.device("cpu"), seed=0, primary_masks="slots")
    assert result["metrics"]["fg_ari"] == pytest.approx(saved["fg_ari"])
    assert result["metrics"]["fg_ari_decoder"] == pytest.approx(saved["fg_ari_decoder"])


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = train(tmp_path / "full", "--patience", "1", epochs=3)
    part = train(tmp_path / "part", "--patience", "1", "--max_steps", "6", epochs=3)
    assert load_checkpoint(part)["step"] == 6
    train_slate.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 12
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert a["lr_schedule"] == b["lr_schedule"]
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]
    assert json.loads((full / "metrics.json").read_text()) == json.loads((part / "metrics.json").read_text())


def test_seed_flag_names_and_defaults() -> None:
    args = train_slate.build_parser().parse_args([])
    assert (args.lr_dvae, args.lr_main, args.batch_size, args.epochs, args.clip) == (3e-4, 1e-4, 50, 1000, 1.0)
    assert (args.vocab_size, args.d_model, args.num_dec_blocks, args.num_heads, args.image_size) == (4096, 192, 8, 8, 128)
    assert (args.tau_start, args.tau_final, args.tau_steps, args.lr_warmup_steps, args.patience) == (1.0, 0.1, 30000, 30000, 4)
    aliased = train_slate.build_parser().parse_args(["--max_epochs", "7", "--gradient_clip_val", "0.5",
                                                     "--val_batch_size", "3", "--resolution", "64"])
    assert (aliased.epochs, aliased.clip, aliased.eval_batch_size, aliased.image_size) == (7, 0.5, 3, 64)


@pytest.mark.parametrize(
    "args, message",
    [(["--image_size", "30"], "not a multiple of 4"), (["--num_heads", "3"], "--num_heads 3 does not divide")],
    ids=["image_size", "heads"],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "train_slate.py", *TINY, "--epochs", "1", "--log_path", str(tmp_path), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


def test_resume_refuses_other_method(tmp_path: Path) -> None:
    import train_spot

    train_spot.main(["--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
                     "--num_slots", "2", "--slot_size", "8", "--mlp_hidden_size", "8", "--dec_type", "mlp",
                     "--train_permutations", "standard", "--mlp_dec_hidden", "8", "--batch_size", "4",
                     "--train_samples", "4", "--val_samples", "4", "--num_workers", "0", "--epochs", "1", "--lr_warmup_steps", "0",
                     "--log_path", str(tmp_path)])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    with pytest.raises(UserError, match="another training script|not a SLATE one"):
        train_slate.main(["--resume", str(run)])


# --- longer training (excluded by default) -----------------------------------------------------


@pytest.mark.slow
def test_slate_learns_objects_on_shapes(tmp_path: Path) -> None:
    """Trains a small SLATE on 32-px shapes for 768 steps (about 7 minutes on 2 shared cores), reports FG-ARI."""
    metrics = train_slate.main([
        "--dataset", "shapes", "--image_size", "32", "--vocab_size", "64", "--d_model", "64", "--num_heads", "4",
        "--num_dec_blocks", "2", "--slot_size", "64", "--mlp_hidden_size", "64", "--num_slots", "5",
        "--dvae_hidden_size", "32", "--dropout", "0.1", "--batch_size", "32", "--eval_batch_size", "64",
        "--train_samples", "2048", "--val_samples", "128", "--num_workers", "0", "--epochs", "12",
        "--lr_warmup_steps", "100", "--tau_steps", "300", "--lr_main", "4e-4", "--lr_dvae", "1e-3",
        "--log_path", str(tmp_path), "--eval_every", "4",
    ])
    print(f"SLATE on shapes 32px: FG-ARI slots {metrics['fg_ari']:.1f}, decoder {metrics['fg_ari_decoder']:.1f}, "
          f"mBO {metrics['mbo_i']:.1f}")
    # Measured (seed 0, CPU): FG-ARI 7.3 after 256 steps, 14.4 after 768; the one-slot baseline
    # scores 0. SLATE needs far longer training (its dVAE uses only a few codes this early), so
    # this only checks that slot attention has started to separate objects.
    assert metrics["fg_ari"] > 10
