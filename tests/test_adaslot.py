"""AdaSlot model: Gumbel keep decisions, mask_normalized alphas, all-dropped images, warm start, recipe."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ground.errors import UserError
from ground.schedules import WarmupExponentialDecay
from ground.state_dict import model_state
from models import build_model
from models.adaslot import AdaSlot, AdaSlotConfig, gumbel_keep, threshold_keep, warm_start
from models.decoders import MLPDecoder, mask_normalized
from models.encoders import FrozenViT

ENCODER = {"name": "vit_micro_p8", "pretrained": False}
TINY = dict(image_size=16, slot_size=8, mlp_hidden_size=16, mlp_dec_hidden=16, mlp_dec_layers=2)


def record(**settings) -> dict:
    """A complete model_config (build_model, like a checkpoint, needs every field)."""
    return AdaSlotConfig(**dict(TINY, **settings)).to_dict()


def make_model(num_slots: int = 3, adaptive: bool = False, seed: int = 0, **kw) -> AdaSlot:
    torch.manual_seed(seed)
    return build_model("adaslot", record(num_slots=num_slots, adaptive=adaptive, **kw), ENCODER)


def checkpoint_of(model: AdaSlot, method: str = "adaslot") -> dict:
    return {"method": method, "model_config": model.config.to_dict(), "encoder": ENCODER, "model": model_state(model)}


def test_gumbel_keep_is_exactly_binary_with_straight_through_gradients() -> None:
    torch.manual_seed(0)
    logits = torch.randn(64, 9, 2, requires_grad=True)
    keep = gumbel_keep(logits)
    assert set(keep.unique().tolist()) <= {0.0, 1.0} and 0 < keep.sum() < keep.numel()
    assert torch.equal(keep, keep.round())  # no 1 - s + s round-off
    (keep * torch.randn(64, 9)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # The keep logit pushes up, the drop logit down by the same amount (softmax over two).
    torch.testing.assert_close(logits.grad[..., 1], -logits.grad[..., 0])


def test_gumbel_keep_rate_matches_softmax_probability() -> None:
    torch.manual_seed(1)
    logits = torch.tensor([[-2.0, 1.0], [0.0, 0.0], [0.7, -0.2], [1.5, 3.0]])
    samples = 50_000
    keep = gumbel_keep(logits.unsqueeze(0).expand(samples, -1, -1))
    rate = keep.mean(dim=0)
    p = logits.softmax(-1)[:, 1]
    tolerance = 5 * torch.sqrt(p * (1 - p) / samples)  # 5 binomial standard errors
    assert ((rate - p).abs() < tolerance).all(), (rate, p)


def test_threshold_keep_is_p_keep_above_half() -> None:
    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [2.0, 2.5]]])
    assert threshold_keep(logits).tolist() == [[1.0, 0.0, 1.0]]


def test_mask_normalized_sums_to_one_over_kept_slots_and_all_dropped_is_zero() -> None:
    torch.manual_seed(2)
    alpha = torch.randn(3, 5, 7).softmax(dim=1)
    keep = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.float32)
    out = mask_normalized(alpha, keep)
    # Sums are S / (S + 1e-5) with S the kept mass: one up to the original's epsilon.
    kept_mass = (alpha * keep[..., None]).sum(dim=1)
    torch.testing.assert_close(out.sum(dim=1), kept_mass / (kept_mass + 1e-5))
    torch.testing.assert_close(out[:2].sum(dim=1), torch.ones(2, 7), atol=1e-5 / kept_mass[:2].min().item(), rtol=0)
    assert (out[keep == 0] == 0).all()
    assert torch.equal(out[2], torch.zeros(5, 7)) and torch.isfinite(out).all()
    # Masked softmax up to the 1e-5 in the denominator (docs/methods/adaslot.md).
    masked = alpha[0][keep[0] == 1] / alpha[0][keep[0] == 1].sum(0)
    torch.testing.assert_close(out[0][keep[0] == 1], masked, atol=1e-3, rtol=0)


def test_decoder_keep_drops_slots_from_the_reconstruction() -> None:
    torch.manual_seed(3)
    decoder = MLPDecoder(slot_dim=4, feature_dim=6, num_tokens=5, hidden_dim=8)
    slots = torch.randn(1, 3, 4)
    keep = torch.tensor([[1.0, 0.0, 1.0]])
    out = decoder(slots, keep)
    only_kept = decoder(slots[:, [0, 2]])
    torch.testing.assert_close(out["reconstruction"], only_kept["reconstruction"], atol=1e-4, rtol=0)
    assert (out["masks"][:, 1] == 0).all()


def test_all_dropped_image_gives_finite_loss_and_gradients() -> None:
    model = make_model(num_slots=4, adaptive=True, use_sparsity_loss=True)
    with torch.no_grad():  # drop logit far above the keep logit: every slot dropped
        model.selector.net[3].bias.copy_(torch.tensor([30.0, -30.0]))
    out = model({"image": torch.rand(2, 3, 16, 16)})
    assert out["slot_keep"].sum() == 0
    assert torch.isfinite(out["loss"]) and (out["masks"]["decoder"] == 0).all()
    assert torch.isfinite(out["masks"]["slots"]).all()
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_stage2_outputs_and_sparsity_penalty() -> None:
    model = make_model(num_slots=5, adaptive=True, use_sparsity_loss=True, sparsity_weight=0.5)
    out = model({"image": torch.rand(3, 3, 16, 16)})
    assert out["slot_keep"].shape == (3, 5) and out["masks"]["decoder"].shape == (3, 5, 2, 2)
    kept = out["slot_keep"]
    torch.testing.assert_close(out["losses"]["sparsity"], 0.5 * kept.mean())
    torch.testing.assert_close(out["loss"], out["losses"]["mse"] + out["losses"]["sparsity"])
    sums = out["masks"]["decoder"].sum(dim=1)  # 1 where any slot is kept, 0 otherwise
    has_kept = kept.sum(dim=1) > 0
    torch.testing.assert_close(sums[has_kept], torch.ones_like(sums[has_kept]), atol=1e-4, rtol=0)
    out["loss"].backward()
    assert model.selector.net[1].weight.grad.abs().sum() > 0  # through the straight-through keep


def test_stage1_keeps_every_slot_and_threshold_rule_is_p_keep_above_half() -> None:
    out = make_model()({"image": torch.rand(2, 3, 16, 16)})
    assert torch.equal(out["slot_keep"], torch.ones(2, 3)) and out["keep_rule"] == "all"
    model = make_model(num_slots=6, adaptive=True, keep_rule="threshold").eval()
    images = {"image": torch.rand(2, 3, 16, 16)}
    with torch.no_grad():
        a = model(images)
    assert a["keep_rule"] == "threshold"
    torch.testing.assert_close(a["slot_keep"], (a["slot_keep_prob"] > 0.5).float())
    assert model.train().keep_rule == "gumbel"  # training always samples


def test_recipe_zero_biases_no_dropout_and_shared_gaussian_init() -> None:
    """Zero linear biases outside slot attention; slot attention keeps PyTorch's default init (the
    AdaSlot references' recipe, docs/methods/adaslot.md), and zero biases with --init_scheme xavier."""
    model = make_model(adaptive=True)
    assert model.config.init_scheme == "torch_default"
    assert not any(isinstance(m, nn.Dropout) for n, m in model.named_modules() if not n.startswith("encoder"))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None and not name.startswith("encoder"):
            if name.startswith("slot_attention."):
                assert module.bias.abs().sum() > 0, name  # PyTorch's default: uniform biases
            else:
                assert module.bias.abs().sum() == 0, name
    assert model.slot_attention.init.method == "shared_gaussian"
    xavier = make_model(adaptive=True, init_scheme="xavier")
    for name, module in xavier.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None and name.startswith("slot_attention."):
            assert module.bias.abs().sum() == 0, name


def test_warm_start_loads_everything_but_the_selector_with_another_k() -> None:
    stage1 = make_model(num_slots=3, seed=0)
    stage2 = make_model(num_slots=7, adaptive=True, seed=1)
    new_keys = warm_start(stage2, checkpoint_of(stage1), "stage1.pt")
    assert new_keys and all(k.startswith("selector.") for k in new_keys)
    assert set(new_keys) == {k for k in stage2.state_dict() if k.startswith("selector.")}
    for key, value in stage1.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert stage2({"image": torch.rand(1, 3, 16, 16)})["slot_keep"].shape == (1, 7)


def test_warm_start_refuses_other_checkpoints() -> None:
    stage1, stage2 = make_model(), make_model(num_slots=5, adaptive=True)
    with pytest.raises(UserError, match="is a spot checkpoint"):
        warm_start(stage2, checkpoint_of(stage1, method="spot"), "x.pt")
    with pytest.raises(UserError, match="already an adaptive"):
        warm_start(make_model(adaptive=True), checkpoint_of(stage2), "x.pt")
    with pytest.raises(UserError, match="add --use_adaptive_slot_attention"):
        warm_start(make_model(), checkpoint_of(stage1), "x.pt")
    other = build_model("adaslot", record(slot_size=12, num_slots=3), ENCODER)
    with pytest.raises(UserError, match="wrong shapes"):
        warm_start(stage2, checkpoint_of(other), "x.pt")


def test_schedules_match_the_spec_table() -> None:
    adaslot = WarmupExponentialDecay(4e-4, 10_000, 100_000, decay_during_warmup=True)
    dinosaur = WarmupExponentialDecay(4e-4, 10_000, 100_000, decay_during_warmup=False)
    expected = {10_000: (3.73e-4, 4.00e-4), 100_000: (2.00e-4, 2.14e-4), 200_000: (1.00e-4, 1.07e-4),
                500_000: (1.25e-5, 1.34e-5)}
    for step, (a, d) in expected.items():
        assert math.isclose(adaslot(step), a, rel_tol=5e-3) and math.isclose(dinosaur(step), d, rel_tol=5e-3)
    assert adaslot(0) == dinosaur(0) == 0.0
    assert math.isclose(adaslot(300_000) / dinosaur(300_000), 0.5**0.1)


def test_config_checks() -> None:
    with pytest.raises(UserError, match="--use_sparsity_loss needs --use_adaptive_slot_attention"):
        AdaSlot(FrozenViT("vit_micro_p8", pretrained=False), AdaSlotConfig(**TINY, use_sparsity_loss=True))
