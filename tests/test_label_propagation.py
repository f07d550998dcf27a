"""Label propagation (docs/methods/smtc.md): context bank, radius mask, top-k propagation on shifted features."""
from __future__ import annotations

import torch

from utils.label_propagation import (
    SETTINGS,
    context_frames,
    hard_labels,
    label_grid,
    one_hot_labels,
    propagate,
    radius_mask,
    resize_to_stride,
)


def test_resize_and_grid_shapes():
    assert resize_to_stride(480, 854, 16) == (480, 848)
    assert label_grid(480, 854, 16) == (30, 53)
    assert label_grid(480, 854, 8) == (60, 106)
    assert SETTINGS["stride16"].topk == 7 and SETTINGS["stride8"].radius == 35


def test_context_bank_replicates_first_frame():
    assert context_frames(1, 3) == [0, 0, 0, 0]
    assert context_frames(2, 3) == [0, 0, 0, 1]
    assert context_frames(10, 3) == [0, 7, 8, 9]
    assert len(context_frames(5, 20)) == 21


def test_radius_mask_is_strict():
    m = radius_mask(3, 4, 1.5)
    assert m.shape == (12, 12) and m[0, 0] and m[0, 5] and not m[0, 2]  # (0,2) is at distance 2
    assert not radius_mask(2, 2, 1.0)[0, 1]  # distance exactly = radius is masked


def test_labels_follow_translated_features():
    torch.manual_seed(0)
    T, C, h, w = 5, 32, 12, 12
    base = torch.randn(C, h, w)
    feats = torch.stack([torch.roll(base, shifts=(t, t), dims=(1, 2)) for t in range(T)])
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[2:6, 3:7] = 1
    labels[7:10, 1:4] = 2
    soft = propagate(feats, one_hot_labels(labels, 3, (h, w)), topk=3, radius=4, temperature=0.05, num_short=2)
    pred = hard_labels(soft, (h, w))
    for t in range(T):
        assert torch.equal(pred[t], torch.roll(labels, shifts=(t, t), dims=(0, 1))), t


def test_radius_mask_blocks_far_short_term_matches():
    # Frame 1 equals frame 0 shifted by 5 cells; a radius of 2 forbids short-term matches that far,
    # but the long-term first frame is never masked, so labels still follow the shift.
    torch.manual_seed(1)
    base = torch.randn(16, 10, 10)
    feats = torch.stack([base, torch.roll(base, 5, dims=2)])
    labels = torch.zeros(10, 10, dtype=torch.long)
    labels[:, :3] = 1
    soft = propagate(feats, one_hot_labels(labels, 2, (10, 10)), topk=1, radius=2, temperature=0.1, num_short=1)
    assert torch.equal(hard_labels(soft, (10, 10))[1], torch.roll(labels, 5, dims=1))
