"""metrics/adaptive.py against sklearn and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.adaptive import (
    AdaptiveSlotMetrics,
    foreground_contingency,
    hungarian_purity,
    mutual_information_scores,
    pair_counting_scores,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")
from sklearn.metrics.cluster import pair_confusion_matrix  # noqa: E402


def random_maps(seed: int, batch: int = 8, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 6, (batch, size, size), generator=g)
    pred = torch.randint(0, 5, (batch, size, size), generator=g)
    pred[0] = true[0]  # perfect
    pred[1] = (true[1] > 2).long()  # merged objects
    true[2] = (true[2] > 0).long() * 3  # one GT object, several slots
    pred[3] = 7  # one slot
    true[4, :12] = 0  # half the image background
    pred[5] = (true[5] + pred[5] // 3) % 9  # correlated
    return pred, true


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_match_sklearn(seed: int) -> None:
    pred, true = random_maps(seed)
    cont = foreground_contingency(pred, true)
    precision, recall, f1 = pair_counting_scores(cont)
    ami, nmi = mutual_information_scores(cont)
    for i in range(len(pred)):
        fg = true[i] > 0
        t, p = true[i][fg].numpy(), pred[i][fg].numpy()
        c = pair_confusion_matrix(t, p).astype(np.float64)
        ref_p, ref_r = c[1, 1] / (c[1, 1] + c[0, 1]), c[1, 1] / (c[1, 1] + c[1, 0])
        assert math.isclose(precision[i], ref_p, rel_tol=1e-12), i
        assert math.isclose(recall[i], ref_r, rel_tol=1e-12), i
        assert math.isclose(f1[i], 2 * ref_p * ref_r / (ref_p + ref_r), rel_tol=1e-12), i
        assert math.isclose(ami[i], sklearn_metrics.adjusted_mutual_info_score(t, p), abs_tol=1e-9), i
        assert math.isclose(nmi[i], sklearn_metrics.normalized_mutual_info_score(t, p), abs_tol=1e-12), i


def test_hand_computed_example_and_empty_foreground() -> None:
    # GT: object 1 = 3 pixels, object 2 = 1 pixel; prediction puts 2 of object 1 in slot 0 and
    # the rest (1 pixel of object 1 + object 2) in slot 1. Background pixels are ignored.
    true = torch.tensor([[[1, 1, 1, 2, 0, 0]], [[0, 0, 0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 1, 1, 0, 1]], [[0, 1, 0, 1, 0, 1]]])
    cont = foreground_contingency(pred, true)
    precision, recall, f1 = pair_counting_scores(cont)
    # Ordered pairs: same slot 2*1 + 2*1 = 4, same object 3*2 = 6, both 2*1 = 2.
    assert precision[0].item() == pytest.approx(2 / 4) and recall[0].item() == pytest.approx(2 / 6)
    assert f1[0].item() == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    purity = hungarian_purity(cont)
    assert purity[0].item() == pytest.approx(3 / 4)  # object 1 -> slot 0 (2 px), object 2 -> slot 1 (1 px)
    ami, nmi = mutual_information_scores(cont)
    for values in (precision, recall, f1, purity, ami, nmi):
        assert math.isnan(values[1].item())  # no foreground: skipped


def test_meter_averages_skip_empty_images_and_report_slot_counts() -> None:
    meter = AdaptiveSlotMetrics()
    true = torch.zeros(4, 8, 8, dtype=torch.long)
    true[0, :4], true[1, :2], true[1, 4:], true[2, :2], true[2, 2:4], true[2, 4:6] = 1, 1, 2, 1, 2, 3
    pred = true.clone()
    keep = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float32)
    meter.update(pred, true, None, keep, keep * 0.9)
    out = meter.compute()
    for name in ("precision", "recall", "f1", "purity", "ami", "nmi"):
        assert out[name] == pytest.approx(100.0), name  # perfect partitions; image 3 has no object
    assert out["num_slots_kept"] == pytest.approx(2.5) and out["gt_objects"] == pytest.approx(1.5)
    assert out["slot_keep_prob"] == pytest.approx(0.9 * 10 / 16)
    # kept = objects + 1 on every image: perfect correlation.
    assert out["kept_objects_pearson"] == pytest.approx(1.0)
    assert out["kept_slots_by_objects"] == {"0": 1.0, "1": 2.0, "2": 3.0, "3": 4.0}


def test_ignored_pixels_are_dropped() -> None:
    true = torch.tensor([[[1, 1, 2, 2]]])
    pred = torch.tensor([[[0, 0, 1, 0]]])
    ignore = torch.tensor([[[False, False, False, True]]])
    cont = foreground_contingency(pred, true, ignore)
    assert cont.sum() == 3
    assert hungarian_purity(cont)[0].item() == pytest.approx(1.0)
