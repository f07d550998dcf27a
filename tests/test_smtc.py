"""SMTC modules (docs/methods/smtc.md): slot attention options, correlation, losses, EMA, schedules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.encoders import FrozenViT
from models.slot_attention import SlotAttention
from models.smtc import (
    SMTC,
    SMTCConfig,
    diversity_loss,
    hungarian_order,
    instance_loss,
    instance_masks,
    key_marginals,
    lr_at,
    match_order,
    parameter_groups,
    sinkhorn,
    validity,
)

CFG = SMTCConfig(num_slots=4, num_instances=2, anchor_grid=4)


def tiny_model(cfg: SMTCConfig = CFG) -> SMTC:
    torch.manual_seed(0)
    return SMTC(FrozenViT("vit_micro_p8", pretrained=False, finetune_blocks_after=0), cfg)


def test_masked_grouped_slot_attention():
    torch.manual_seed(0)
    sa = SlotAttention(8, 8, num_slots=4, num_iterations=2, mlp_hidden_dim=8, update="residual", truncate="bi-level")
    assert sa.gru is None
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, 4, dtype=torch.bool)
    mask[:, 5:, :2] = False
    out = sa(x, slots_init=torch.randn(2, 4, 8), group_size=2, input_mask=mask)
    attn = out["attn"]  # [B, K, N], normalised over each group of two slots
    assert torch.allclose(attn[:, :2].sum(1), torch.ones(2, 10), atol=1e-5)
    # Masked inputs do not change the slots of the first group.
    x2 = x.clone()
    x2[:, 5:] = torch.randn(2, 5, 8)
    init = torch.randn(2, 4, 8)
    a = sa(x, slots_init=init, group_size=2, input_mask=mask)["slots"]
    b = sa(x2, slots_init=init, group_size=2, input_mask=mask)["slots"]
    assert torch.allclose(a[:, :2], b[:, :2], atol=1e-5) and not torch.allclose(a[:, 2:], b[:, 2:])


def test_gradient_reaches_only_last_round_and_init():
    torch.manual_seed(0)
    sa = SlotAttention(8, 8, num_slots=3, num_iterations=3, mlp_hidden_dim=8, update="residual", truncate="bi-level")
    x = torch.randn(1, 6, 8, requires_grad=True)
    init = torch.randn(1, 3, 8, requires_grad=True)
    states = []
    original_step = sa.step

    def recording_step(*args, **kwargs):
        result = original_step(*args, **kwargs)
        if result[0].requires_grad:  # rounds before the truncation build no graph at all
            result[0].retain_grad()
        states.append(result[0])
        return result

    sa.step = recording_step
    out = sa(x, slots_init=init)
    out["slots"].sum().backward()
    assert init.grad is not None and init.grad.abs().sum() > 0
    assert len(states) == 3
    assert not states[0].requires_grad and not states[1].requires_grad  # earlier rounds are cut off
    assert states[2].grad is not None


def test_forward_shapes_correlation_and_eval_masks():
    model = tiny_model()
    video = torch.rand(2, 3, 3, 32, 40)  # non-square: anchors still on a 4x4 grid
    out = model.student(video)
    assert out["semantic_logits"].shape == (2, 3, 4, 20) and out["instance_slots"].shape == (2, 3, 4, 2, 32)
    masks, cos = instance_masks(out)
    assert masks.shape == (2, 3, 4, 2, 20) and cos.shape == (2, 3, 4, 2)
    assert torch.allclose(masks.sum((2, 3)), torch.ones(2, 3, 20), atol=1e-5)
    # Cyclic pairing: frame 0's correlation uses the last frame, so changing only the last frame
    # changes frame 0's fused keys.
    keys = out["keys"]
    grid = (4, 5)
    fused = model.student.correlation(keys, grid)
    keys2 = keys.clone()
    keys2[:, -1] += 1
    fused2 = model.student.correlation(keys2, grid)
    assert not torch.allclose(fused[:, 0], fused2[:, 0]) and torch.allclose(fused[:, 1], fused2[:, 1])


def test_training_step_grads_and_ema():
    model = tiny_model()
    out = model({"video": torch.rand(2, 3, 3, 32, 32)})
    assert set(out["losses"]) >= {"instance", "differ", "consistency"}
    out["loss"].backward()
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in model.teacher.named_parameters()}
    model.after_step(0)
    for name, param in model.teacher.named_parameters():
        if "encoder" in name:
            assert torch.equal(param, before[name])
        else:
            assert torch.allclose(param, before[name] + 0.001, atol=1e-5), name


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    keys_a, keys_b = torch.randn(2, 12, 8), torch.randn(2, 15, 8)
    a, b = key_marginals(keys_a), key_marginals(keys_b)
    assert torch.allclose(a.sum(-1), torch.ones(2))
    cost = 1 - torch.nn.functional.normalize(keys_a, dim=-1) @ torch.nn.functional.normalize(keys_b, dim=-1).transpose(1, 2)
    plan = sinkhorn(cost, a, b, eps=0.05, iters=3)
    assert torch.allclose(plan.sum(-2), b, atol=1e-6)  # columns exact after the last update
    err3 = (plan.sum(-1) - a).abs().sum()
    err50 = (sinkhorn(cost, a, b, eps=0.05, iters=50).sum(-1) - a).abs().sum()
    assert err50 < err3 and err50 < 1e-3


def test_hungarian_order_and_instance_loss():
    sim = np.array([[0.1, 0.9, 0.0], [0.8, 0.7, 0.1], [0.0, 0.2, 0.3]])
    order = hungarian_order(sim)
    assert order[:, 0].tolist() == [1, 0, 2]
    assert sorted(order[0].tolist()) == [0, 1, 2] and order[0, 1:].tolist() == [0, 2]
    torch.manual_seed(0)
    sims = torch.randn(50, 4, 4)
    expected = np.stack([hungarian_order(m) for m in sims.numpy()])
    assert np.array_equal(match_order(sims).numpy(), expected)  # brute force == scipy
    big = torch.randn(2, 7, 7)  # above the brute-force limit: scipy path
    assert np.array_equal(match_order(big).numpy(), np.stack([hungarian_order(m) for m in big.numpy()]))
    z = torch.nn.functional.normalize(torch.eye(3)[None, None, None].expand(1, 2, 1, 3, 3).clone(), dim=-1)
    ones = torch.ones(1, 2, 1, 3)
    # Identical orthogonal instances: matched cos 1, negatives cos 0 -> loss -1.
    assert instance_loss(z, z, ones, ones).item() == pytest.approx(-1.0)
    assert instance_loss(z, z, torch.zeros_like(ones), ones).item() == 0.0


def test_validity_filter_thresholds():
    cfg = SMTCConfig(num_slots=2, num_instances=2)
    semantic = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    instances = torch.tensor([[[1.0, 0.1], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    for owned, slot0_valid in ((3, True), (2, False)):  # area 0.3 > 0.2 is valid; exactly 0.2 is not
        logits = torch.full((2, 10), -10.0)
        logits[0, :owned] = 10.0
        logits[1, owned:] = 10.0
        v = validity(logits, semantic, instances, cfg)
        # Instance (0, 1) and (1, 1) fail the cosine test (cos 0 < 0.5).
        assert v.tolist() == [[float(slot0_valid), 0.0], [1.0, 0.0]]


def test_diversity_zero_for_disjoint_masks():
    logits = torch.full((3, 6), -50.0)
    for s in range(3):
        logits[s, 2 * s : 2 * s + 2] = 50.0
    assert diversity_loss(logits).item() == pytest.approx(0.0, abs=1e-6)
    assert diversity_loss(torch.zeros(3, 6)).item() == pytest.approx(1.0, abs=1e-5)


def test_groups_and_schedule_values():
    model = tiny_model()
    groups = parameter_groups(model)
    assert [(g["is_encoder"], g["weight_decay"]) for g in groups] == [(True, 0.1), (True, 0.0), (False, 0.1), (False, 0.0)]
    assert lr_at(0, 100, 1e-4, False, 30) == pytest.approx(1e-4)
    assert lr_at(100, 100, 1e-4, False, 30) == pytest.approx(1e-5)
    assert lr_at(50, 100, 1e-4, False, 30) == pytest.approx(5.5e-5)
    assert lr_at(29, 100, 1e-4, True, 30) == 0.0
    assert lr_at(30, 100, 1e-4, True, 30) == pytest.approx(0.01 * lr_at(30, 100, 1e-4, False, 30))
    assert lr_at(150, 100, 1e-4, False, 30) == pytest.approx(1e-5)  # no IndexError past the end
