"""Every training flag that a user can type changes what the script builds.

A flag that parses but is never read is the worst kind of bug for a sweep: the runs differ only
in their names. For each script the objects it hands to the shared ``Trainer`` are captured
(without training) and reduced to a fingerprint: the loss terms of one seeded forward pass on the
first training samples, the optimiser's hyperparameters, the learning rates of the schedule at
several steps, the loop's ``TrainConfig`` and the first training sample. Each flag, set to a
non-default value, must change that fingerprint. The model's stored configuration is left out on
purpose: a value written to the config but never used must still fail here.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from tests.test_eval_smtc import TINY as SMTC_TINY
from tests.test_ftdinosaur import TINY as FTDINOSAUR_TINY
from tests.test_slate import TINY as SLATE_TINY
from tests.test_train_adaslot import SEED as ADASLOT_SEED
from tests.test_train_adaslot import TINY as ADASLOT_TINY
from tests.test_train_gnm import TINY as GNM_TINY
from tests.test_train_slot_attention import TINY as SA_TINY
from tests.test_train_slotfa import TINY as SLOTFA_TINY
from tests.test_train_spot import DINOSAUR, SPOT
from tests.test_train_spot import TINY as SPOT_TINY

SCHEDULE_STEPS = (0, 1, 3, 10, 50, 500, 5000)


class _Captured(Exception):
    """Raised by the stand-in Trainer: the script has built everything it trains with."""


def _fingerprint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, train_set: Any,
                 cfg: Any) -> dict[str, Any]:
    groups = [{k: repr(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    lrs = [repr(schedule(step)) for step in SCHEDULE_STEPS]
    config = {k: repr(v) for k, v in dataclasses.asdict(cfg).items()}
    torch.manual_seed(0)
    samples = [train_set[i] for i in range(2)]
    first = {k: repr(v.float().sum().item()) for k, v in samples[0].items() if torch.is_tensor(v)}
    # The script has already moved the model to its device (CUDA where there is a GPU).
    device = next(model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in default_collate(samples).items()}
    batch.update(step=3, total_steps=10)
    model.train()
    if callable(getattr(model, "set_step", None)):
        model.set_step(3)
    torch.manual_seed(0)
    out = model(batch)
    out["loss"].backward()
    losses = {k: f"{float(v):.6g}" for k, v in {"loss": out["loss"].detach(), **out.get("losses", {})}.items()}
    # Gradient-only flags (truncation, implicit gradients) and buffer updates (centres, EMAs).
    grads = {n: f"{p.grad.norm().item():.6g}" for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: f"{b.float().sum().item():.6g}" for n, b in model.named_buffers()}
    return {"losses": losses, "grads": grads, "buffers": buffers, "optimizer": groups, "schedule": lrs,
            "train_config": config, "first_sample": first}


def _capture(monkeypatch: pytest.MonkeyPatch, script: str, argv: list[str]) -> dict[str, Any]:
    module = importlib.import_module(script)
    got: dict[str, Any] = {}

    def fake_trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta):  # noqa: ANN001
        got.update(_fingerprint(model, optimizer, schedule, train_set, cfg))
        raise _Captured

    monkeypatch.setattr(module, "Trainer", fake_trainer)
    with pytest.raises(_Captured):
        module.main(argv)
    return got


def _out(flag: str, tmp_path: Path) -> list[str]:
    return [flag, str(tmp_path)]


# script -> (base argv without the output folder flag, output folder flag, [(flag args), ...])
CASES: dict[str, tuple[list[str], str, list[list[str]]]] = {
    "train_spot": ([*SPOT_TINY, *SPOT], "--log_path", [
        ["--num_iterations", "2"], ["--slot_attention_heads", "2"], ["--num_cross_heads", "1", "--num_dec_blocks", "2"],
        ["--encoder_final_norm", "True"], ["--num_slots", "4"], ["--lr_main", "1e-3"], ["--lr_min", "1e-5"],
        ["--clip", "0.1"], ["--dropout", "0.2"],
    ]),
    "train_slot_attention": (SA_TINY, "--log_path", [
        ["--num_iterations", "2"], ["--weight_decay", "0.1"], ["--warmup_steps_pct", "0.3"],
        ["--decay_steps_pct", "0.5"], ["--scheduler_gamma", "0.9"], ["--implicit_grad", "True"],
        ["--conv_init", "kaiming"], ["--init_method", "embedding"],
    ]),
    "train_slate": (SLATE_TINY, "--log_path", [
        ["--num_iterations", "2"], ["--slot_attention_heads", "2"], ["--tau_start", "0.5"],
        ["--tau_final", "0.5", "--tau_steps", "2"], ["--hard", "True"], ["--weight_decay", "0.1"],
        ["--scheduler", "none"], ["--clip_norm_type", "inf"], ["--lr_dvae", "1e-3"], ["--truncate", "bi-level"],
    ]),
    "train_gnm": (GNM_TINY, "--log_path", [
        ["--z_bg_dim", "3"], ["--likelihood_sigma", "0.3"], ["--curriculum_steps", "2"],
        ["--beta_pres", "3"], ["--beta_where", "3"], ["--beta_depth", "3"], ["--beta_what", "3"],
        ["--beta_bg", "3"], ["--beta_aux_pres", "3"], ["--beta_aux_where", "3"], ["--beta_aux_depth", "3"],
        ["--beta_aux_what", "3"], ["--beta_aux_bg", "3"], ["--p_pres_prior", "0.5", "0.5", "0", "1"],
        ["--clip_norm_type", "inf"],
    ]),
    "train_adaslot": ([*ADASLOT_SEED, *ADASLOT_TINY, "--use_adaptive_slot_attention", "--use_sparsity_loss"],
                      "--model_save_path", [
        ["--num_iterations", "2"], ["--mlp_dec_layers", "2"], ["--sparsity_weight", "0.5"],
        ["--sparsity_loss_weight", "0.5"], ["--lr_half_life", "10"], ["--use_dinosaur_lr_schedule"],
    ]),
    "train_smtc": (SMTC_TINY, "--output_path", [
        ["--num_iterations", "2"], ["--ent_scale", "0.5"], ["--cons_scale", "0.5"], ["--weight_decay", "0.01"],
        ["--no_augment"], ["--num_instances", "1"],
    ]),
    "train_slotfa": ([*SLOTFA_TINY, "--method", "slotfa"], "--output-dir", [
        ["--min-scale", "0.5"], ["--dim_hidden", "24"], ["--dim_out", "8"], ["--num_prototypes", "4"],
        ["--teacher_momentum", "0.5"], ["--teacher_temp", "0.2"], ["--student-temp", "0.3"],
        ["--center-momentum", "0.5"], ["--fa-sigma1", "0.5"], ["--fa-sigma2", "0.5"], ["--fa-weight", "0.3"],
        ["--base_lr", "0.5"], ["--warmup-multiplier", "10"], ["--weight_decay", "0.1"], ["--momentum", "0.5"],
    ]),
    "train_ftdinosaur": (FTDINOSAUR_TINY, "--log_path", [
        ["--num_iterations", "2"], ["--num_slots", "3"], ["--slot_size", "8"], ["--mlp_hidden_size", "16"],
        ["--feature_mlp_hidden", "24"], ["--mlp_dec_hidden", "16"], ["--num_dec_layers", "2"], ["--top_k", "1"],
        ["--normalize_target", "False"], ["--init_method", "embedding"], ["--num_steps", "50"],
        ["--encoder_lr_factor", "0.5"], ["--layer_lr_decay", "0.5"], ["--weight_decay", "0.1"],
        ["--lr_reference_batch", "16"], ["--clip", "0.2"], ["--clip_norm_type", "inf"], ["--lr_main", "1e-3"],
        ["--lr_min", "1e-5"], ["--lr_warmup_steps", "5"], ["--finetune_blocks_after", "1"],
    ]),
}
PARAMS = [pytest.param(script, extra, id=f"{script}:{' '.join(extra)}")
          for script, (_, _, flags) in CASES.items() for extra in flags]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One fingerprint per script with its test defaults (computed lazily)."""
    return {}


@pytest.mark.parametrize(("script", "extra"), PARAMS)
def test_flag_changes_what_is_trained(script: str, extra: list[str], baselines: dict, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    base, out_flag, _ = CASES[script]
    if script not in baselines:
        baselines[script] = _capture(monkeypatch, script, [*base, *_out(out_flag, tmp_path / "base")])
    if extra[:1] == ["--num_cross_heads"]:  # only decoder blocks after the first have cross heads
        base = [*base, *extra[2:]]
        baselines = {script: _capture(monkeypatch, script, [*base, *_out(out_flag, tmp_path / "base2")])}
        extra = extra[:2]
    changed = _capture(monkeypatch, script, [*base, *extra, *_out(out_flag, tmp_path / "changed")])
    assert changed != baselines[script], f"{script} {' '.join(extra)} changed nothing that is trained"
