"""DAVIS J&F against golden values computed with the official davis2017-evaluation (docs/metrics.md#jf-davis)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from metrics.jf import (
    JFResults,
    boundary_f,
    boundary_map,
    boundary_tolerance,
    db_statistics,
    evaluate_semi_supervised_sequence,
    evaluate_unsupervised_sequence,
    region_j,
    split_objects,
)


def _box(shift: int = 0, shape=(480, 854)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[100 + shift : 300 + shift, 200 + shift : 400 + shift] = True
    return m


def test_golden_values_official_evaluator():
    gt = _box()
    assert region_j(gt, _box(3)) == pytest.approx(0.942172, abs=1e-6)
    assert boundary_f(gt, _box(3)) == pytest.approx(1.0)
    assert region_j(gt, _box(10)) == pytest.approx(0.822323, abs=1e-6)
    assert boundary_f(gt, _box(10)) == pytest.approx(0.0425, abs=1e-6)
    void = np.zeros_like(gt)
    void[300:310] = True
    assert region_j(gt, _box(10), void) == pytest.approx(0.861575, abs=1e-6)
    assert boundary_tolerance(gt.shape) == 8


def test_empty_mask_cases():
    empty = np.zeros((480, 854), bool)
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_j(_box(), empty) == 0.0 and boundary_f(_box(), empty) == 0.0
    assert region_j(empty, _box()) == 0.0 and boundary_f(empty, _box()) == 0.0


def test_boundary_map_single_pixel_and_edges():
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    b = boundary_map(m)
    # The pixel differs from its right/down/down-right neighbours, and its left/upper neighbours
    # differ from it: the official map marks (2,2), (1,2), (2,1), (1,1).
    assert set(zip(*np.nonzero(b))) == {(1, 1), (1, 2), (2, 1), (2, 2)}
    full = np.ones((4, 4), bool)
    assert not boundary_map(full).any()


def test_db_statistics_golden():
    m, o, d = db_statistics(np.array([1, 0.9, 0.8, 0.4, 0.3, 0.2, 0.6, 0.7, 0.9, 1.0]))
    assert (m, o, d) == pytest.approx((0.68, 0.7, 0.0333333), abs=1e-6)
    m, o, d = db_statistics(np.array([0.9, 0.2, 0.6]))
    assert (m, o, d) == pytest.approx((0.5666667, 0.6666667, -0.05), abs=1e-6)


def _two_object_video(frames: int = 6, size: int = 40):
    gt = np.zeros((frames, size, size), np.uint8)
    gt[:, 5:15, 5:15] = 1
    gt[:, 25:35, 25:35] = 2
    return split_objects(gt, 2)


def test_identity_swap_matchers_differ():
    gt = _two_object_video()
    prop = gt.copy()
    prop[:, 3:] = gt[::-1, 3:]  # identities swap halfway
    j_seq, f_seq = evaluate_unsupervised_sequence(gt, prop, matcher="sequence")
    j_pf, f_pf = evaluate_unsupervised_sequence(gt, prop, matcher="per_frame")
    assert np.allclose(j_pf, 1) and np.allclose(f_pf, 1)
    assert j_seq.mean() == pytest.approx(0.5) and f_seq.mean() == pytest.approx(0.5)


def test_unsupervised_padding_and_limits():
    gt = _two_object_video()
    j, f = evaluate_unsupervised_sequence(gt, gt[:1])  # one proposal for two objects -> padded
    assert np.allclose(j[0], 1) and np.allclose(j[1], 0) and np.allclose(f[1], 0)
    with pytest.raises(ValueError, match="maximum of 20"):
        evaluate_unsupervised_sequence(gt, np.zeros((21, *gt.shape[1:]), bool))
    with pytest.raises(ValueError, match="unknown matcher"):
        evaluate_unsupervised_sequence(gt, gt, matcher="greedy")


def test_semi_supervised_padding_and_error():
    gt = _two_object_video()
    j, f = evaluate_semi_supervised_sequence(gt, gt[:1])
    assert np.allclose(j[0], 1) and np.allclose(j[1], 0)
    with pytest.raises(ValueError, match="object ids"):
        evaluate_semi_supervised_sequence(gt[:1], gt)


def test_results_csv(tmp_path):
    res = JFResults(protocol="semi-supervised (official)")
    res.add_sequence("a", np.array([[1.0, 1.0], [0.0, 0.0]]), np.array([[1.0, 0.5], [0.0, 0.0]]))
    g = res.global_results()
    assert g["J-Mean"] == pytest.approx(0.5) and g["F-Mean"] == pytest.approx(0.375)
    assert g["J&F-Mean"] == pytest.approx(0.4375)
    gpath, spath = res.write_csv(tmp_path)
    rows = list(csv.reader(open(gpath)))
    assert rows[0][0] == "J&F-Mean" and rows[1][0] == "0.438"
    seq = list(csv.reader(open(spath)))
    assert seq[1] == ["a_1", "1.000", "0.750"] and seq[2][0] == "a_2"
    assert (tmp_path / "protocol-val.txt").read_text().startswith("semi-supervised")
