"""SlotCon / SlotFA model: alignment, loss pieces, schedules, SlotFA's augmentation, cross-rank pieces."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from datasets.two_view import intersection, view_box
from ground.schedules import WarmupCosineFrom
from models.slotfa import (SlotCon, SlotConConfig, align_maps, contrastive_targets, momentum_at,
                           self_distillation, slot_contrastive_loss, slot_feature_augment, slot_presence,
                           updated_center)


def _linear_map(crop: tuple[int, int, int, int], size: int, flipped: bool) -> torch.Tensor:
    """A view's 'feature map' whose channels are the image x and y of each map pixel centre."""
    top, left, h, w = crop
    j = torch.arange(size, dtype=torch.float32)
    x = left + (j + 0.5) * w / size
    y = top + (j + 0.5) * h / size
    grid = torch.stack([x[None, :].expand(size, size), y[:, None].expand(size, size)])
    return grid.flip(-1) if flipped else grid


def test_align_maps_makes_two_views_match() -> None:
    c1, c2, size = (10, 20, 60, 64), (30, 40, 56, 48), 16
    inter = intersection(c1, c2)
    maps, boxes, flips = [], [], []
    for crop, flipped in ((c1, False), (c2, True)):
        maps.append(_linear_map(crop, size, flipped)[None])
        boxes.append(view_box(crop, inter, flipped)[None])
        flips.append(torch.tensor([flipped]))
    a1, a2 = (align_maps(m, b, f) for m, b, f in zip(maps, boxes, flips))
    # Bilinear sampling of a linear function is exact away from the border (clamped within half a pixel).
    assert torch.allclose(a1[..., 1:-1, 1:-1], a2[..., 1:-1, 1:-1], atol=1e-3)
    assert torch.allclose(a1, a2, atol=2.5)
    # Both cover the intersection: x from 40 to 84 (left to right, unflipped).
    assert a1[0, 0, 0, 0] < a1[0, 0, 0, -1] and 40 <= float(a1[0, 0].min()) and float(a1[0, 0].max()) <= 84
    # Forgetting to undo the flip would not match.
    assert not torch.allclose(a1, align_maps(maps[1], boxes[1], torch.tensor([False])), atol=2.5)


# --- loss pieces ----------------------------------------------------------------------------------------
def test_self_distillation_matches_per_pixel_formula() -> None:
    torch.manual_seed(0)
    s, t, center = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3), torch.randn(1, 5)
    expected = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                target = torch.softmax((t[b, :, i, j] - center[0]) / 0.07, 0)
                expected += -(target * torch.log_softmax(s[b, :, i, j] / 0.1, 0)).sum()
    assert self_distillation(s, t, center, 0.1, 0.07).item() == pytest.approx(expected.item() / 18, rel=1e-5)


def test_center_ema_uses_both_views() -> None:
    v1, v2 = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    v1[:, 1] = 3.0
    new = updated_center(torch.full((1, 3), 2.0), [v1, v2], 0.9)
    assert new.shape == (1, 3)
    assert new[0].tolist() == pytest.approx([0.9 * 2 + 0.1 * 0.5, 0.9 * 2 + 0.1 * 1.5, 0.9 * 2 + 0.1 * 0.5])


def test_slot_presence_and_contrastive_labels() -> None:
    dots = torch.zeros(2, 4, 1, 2)
    dots[0, 1, 0, 0] = dots[0, 3, 0, 1] = 1  # image 0: prototypes 1 and 3 win a pixel
    dots[1, 2, 0, :] = 1  # image 1: prototype 2 wins both
    present = slot_presence(dots)
    assert present.tolist() == [[False, True, False, True], [False, False, True, False]]
    keys = present.clone()
    keys[1, 0] = True  # the teacher view also has prototype 0 in image 1
    queries = present & keys
    # Kept keys in order: (0,1), (0,3), (1,0), (1,2) -> the positive of query (1,2) is key 3.
    assert contrastive_targets(queries, keys.flatten(), 0).tolist() == [0, 1, 3]


def test_slot_contrastive_loss_hand_computation() -> None:
    torch.manual_seed(1)
    b, k, d = 2, 3, 4
    q_slots, k_slots = torch.randn(b, k, d), torch.randn(b, k, d)
    q_dots = torch.zeros(b, k, 1, 2)
    q_dots[:, 0, 0, 0] = q_dots[:, 1, 0, 1] = 1  # slots 0 and 1 present in every query view
    k_dots = torch.zeros(b, k, 1, 3)
    k_dots[:, 0, 0, 0] = k_dots[:, 1, 0, 1] = k_dots[:, 2, 0, 2] = 1  # all three present in the key view
    loss = slot_contrastive_loss(q_slots, k_slots, q_dots, k_dots, nn.Identity(), tau=0.2)
    keys = torch.nn.functional.normalize(k_slots.reshape(-1, d), dim=-1)
    queries = torch.nn.functional.normalize(q_slots[:, :2].reshape(-1, d), dim=-1)
    labels = torch.tensor([0, 1, 3, 4])
    expected = torch.nn.functional.cross_entropy(queries @ keys.t() / 0.2, labels) * 0.4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_momentum_and_lr_schedule_endpoints() -> None:
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    sched = WarmupCosineFrom(2.0, total_steps=100, warmup_steps=10, warmup_multiplier=100)
    assert sched(0) == pytest.approx(0.02)
    assert sched(5) == pytest.approx(0.02 + (2.0 - 0.02) / 2)
    assert sched(10) == pytest.approx(2.0)
    assert sched(100) == pytest.approx(1e-6)
    assert sched(55) == pytest.approx(1e-6 + 0.5 * (2.0 - 1e-6))
# --- SlotFA's slot-wise feature augmentation ---------------------------------------------------------
def test_feature_augment_vectorised_equals_loop() -> None:
    torch.manual_seed(2)
    x, assign = torch.randn(2, 6, 3, 4), torch.randint(0, 5, (2, 3, 4))
    alpha, beta = 1 + torch.randn(5, 6), torch.randn(5, 6)
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                a = int(assign[b, i, j])
                expected[b, :, i, j] = alpha[a] * x[b, :, i, j] + beta[a]
    assert torch.allclose(slot_feature_augment(x, assign, alpha, beta), expected)


def _tiny_model(method: str, **kw) -> SlotCon:
    config = SlotConConfig(method=method, arch="tiny_resnet50", dim_hidden=16, dim_out=8, num_prototypes=6,
                           total_steps=10, **kw)
    return SlotCon(config)


def _two_views(batch: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    box = torch.tensor([[0.2, 0.1, 0.9, 0.8]]).repeat(batch, 1)
    return {"view1": torch.randn(batch, 3, size, size), "view2": torch.randn(batch, 3, size, size),
            "box1": box, "box2": box, "flip1": torch.tensor([True, False] * (batch // 2)),
            "flip2": torch.zeros(batch, dtype=torch.bool)}


def test_slotfa_augmented_loss_trains_backbone_not_prototypes() -> None:
    model = _tiny_model("slotfa", group_loss_weight=0.0, fa_grad="backbone")  # the loss is L_group-aug alone
    out = model(_two_views())
    out["loss"].backward()
    assert model.grouping_q.slot_embed.weight.grad.abs().sum() == 0  # prototypes locked
    assert model.projector_q.mlp[0].weight.grad.abs().sum() > 0
    assert model.encoder_q.layer4[0].bn3.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder_k.parameters())  # the teacher never gets gradients
    released = _tiny_model("slotfa", group_loss_weight=0.0)  # default: as the released code
    out = released(_two_views())
    out["loss"].backward()  # only 0 * L_group has a graph: L_group-aug is logged but gives no gradient
    assert out["losses"]["group_aug"] > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in released.parameters())


def test_slotcon_forward_updates_teacher_and_center() -> None:
    model = _tiny_model("slotcon")
    with torch.no_grad():
        model.encoder_q.conv1.weight.add_(1.0)  # student != teacher, so the EMA moves the teacher
    teacher_before = model.encoder_k.conv1.weight.clone()
    out = model(_two_views())
    assert set(out["losses"]) == {"group", "contrast", "teacher_momentum"}
    assert out["losses"]["teacher_momentum"].item() == pytest.approx(0.99)
    assert int(model.momentum_step) == 1 and model.center.abs().sum() > 0
    moved = model.encoder_k.conv1.weight - teacher_before
    assert torch.allclose(moved, 0.01 * torch.ones_like(moved), atol=1e-6)
    assert out["masks"]["prototypes"].shape == (4, 6, 2, 2)


# --- the cross-rank pieces with a real 2-process gloo group (no trainer, no DDP wrapper) ------------------
def test_contrast_center_and_noise_across_two_ranks(tmp_path: Path) -> None:
    torch.manual_seed(5)
    q_slots, k_slots = torch.randn(4, 3, 4), torch.randn(4, 3, 4)
    q_dots, k_dots = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    torch.save((q_slots, k_slots, q_dots, k_dots), tmp_path / "inputs.pt")
    from tests.slotfa_two_ranks import two_rank_worker

    # fork: the children inherit the imported modules instead of importing torch again
    torch.multiprocessing.start_processes(two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                                          start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # Every query sees the keys of both ranks: the count-weighted mean equals the one-process loss.
    full = slot_contrastive_loss(q_slots, k_slots, q_dots, k_dots, nn.Identity())
    pooled = (r0["loss"] * r0["queries"] + r1["loss"] * r1["queries"]) / (r0["queries"] + r1["queries"])
    assert pooled.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(r0["center"], updated_center(torch.zeros(1, 3), [k_dots], 0.0), atol=1e-6)
    assert torch.equal(r0["center"], r1["center"])
    assert torch.equal(r0["alpha"], r1["alpha"]) and torch.equal(r0["beta"], r1["beta"])
