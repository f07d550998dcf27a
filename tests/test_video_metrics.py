"""Hand-computed values of the video-benchmark metrics (PCK, confusion-matrix mIoU, merged
foreground J) and the keypoint <-> map round trip used by JHMDB propagation."""
from __future__ import annotations

import math

import pytest
import torch

from metrics.confusion import confusion_matrix, segmentation_scores
from metrics.foreground import binary_iou, merge_proposals
from metrics.pck import normalised_distances, pck, pck_normaliser
from utils.label_propagation import grid_to_pixels, keypoints_to_maps, maps_to_keypoints, pixels_to_grid

NAN = float("nan")


def test_pck_normaliser_is_0_6_of_the_gt_box_diagonal():
    gt = torch.tensor([[0.0, 0.0], [3.0, 1.0], [1.0, 4.0]])  # box 3 x 4 -> diagonal 5
    assert float(pck_normaliser(gt)) == pytest.approx(3.0)


def test_pck_by_hand_per_joint_mean_and_vanished_joints_count_as_wrong():
    # Frame A: normaliser 0.6 * 5 = 3; distances 0.15 / 3 = 0.05 and 0.45 / 3 = 0.15.
    # Frame B: normaliser 0.6 * 10 = 6; joint 0 vanished (NaN), joint 1 exact.
    gt = torch.tensor([[[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [6.0, 8.0]]], dtype=torch.float64)
    pred = torch.tensor([[[0.15, 0.0], [3.0, 4.45]], [[NAN, NAN], [6.0, 8.0]]], dtype=torch.float64)
    d = normalised_distances(pred, gt)
    assert d[0].tolist() == pytest.approx([0.05, 0.15])
    assert math.isinf(d[1, 0]) and d[1, 1] == 0
    scores = pck(d, (0.1, 0.2))
    # @0.1: joint 0 -> 1/2, joint 1 -> 1/2; @0.2: joint 0 -> 1/2, joint 1 -> 2/2. Mean over joints.
    assert scores == pytest.approx({0.1: 0.5, 0.2: 0.75})
    # CRW drops the vanished joint instead (joint 0 would score 1/1 at 0.1): ours must not.
    assert scores[0.1] != pytest.approx(0.75)


def test_pck_is_a_mean_over_joint_types_not_over_points():
    # Joint 0 seen in 3 frames (all right), joint 1 in 3 frames (1 right): per-joint mean (1 + 1/3) / 2.
    d = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert pck(d, (0.1,))[0.1] == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError):
        pck(torch.zeros(0, 15))


def test_confusion_matrix_miou_by_hand_ignores_out_of_range_gt_and_absent_classes():
    gt = torch.tensor([[0, 0, 255], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 3], [1, 1, 0]])
    conf = confusion_matrix(gt, pred, num_classes=4)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 1] = 1  # the 255 pixels are ignored
    assert torch.equal(conf, expected)
    s = segmentation_scores(conf)
    # IoU: class 0: 1 / (2 + 1 - 1) = 1/2; class 1: 1 / (1 + 3 - 1) = 1/3; class 2: 0 / 1; class 3 absent -> NaN.
    assert s["per_class_iou"][:3] == pytest.approx([0.5, 1 / 3, 0.0]) and math.isnan(s["per_class_iou"][3])
    assert s["mIoU"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(0.5)
    assert s["fwIoU"] == pytest.approx(0.5 * 0.5 + 0.25 * (1 / 3) + 0.25 * 0.0)


def test_one_confusion_matrix_over_frames_differs_from_averaging_frames():
    # Frame 1 is all class 1 predicted right; frame 2 has class 1 in 1 of 4 pixels predicted as 0.
    gt = torch.tensor([[[1, 1], [1, 1]], [[0, 0], [0, 1]]])
    pred = torch.tensor([[[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    pooled = segmentation_scores(confusion_matrix(gt, pred, 2))["mIoU"]
    # Pooled: class 0 IoU 3/4, class 1 IoU 4/5 -> 0.775. Per-frame mean would be (1 + (3/4 + 0)/2) / 2.
    assert pooled == pytest.approx((3 / 4 + 4 / 5) / 2)
    with pytest.raises(ValueError, match="predicted class ids"):
        confusion_matrix(gt, pred + 5, 2)


def test_merged_foreground_covers_all_objects_and_skips_background_proposals():
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[:, :2] = True  # two objects (top-left, bottom-left) merged into the left half
    props = torch.full((3, 2, 2), 0.1)
    props[0, 0, 0] = 0.9  # top-left quadrant
    props[1, 1, 0] = 0.7  # bottom-left quadrant
    props[2, :, 1] = 0.8  # right half: background
    pred = merge_proposals(props, gt)
    assert torch.equal(pred, gt) and float(binary_iou(pred, gt)) == 1.0
    # The single best proposal would only reach J = 1/2.
    assert float(binary_iou(merge_proposals(props[:1], gt), gt)) == pytest.approx(0.5)
    assert not merge_proposals(props[2:], gt).any()  # nothing overlaps the object -> empty prediction
    assert not merge_proposals(torch.zeros(0, 2, 2), gt).any()
    empty = torch.zeros(4, 4, dtype=torch.bool)
    assert float(binary_iou(empty, empty)) == 1.0  # DAVIS convention for an empty frame


def test_keypoint_maps_round_trip_within_a_fraction_of_a_cell():
    torch.manual_seed(0)
    grid = (10, 12)
    points = torch.rand(15, 2) * torch.tensor([11.0, 9.0])  # inside the grid (x < 12, y < 10)
    maps = keypoints_to_maps(points, grid, sigma=0.5)
    assert maps.shape == (16, 10, 12)
    assert maps[1:].amax(dim=(1, 2)).min() > 0.3  # every joint drawn
    assert torch.equal(maps[0], (maps[1:].sum(0) == 0).float())  # background where no joint is
    back = maps_to_keypoints(maps[1:])
    assert (back - points).abs().max() < 0.5
    # Integer positions come back exactly (the Gaussian is symmetric about the true peak).
    exact = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(maps_to_keypoints(keypoints_to_maps(exact, grid)[1:])[0], exact[0], atol=0.2)


def test_keypoint_maps_vanished_channel_decodes_to_nan_and_sigma_zero_is_one_hot():
    maps = keypoints_to_maps(torch.tensor([[2.2, 1.0], [40.0, 40.0]]), (5, 5), sigma=0.0)
    assert maps[1].sum() == 1 and maps[1, 1, 2] == 1 and maps[2].sum() == 0
    out = maps_to_keypoints(maps[1:])
    assert out[0].tolist() == [2.0, 1.0] and torch.isnan(out[1]).all()


def test_pixels_to_grid_is_cell_centred_and_invertible():
    pts = torch.tensor([[0.0, 0.0], [319.0, 239.0], [157.3, 12.8]])
    g = pixels_to_grid(pts, (240, 320), (20, 20))
    assert g[0].tolist() == pytest.approx([0.5 * 20 / 320 - 0.5, 0.5 * 20 / 240 - 0.5])
    assert torch.allclose(grid_to_pixels(g, (240, 320), (20, 20)), pts, atol=1e-4)


def test_merge_sums_the_raw_values_of_the_kept_proposals():
    gt = torch.zeros(1, 4, dtype=torch.bool)
    gt[0, :3] = True
    # Both proposals are kept (each normalised map covers foreground pixels only). Raw sum:
    # [1.0, 0.55, 0.5, 0.0] -> min-max [1, 0.55, 0.5, 0] -> > 0.5 keeps the first two pixels.
    # Summing the normalised maps instead ([1, 1, 1, 0] -> all three) would give J = 1.
    props = torch.tensor([[[1.0, 0.5, 0.0, 0.0]], [[0.0, 0.05, 0.5, 0.0]]])
    pred = merge_proposals(props, gt)
    assert pred.tolist() == [[True, True, False, False]]
    assert float(binary_iou(pred, gt)) == pytest.approx(2 / 3)
