"""Tests for metrics (docs/metrics.md): hand-computed edge cases plus references."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from metrics import (
    SegmentationMetrics,
    adjusted_rand_index,
    best_overlap_iou,
    corloc,
    hungarian_miou,
    iou_matrix,
    masks_to_labels,
)


def lab(*rows: list[int]) -> torch.Tensor:
    """One image [1, H, W] from its rows."""
    return torch.tensor([list(rows)], dtype=torch.long)


def ign(*rows: list[int]) -> torch.Tensor:
    return lab(*rows).bool()


def all_mask_metrics(pred, true, ignore=None):
    return {
        "mbo": best_overlap_iou(pred, true, ignore),
        "miou": hungarian_miou(pred, true, ignore),
        "corloc": corloc(pred, true, ignore),
    }


# ---------------------------------------------------------------------------- edge cases


def test_empty_gt_image():
    pred = lab([0, 0, 1, 1], [0, 1, 1, 1])
    true = torch.zeros_like(pred)
    assert adjusted_rand_index(pred, true).item() == 1.0  # no foreground pixel: denominator 0
    for name, (value, valid) in all_mask_metrics(pred, true).items():
        assert not valid.item(), name
        assert math.isnan(value.item()), name


def test_only_ignored_pixels():
    pred = lab([0, 1, 1, 2])
    true = lab([1, 1, 2, 0])
    ignore = torch.ones_like(pred, dtype=torch.bool)
    assert adjusted_rand_index(pred, true, ignore).item() == 1.0
    assert adjusted_rand_index(pred, true, ignore, foreground=False).item() == 1.0
    for name, (_, valid) in all_mask_metrics(pred, true, ignore).items():
        assert not valid.item(), name


def test_ignore_zeroes_both_pred_and_gt():
    pred = lab([0, 0, 0, 1])
    true = lab([1, 1, 2, 2])
    # Without ignore: n = {GT1: slot0 x2, GT2: slot0 x1, slot1 x1}. I = 2, A = 2+2 = 4,
    # B = 3*2 = 6, n(n-1) = 12, E = 24/12 = 2 -> ARI = (2-2)/(5-2) = 0.
    assert adjusted_rand_index(pred, true).item() == pytest.approx(0.0, abs=1e-15)
    # IoU(GT1, slot0) = 2/3; GT2: slot0 1/(2+3-1) = 1/4, slot1 1/(2+1-1) = 1/2 -> mBO = 7/12.
    assert best_overlap_iou(pred, true)[0].item() == pytest.approx(7 / 12, abs=1e-15)
    # Ignoring pixel 2 removes it from GT2 *and* from slot0: a perfect segmentation remains.
    ignore = ign([0, 0, 1, 0])
    assert adjusted_rand_index(pred, true, ignore).item() == pytest.approx(1.0, abs=1e-15)
    assert best_overlap_iou(pred, true, ignore)[0].item() == 1.0
    assert hungarian_miou(pred, true, ignore)[0].item() == 1.0


def test_ignored_background_leaves_pred_union():
    pred = lab([0, 0, 0, 1])
    true = lab([1, 1, 0, 0])
    assert best_overlap_iou(pred, true)[0].item() == pytest.approx(2 / 3, abs=1e-15)
    # The ignored pixel is GT background, but it still has to leave slot 0's area.
    ignore = ign([0, 0, 1, 0])
    assert best_overlap_iou(pred, true, ignore)[0].item() == 1.0


def test_ignore_can_empty_a_gt_object():
    pred = lab([0, 0, 1, 1])
    true = lab([1, 1, 2, 2])
    ignore = ign([0, 0, 1, 1])  # GT 2 vanishes: only GT 1 is averaged
    value, valid = best_overlap_iou(pred, true, ignore)
    assert valid.item() and value.item() == 1.0
    iou, present = iou_matrix(pred, true, ignore)
    assert present.tolist() == [[True, False]]


def test_single_object_one_slot_vs_split():
    true = lab([0, 1, 1, 0])
    # Object entirely in one slot: A = B = n(n-1) = 2, denominator 0 -> 1.0 (OCLF convention).
    assert adjusted_rand_index(lab([1, 0, 0, 1]), true).item() == 1.0
    # Split over two slots: I = 0, A = 2, B = 0, E = 0 -> ARI = 0 / 1 = 0.
    assert adjusted_rand_index(lab([0, 0, 1, 1]), true).item() == 0.0


def test_large_single_object_is_exactly_one():
    # sum_a * sum_b is ~1e20 > 2**53 here: the degenerate case must still give exactly 1.0.
    true = torch.ones(1, 320, 320, dtype=torch.long)
    pred = torch.full_like(true, 3)
    assert adjusted_rand_index(pred, true).item() == 1.0
    pred[0, 0, 0] = 0  # one stray pixel: GT has one cluster, prediction two -> ARI 0
    assert adjusted_rand_index(pred, true).item() == 0.0


def test_perfect_segmentation_all_100():
    true = torch.tensor([[[0, 1, 1], [2, 2, 3]], [[0, 0, 1], [1, 0, 1]]])
    perm = torch.tensor([4, 0, 2, 1])  # slot ids are arbitrary: GT id g -> slot perm[g]
    pred = perm[true]
    metrics = SegmentationMetrics()
    metrics.update(pred, true, mask_class=torch.tensor([0, 3, 1, 2])[true])  # distinct classes
    assert metrics.compute() == {n: 100.0 for n in metrics.names}
    assert metrics.counts == {n: 2 for n in metrics.names}


def test_background_in_slot_reduces_mbo():
    true = lab([1, 1, 0, 0], [1, 1, 0, 0])
    pred = lab([0, 0, 0, 1], [0, 0, 1, 1])
    # Slot 0 = 4 object pixels + 1 background pixel: IoU = 4 / 5.
    for name, (value, valid) in all_mask_metrics(pred, true).items():
        assert valid.item()
        assert value.item() == pytest.approx(1.0 if name == "corloc" else 0.8, abs=1e-15)
    # FG-ARI ignores the background pixel entirely: the object is in one slot.
    assert adjusted_rand_index(pred, true).item() == 1.0


def test_best_overlap_reuse_vs_hungarian_and_strict_corloc():
    true = lab([1, 1, 2, 2, 0, 0])
    pred = lab([0, 0, 0, 0, 1, 1])
    # Slot 0 covers both objects: IoU(GT1, slot0) = IoU(GT2, slot0) = 2/4, slot 1 gives 0.
    assert best_overlap_iou(pred, true)[0].item() == 0.5  # slot 0 reused: (0.5 + 0.5) / 2
    assert hungarian_miou(pred, true)[0].item() == 0.25  # one-to-one: (0.5 + 0) / 2
    assert corloc(pred, true)[0].item() == 0.0  # IoU exactly 0.5 is not > 0.5
    # Shrink GT 2 to background so that IoU(GT1, slot0) = 2/3 > 0.5.
    true2 = lab([1, 1, 0, 0, 0, 0])
    pred2 = lab([0, 0, 0, 1, 1, 1])
    assert best_overlap_iou(pred2, true2)[0].item() == pytest.approx(2 / 3, abs=1e-15)
    assert corloc(pred2, true2)[0].item() == 1.0


def test_hungarian_more_objects_than_slots():
    true = lab([1, 2, 3, 3])
    pred = lab([0, 0, 1, 1])
    # IoU: GT1/slot0 = 1/2, GT2/slot0 = 1/2, GT3/slot1 = 1. Two slots for three objects:
    # best matching = 1 + 1/2, the unmatched object adds 0 -> 1.5 / 3.
    assert hungarian_miou(pred, true)[0].item() == 0.5
    # Extra (empty) slots can be matched but only at IoU 0: same value.
    assert hungarian_miou(pred, true, num_slots=5)[0].item() == 0.5
    assert best_overlap_iou(pred, true)[0].item() == pytest.approx(2 / 3, abs=1e-15)
    with pytest.raises(ValueError):
        hungarian_miou(pred, true, num_slots=1)


def test_empty_pred_slot_iou_zero():
    iou, present = iou_matrix(lab([0, 0, 2, 2]), lab([1, 1, 2, 2]))
    assert iou.dtype == torch.float64
    assert iou.tolist() == [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    assert present.tolist() == [[True, True]]


def test_batch_without_any_gt_object():
    pred = torch.zeros(3, 4, 4, dtype=torch.long)
    true = torch.zeros_like(pred)
    for name, (value, valid) in all_mask_metrics(pred, true).items():
        assert valid.tolist() == [False] * 3, name
        assert value.shape == (3,) and torch.isnan(value).all(), name


def test_input_validation():
    with pytest.raises(ValueError):
        adjusted_rand_index(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        best_overlap_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        best_overlap_iou(-torch.ones(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))


# ---------------------------------------------------------------------------- references


@pytest.mark.parametrize("seed", range(5))
def test_ari_matches_sklearn(seed: int):
    g = torch.Generator().manual_seed(seed)
    b, h, w = 4, 12, 16
    pred = torch.randint(0, 6, (b, h, w), generator=g)
    # Blocky GT so that ARI values are spread, not all ~0.
    true = torch.randint(0, 5, (b, h // 4, w // 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    pred = torch.where(torch.rand(b, h, w, generator=g) < 0.5, true, pred)
    ignore = torch.rand(b, h, w, generator=g) < 0.2

    for use_ignore in (False, True):
        ig = ignore if use_ignore else None
        keep_all = ~ignore if use_ignore else torch.ones_like(ignore)
        ari = adjusted_rand_index(pred, true, ig, foreground=False)
        fg = adjusted_rand_index(pred, true, ig, foreground=True)
        assert ari.dtype == torch.float64 and ari.shape == (b,)
        for i in range(b):
            keep = keep_all[i]
            ref = adjusted_rand_score(true[i][keep].numpy(), pred[i][keep].numpy())
            assert ari[i].item() == pytest.approx(ref, abs=1e-10)
            keep_fg = keep & (true[i] > 0)
            assert int(keep_fg.sum()) > 10 and len(set(true[i][keep_fg].tolist())) > 1
            ref_fg = adjusted_rand_score(true[i][keep_fg].numpy(), pred[i][keep_fg].numpy())
            assert fg[i].item() == pytest.approx(ref_fg, abs=1e-10)


def test_ari_tiny_maps_including_degenerate_match_sklearn():
    # Every GT labelling of 4 pixels with ids 0..2 against every partition of the 4 pixels
    # (ARI does not depend on slot names, so canonical first-occurrence labels suffice).
    # This includes n < 2, single-cluster and all-singleton cases.
    preds = [p for p in itertools.product(range(4), repeat=4) if list(p) == _canonical(p)]
    trues = list(itertools.product(range(3), repeat=4))
    pairs = [(t, p) for t in trues for p in preds]
    true = torch.tensor([t for t, _ in pairs]).view(-1, 1, 4)
    pred = torch.tensor([p for _, p in pairs]).view(-1, 1, 4)
    ari = adjusted_rand_index(pred, true, foreground=False).tolist()
    fg = adjusted_rand_index(pred, true).tolist()
    for i, (t, p) in enumerate(pairs):
        assert ari[i] == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
        keep = [j for j in range(4) if t[j] > 0]
        # sklearn also scores an empty labelling 1.0, matching OCLF's zero denominator.
        ref = adjusted_rand_score([t[j] for j in keep], [p[j] for j in keep])
        assert fg[i] == pytest.approx(ref, abs=1e-12)


def _canonical(labels) -> list[int]:
    """Relabel by first occurrence: (2, 2, 0, 1) -> [0, 0, 1, 2]."""
    ids: dict[int, int] = {}
    return [ids.setdefault(x, len(ids)) for x in labels]


def _naive_iou(pred: np.ndarray, true: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """Per-object loop reference: rows = GT ids present (>0), columns = slots 0..max."""
    keep = ~ignore
    gts = [g for g in np.unique(true[keep]) if g > 0]
    slots = range(int(pred.max()) + 1)
    out = np.zeros((len(gts), len(slots)))
    for r, gid in enumerate(gts):
        gm = (true == gid) & keep
        for c in slots:
            pm = (pred == c) & keep
            union = (gm | pm).sum()
            out[r, c] = (gm & pm).sum() / union if union else 0.0
    return out


@pytest.mark.parametrize("seed", range(3))
def test_mask_metrics_match_naive_reference(seed: int):
    rng = np.random.default_rng(seed)
    b, h, w = 5, 10, 10
    true = rng.integers(0, 6, (b, h, w))
    pred = rng.integers(0, 4, (b, h, w))
    pred = np.where(rng.random((b, h, w)) < 0.5, true % 4, pred)
    ignore = rng.random((b, h, w)) < 0.15
    true[0] = 0  # one image with no GT object
    tt, pt, it = map(torch.from_numpy, (true, pred, ignore))
    mbo, valid = best_overlap_iou(pt, tt, it)
    miou, _ = hungarian_miou(pt, tt, it)
    cl, _ = corloc(pt, tt, it)
    assert valid.tolist() == [False] + [True] * (b - 1)
    for i in range(1, b):
        iou = _naive_iou(pred[i], true[i], ignore[i])
        assert mbo[i].item() == pytest.approx(iou.max(1).mean(), abs=1e-12)
        assert cl[i].item() == float((iou.max(1) > 0.5).any())
        # Brute-force matching over all injective slot -> object assignments.
        n_gt, n_slot = iou.shape
        best = 0.0
        for perm in itertools.permutations(range(max(n_gt, n_slot)), n_slot):
            best = max(best, sum(iou[p, s] for s, p in enumerate(perm) if p < n_gt))
        assert miou[i].item() == pytest.approx(best / n_gt, abs=1e-12)


# ---------------------------------------------------------------------------- masks_to_labels


def test_masks_to_labels_upsamples_before_argmax():
    # Slot 2 never wins at low resolution but wins between the two pixels after bilinear
    # upsampling (1x2 -> 1x6 samples x = 0, 0, 1/3, 2/3, 1, 1).
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]).view(1, 3, 1, 2)
    labels = masks_to_labels(masks, (1, 6))
    assert labels.dtype == torch.long
    assert labels.tolist() == [[[0, 0, 2, 2, 1, 1]]]
    nearest = torch.nn.functional.interpolate(
        masks.argmax(1, keepdim=True).float(), size=(1, 6), mode="nearest"
    ).long()[:, 0]
    assert nearest.tolist() == [[[0, 0, 0, 1, 1, 1]]]


def test_masks_to_labels_shapes():
    masks = torch.rand(3, 7, 14, 14)
    assert masks_to_labels(masks, 32).shape == (3, 32, 32)
    assert masks_to_labels(masks, (20, 24)).shape == (3, 20, 24)
    assert masks_to_labels(masks, 14).equal(masks.argmax(1))  # same size: plain argmax
    with pytest.raises(ValueError):
        masks_to_labels(torch.rand(7, 14, 14), 32)


# ---------------------------------------------------------------------------- aggregation


def _random_batch(seed: int, b: int = 6):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 4, (b, 3, 3), generator=g).repeat_interleave(3, 1).repeat_interleave(3, 2)
    true[1] = 0  # no GT object: FG-ARI 1, skipped by mBO/mIoU/CorLoc
    pred = torch.where(torch.rand(b, 9, 9, generator=g) < 0.6, true, torch.randint(0, 5, (b, 9, 9), generator=g))
    cls = (true + 1) // 2
    ignore = torch.rand(b, 9, 9, generator=g) < 0.1
    return pred, true, cls, ignore


def test_state_tensor_aggregation_equals_single_batch():
    pred, true, cls, ignore = _random_batch(0)
    whole = SegmentationMetrics()
    whole.update(pred, true, cls, ignore)
    halves = [SegmentationMetrics(), SegmentationMetrics()]
    halves[0].update(pred[:2], true[:2], cls[:2], ignore[:2])  # contains the empty image
    halves[1].update(pred[2:], true[2:], cls[2:], ignore[2:])
    state = halves[0].state_tensor() + halves[1].state_tensor()  # what all_reduce(SUM) does
    assert state.dtype == torch.float64 and state.shape == (6, 2)
    merged = SegmentationMetrics()
    merged.load_state_tensor(state)
    assert merged.counts == whole.counts
    assert merged.counts["fg_ari"] == 6 and merged.counts["mbo_i"] == 5
    for name, value in whole.compute().items():
        assert merged.compute()[name] == pytest.approx(value, abs=1e-12)
    # A mean of the two halves' means would weight images unequally.
    mean_of_means = (halves[0].compute()["mbo_i"] + halves[1].compute()["mbo_i"]) / 2
    assert mean_of_means != pytest.approx(whole.compute()["mbo_i"], abs=1e-9)


def test_compute_is_100_times_mean_over_counted_images():
    pred, true, cls, ignore = _random_batch(1)
    m = SegmentationMetrics()
    m.update(pred, true, cls, ignore)
    out = m.compute()
    mbo, valid = best_overlap_iou(pred, true, ignore)
    assert out["mbo_i"] == pytest.approx(100 * mbo[valid].mean().item(), abs=1e-10)
    assert out["mbo_c"] == pytest.approx(100 * best_overlap_iou(pred, cls, ignore)[0].nanmean().item(), abs=1e-10)
    assert out["miou"] == pytest.approx(100 * hungarian_miou(pred, true, ignore)[0].nanmean().item(), abs=1e-10)
    assert out["corloc"] == pytest.approx(100 * corloc(pred, true, ignore)[0].nanmean().item(), abs=1e-10)
    assert out["fg_ari"] == pytest.approx(100 * adjusted_rand_index(pred, true, ignore).mean().item(), abs=1e-10)
    assert out["ari"] == pytest.approx(
        100 * adjusted_rand_index(pred, true, ignore, foreground=False).mean().item(), abs=1e-10
    )
    m.reset()
    assert all(math.isnan(v) for v in m.compute().values())
    assert m.counts == {n: 0 for n in m.names}


def test_mbo_c_skipped_without_class_mask_and_names():
    pred, true, _, _ = _random_batch(2)
    m = SegmentationMetrics(("mbo_c", "fg_ari"))
    m.update(pred, true)
    assert m.counts == {"mbo_c": 0, "fg_ari": 6}
    assert math.isnan(m.compute()["mbo_c"])
    with pytest.raises(ValueError):
        SegmentationMetrics(("fg_ari", "bogus"))
    with pytest.raises(ValueError):
        m.load_state_tensor(torch.zeros(3, 2))
