"""SegTrack-v2, FBMS-59, JHMDB and VIP: loaders on fixtures written in the real on-disk formats
(their pitfalls as edge cases) and one end-to-end eval_smtc.py run per dataset."""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import eval_smtc
import train_smtc
from ground.errors import UserError
from datasets.fbms import FbmsSequences
from datasets.jhmdb import JhmdbVideos
from datasets.segtrackv2 import SegTrackV2Sequences
from datasets.vip import VipVideos
from tests.fixtures_video import (
    moving_box_masks,
    write_fbms_fixture,
    write_jhmdb_fixture,
    write_segtrack_fixture,
    write_vip_fixture,
)
from tests.test_eval_smtc import TINY
from utils import video_eval

SIZE = (32, 40)


def segtrack(root: Path, frame_ext: str = ".png") -> Path:
    """'drift': 2 objects (per-object sub-folders); 'frog': 1 object."""
    write_segtrack_fixture(root, {
        "drift": [moving_box_masks(3, SIZE, (2, 2, 8, 8)), moving_box_masks(3, SIZE, (18, 20, 10, 10))],
        "frog": [moving_box_masks(3, SIZE, (8, 8, 12, 12))],
    }, frame_ext)
    return root


def fbms(root: Path) -> Path:
    write_fbms_fixture(root, {"cars1": (moving_box_masks(5, SIZE, (6, 4, 12, 14)), [1, 4])})
    return root


def joints(num_frames: int, seed: int = 0) -> np.ndarray:
    """0-based joints [T, 15, 2] drifting right by one pixel a frame inside a 24 x 32 frame."""
    rng = np.random.default_rng(seed)
    base = rng.uniform([4, 4], [24, 18], size=(15, 2))
    return np.stack([base + [t, 0] for t in range(num_frames)])


def vip_labels(num_frames: int) -> np.ndarray:
    lab = np.zeros((num_frames, *SIZE), np.uint8)
    for t in range(num_frames):
        lab[t, 4:14, 6 + t : 20 + t] = 2  # hair
        lab[t, 14:28, 6 + t : 20 + t] = 4  # upper-clothes
        lab[t, 0, 0] = 255  # an id outside the 20 classes: ignored
    return lab


# --- loaders -----------------------------------------------------------------------------------------

def test_segtrack_merges_object_folders_and_reads_png_or_bmp(tmp_path: Path):
    for ext in (".png", ".bmp"):
        seqs = SegTrackV2Sequences(segtrack(tmp_path / ext[1:], ext))
        assert seqs.sequences == ["drift", "frog"]
        names = seqs.frame_names("drift")
        assert names == ["drift_00000", "drift_00001", "drift_00002"] and seqs.annotated_names("drift") == names
        fg = seqs.load_foreground("drift", names[1])
        expected = moving_box_masks(3, SIZE, (2, 2, 8, 8))[1] | moving_box_masks(3, SIZE, (18, 20, 10, 10))[1]
        assert np.array_equal(fg, expected)  # union of both objects
        assert seqs.load_frames("frog").shape == (3, 3, *SIZE)


def test_segtrack_pairs_renamed_masks_by_order_and_refuses_unmatched_ones(tmp_path: Path, caplog):
    root = segtrack(tmp_path / "st")
    gt = root / "GroundTruth" / "frog"
    for i, p in enumerate(sorted(gt.glob("*.png"))):
        p.rename(gt / f"gt{i}.png")  # names differ from the frames, one mask per frame
    with caplog.at_level(logging.WARNING):
        seqs = SegTrackV2Sequences(root)
    assert "sorted order" in caplog.text
    assert np.array_equal(seqs.load_foreground("frog", "frog_00002"), moving_box_masks(3, SIZE, (8, 8, 12, 12))[2])
    (gt / "gt2.png").unlink()
    with pytest.raises(UserError, match="has no frame named 'gt0'"):
        SegTrackV2Sequences(root)


def test_segtrack_layout_errors(tmp_path: Path):
    with pytest.raises(UserError, match="not found; check --data_path"):
        SegTrackV2Sequences(tmp_path / "absent")
    root = segtrack(tmp_path / "st")
    with pytest.raises(UserError, match="use --split all"):
        SegTrackV2Sequences(root, "val")
    (root / "GroundTruth").rename(root / "masks")
    with pytest.raises(UserError, match=r"has no GroundTruth/ \(or Annotations/\)"):
        SegTrackV2Sequences(root)


def test_fbms_scores_only_annotated_frames_and_needs_all_test_sequences(tmp_path: Path):
    root = fbms(tmp_path / "FBMS_clean")
    seqs = FbmsSequences(root, "all")
    assert seqs.frame_names("cars1") == ["00001", "00002", "00003", "00004", "00005"]
    assert seqs.annotated_names("cars1") == ["00001", "00004"]  # sparse GT, paired by frame number
    assert np.array_equal(seqs.load_foreground("cars1", "00004"), moving_box_masks(5, SIZE, (6, 4, 12, 14))[3])
    with pytest.raises(UserError, match="29 FBMS-59 test sequences lack"):
        FbmsSequences(root, "test")
    (root / "Annotations" / "cars1" / "00004.png").rename(root / "Annotations" / "cars1" / "00009.png")
    with pytest.raises(UserError, match="has no frame named '00009'"):
        FbmsSequences(root, "all")


def test_jhmdb_official_split_list_file_either_order_and_joint_offsets(tmp_path: Path):
    root = tmp_path / "JHMDB"
    vids = {"clap/a_clip": joints(3), "clap/b_clip": joints(3, 1), "run/c_clip": joints(2, 2)}
    write_jhmdb_fixture(root, vids, test={"clap/a_clip", "run/c_clip"})
    data = JhmdbVideos(root)
    assert data.sequences == ["clap/a_clip", "run/c_clip"]  # label 2 = test; b_clip is training
    assert np.allclose(data.load_joints("clap/a_clip"), vids["clap/a_clip"])  # pos_img is 1-based
    assert data.frame_names("clap/a_clip") == ["00001", "00002", "00003"]
    # CRW (frames, mat) and UVC (mat, frames) column orders, with another machine's prefixes.
    lst = tmp_path / "testlist_split1.txt"
    lst.write_text("/x/JHMDB/joint_positions/run/c_clip/joint_positions.mat /x/JHMDB/Rename_Images/run/c_clip\n"
                   "/y/Rename_Images/clap/b_clip/ /y/joint_positions/clap/b_clip/joint_positions.mat\n")
    assert JhmdbVideos(root, str(lst)).sequences == ["run/c_clip", "clap/b_clip"]


def test_jhmdb_layout_errors(tmp_path: Path):
    root = tmp_path / "JHMDB"
    write_jhmdb_fixture(root, {"clap/a_clip": joints(2)})
    with pytest.raises(UserError, match="neither one of"):
        JhmdbVideos(root, "split9")
    (root / "joint_positions" / "clap" / "a_clip" / "joint_positions.mat").write_bytes(b"not a mat file")
    with pytest.raises(UserError, match="cannot read .* as a MATLAB file"):
        JhmdbVideos(root).load_joints("clap/a_clip")
    import scipy.io
    mat = root / "joint_positions" / "clap" / "a_clip" / "joint_positions.mat"
    scipy.io.savemat(mat, {"pos": np.zeros((2, 15, 2))})
    with pytest.raises(UserError, match="no 'pos_img' array"):
        JhmdbVideos(root).load_joints("clap/a_clip")
    (root / "splits" / "clap_test_split1.txt").unlink()
    with pytest.raises(UserError, match="no split files"):
        JhmdbVideos(root)
    (root / "joint_positions").rename(root / "joints")
    with pytest.raises(UserError, match="has no joint_positions/"):
        JhmdbVideos(root)


def test_vip_reads_list_names_class_ids_and_unannotated_frames(tmp_path: Path):
    root = tmp_path / "VIP_Fine"
    write_vip_fixture(root, {"videos1": vip_labels(3)}, unannotated={"videos1": [1]})
    data = VipVideos(root)
    assert data.sequences == ["videos1"]  # last component of the author's path
    assert data.frame_names("videos1") == ["000000", "000005", "000010"]
    assert data.annotated_names("videos1") == ["000000", "000010"]
    assert np.array_equal(data.load_parts("videos1", "000010"), vip_labels(3)[2])


def test_vip_layout_errors(tmp_path: Path):
    root = tmp_path / "VIP_Fine"
    write_vip_fixture(root, {"videos1": vip_labels(2)}, unannotated={"videos1": [0]})
    with pytest.raises(UserError, match="first frame 000000 of videos1 has no"):
        VipVideos(root)
    with pytest.raises(UserError, match="lists/test_videos.txt not found"):
        VipVideos(root, "test")
    from PIL import Image
    Image.new("RGB", SIZE[::-1]).save(root / "Annotations" / "Category_ids" / "videos1" / "000000.png")
    with pytest.raises(UserError, match="RGB image; class-id maps must be single-channel"):
        VipVideos(root).load_parts("videos1", "000000")


# --- scoring on hand-made predictions ---------------------------------------------------------------

def test_score_keypoints_skips_frame_0_and_uses_poses_present(tmp_path: Path, caplog):
    root = tmp_path / "JHMDB"
    gt = joints(3)
    write_jhmdb_fixture(root, {"clap/a_clip": gt})
    data = JhmdbVideos(root)
    pred = gt.copy()
    pred[0] += 100  # frame 0 is never scored
    pred[2, :5] += 50  # 5 of 15 joints wrong in frame 2
    (tmp_path / "p" / "clap").mkdir(parents=True)
    np.save(tmp_path / "p" / "clap" / "a_clip.npy", np.concatenate([pred, pred[-1:]]))  # one frame too many
    summary, rows = video_eval.score_keypoints(data, tmp_path / "p")
    assert summary["PCK@0.1"] == pytest.approx((10 * 1.0 + 5 * 0.5) / 15)
    assert rows[0][0] == "clap/a_clip"


def test_score_parts_excludes_the_first_frame_and_pools_one_matrix(tmp_path: Path):
    root = tmp_path / "VIP_Fine"
    labels = vip_labels(3)
    write_vip_fixture(root, {"videos1": labels})
    data = VipVideos(root)
    from datasets.davis import save_indexed_png
    pred = labels.copy()
    pred[pred == 255] = 0
    pred[0] = 7  # frame 0 is wrong everywhere but not scored
    pred[2][labels[2] == 4] = 2  # frame 2: upper-clothes predicted as hair
    for name, lab in zip(data.frame_names("videos1"), pred):
        save_indexed_png(tmp_path / "p" / "videos1" / f"{name}.png", lab)
    summary, _ = video_eval.score_parts(data, tmp_path / "p")
    n_hair, n_cloth = (labels[1] == 2).sum(), (labels[1] == 4).sum()
    n_bg = (labels[1] == 0).sum()
    iou = [1.0, (2 * n_hair) / (2 * n_hair + n_cloth), n_cloth / (2 * n_cloth)]  # background, hair, clothes
    assert summary["mIoU"] == pytest.approx(np.mean(iou))
    correct = 2 * n_bg + 2 * n_hair + n_cloth
    assert summary["pixel_accuracy"] == pytest.approx(correct / (2 * n_bg + 2 * n_hair + 2 * n_cloth))


# --- end to end through eval_smtc.py ---------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    train_smtc.main([*TINY, "--output_path", str(out)])
    (run,) = out.iterdir()
    return run


def _rows(path: Path) -> dict[str, str]:
    return {r[0]: r[1] for r in list(csv.reader(open(path)))[1:]}


@pytest.mark.parametrize("dataset", ["segtrackv2", "fbms"])
def test_cli_discovery_scores_merged_foreground_j(run_dir: Path, tmp_path: Path, dataset: str):
    root = segtrack(tmp_path / "data") if dataset == "segtrackv2" else fbms(tmp_path / "data")
    split = ["--split", "all"] if dataset == "fbms" else []
    res = eval_smtc.main(["--dataset", dataset, "--task", "discovery", "--data_path", str(root), *split,
                          "--checkpoint_path", str(run_dir), "--output_dir", str(tmp_path / "eval"),
                          "--discovery_size", *map(str, SIZE)])
    folder = tmp_path / "eval" / "discovery"
    assert 0.0 <= res["J-Mean (frames)"] <= 1.0 and 0.0 <= res["J-Mean (sequences)"] <= 1.0
    assert res["frames"] == (6 if dataset == "segtrackv2" else 2)  # annotated frames only
    split_name = "all"
    summary = _rows(folder / f"results-{split_name}.csv")
    assert float(summary["J-Mean (frames)"]) == pytest.approx(res["J-Mean (frames)"], abs=1e-4)
    assert "merged into one foreground" in (folder / f"protocol-{split_name}.txt").read_text()
    assert not any(p.suffix in (".npy", ".pt") for p in root.rglob("*"))  # nothing written into the dataset


def test_cli_jhmdb_keypoint_propagation(run_dir: Path, tmp_path: Path, caplog):
    root = tmp_path / "JHMDB"
    write_jhmdb_fixture(root, {"clap/a_clip": joints(4)}, extra_frames={"clap/a_clip": 1})
    with caplog.at_level(logging.WARNING):
        res = eval_smtc.main(["--dataset", "jhmdb", "--task", "propagation", "--data_path", str(root),
                              "--checkpoint_path", str(run_dir), "--output_dir", str(tmp_path / "eval"),
                              "--setting", "stride8", "--prop_size", "32"])
    assert "5 frames but 4 poses" in caplog.text  # a broken clip's trailing frame is dropped
    pred = np.load(tmp_path / "eval" / "propagation_stride8" / "results" / "clap" / "a_clip.npy")
    assert pred.shape == (4, 15, 2)
    assert np.allclose(pred[0], joints(4)[0], atol=2.0)  # frame 0 decodes back to its joints (within a cell)
    assert 0.0 <= res["PCK@0.1"] <= res["PCK@0.2"] <= 1.0
    assert "at 32x32" in res["protocol"]  # --prop_size honoured
    assert (tmp_path / "eval" / "propagation_stride8" / "results-split1.csv").is_file()


def test_cli_vip_part_propagation_with_a_plain_encoder(tmp_path: Path):
    root = tmp_path / "VIP_Fine"
    write_vip_fixture(root, {"videos1": vip_labels(3)})
    res = eval_smtc.main(["--dataset", "vip", "--task", "propagation", "--data_path", str(root), "--which_encoder",
                          "vit_micro_p8", "--no_pretrained", "--output_dir", str(tmp_path / "eval"),
                          "--setting", "stride8", "--prop_size", "48"])
    folder = tmp_path / "eval" / "propagation_stride8"
    from datasets.davis import read_indexed_png
    out = read_indexed_png(folder / "results" / "videos1" / "000005.png")
    assert out.shape == SIZE and set(np.unique(out)) <= {0, 2, 4}  # frame-0 label set, original size
    assert "at 48x48" in res["protocol"] and 0.0 <= res["mIoU"] <= 1.0
    assert float(_rows(folder / "results-val.csv")["mIoU"]) == pytest.approx(res["mIoU"], abs=1e-4)
    assert not any(p.suffix == ".npy" for p in root.rglob("*"))


def test_cli_flag_and_task_errors(tmp_path: Path):
    root = segtrack(tmp_path / "st")
    with pytest.raises(UserError, match="supports --task discovery only"):
        eval_smtc.main(["--dataset", "segtrackv2", "--task", "propagation", "--data_path", str(root)])
    with pytest.raises(UserError, match="--matcher applies to --dataset davis only"):
        eval_smtc.main(["--dataset", "segtrackv2", "--task", "discovery", "--data_path", str(root),
                        "--matcher", "per_frame"])
    with pytest.raises(UserError, match="--prop_size applies to --dataset jhmdb and vip only"):
        eval_smtc.main(["--task", "propagation", "--data_path", str(root), "--prop_size", "64"])
    with pytest.raises(UserError, match="has no JPEGImages/; --data_path must be the prepared FBMS folder"):
        eval_smtc.main(["--dataset", "fbms", "--task", "discovery", "--data_path", str(root / "GroundTruth")])


def test_foreground_masks_stored_as_0_1_or_colour(tmp_path: Path):
    from PIL import Image
    from datasets.video_folders import read_foreground
    m = np.zeros((4, 5), np.uint8)
    m[1:3, 2:4] = 1
    Image.fromarray(m).save(tmp_path / "01.png")  # 0/1 values
    Image.fromarray(np.stack([m * 255] * 3, -1)).save(tmp_path / "rgb.png")  # white object on black, RGB
    assert np.array_equal(read_foreground(tmp_path / "01.png"), m.astype(bool))
    assert np.array_equal(read_foreground(tmp_path / "rgb.png"), m.astype(bool))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read mask"):
        read_foreground(tmp_path / "bad.png")


def test_score_foreground_refuses_proposals_of_other_frames(tmp_path: Path):
    seqs = SegTrackV2Sequences(segtrack(tmp_path / "st"))
    (tmp_path / "p").mkdir()
    for seq in seqs.sequences:
        torch.save({"other": {"masks": torch.zeros(0, 2, 2), "slot_ids": torch.zeros(0)}}, tmp_path / "p" / f"{seq}.pt")
    with pytest.raises(UserError, match="has no proposals for frame drift_00000"):
        video_eval.score_foreground(seqs, tmp_path / "p")


# --- the pipelines recover known motion with an encoder that sees scene coordinates ------------------

class SceneCoordinateEncoder(torch.nn.Module):
    """Patch tokens = Fourier features of the scene coordinates written into the frame's red/green
    channels, so matching features means matching scene points: propagation must follow the motion."""

    patch_size = 4

    def token_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] // 4, size[1] // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = torch.nn.functional.avg_pool2d(x[:, :2] * 255 / 5 - 8, 4)  # [t, 2, h, w] scene (x, y)
        freqs = torch.tensor([0.05, 0.1, 0.2, 0.4]).view(1, 1, 4, 1, 1)
        angles = coords[:, :, None] * freqs
        feats = torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1, 2)  # [t, 16, h, w]
        return feats.flatten(2).transpose(1, 2)


def scene_frames(num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H, W, 3]: red = scene x, green = scene y; the scene moves right 1 px a frame."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        out[t, ..., 0] = (xs - t + 8) * 5
        out[t, ..., 1] = (ys + 8) * 5
    return out


def test_keypoint_pipeline_tracks_known_motion(tmp_path: Path):
    from PIL import Image
    from utils.label_propagation import PropagationSettings
    root = tmp_path / "JHMDB"
    gt = joints(4)
    write_jhmdb_fixture(root, {"clap/a_clip": gt})
    for t, frame in enumerate(scene_frames(4, (24, 32))):  # replace the dots by scene-coordinate frames
        Image.fromarray(frame).save(root / "Rename_Images" / "clap" / "a_clip" / f"{t + 1:05d}.png")
    data = JhmdbVideos(root)
    # 2-pixel cells: the joints' one-pixel steps are sub-cell, so only a correct grid <-> pixel
    # mapping (no axis swap, no half-cell offset) keeps every joint within one pixel.
    settings = PropagationSettings(stride=2, topk=4, radius=6, temperature=0.02, num_short=2)
    video_eval.run_keypoint_propagation(SceneCoordinateEncoder(), data, settings, 32, tmp_path / "p",
                                        torch.device("cpu"))
    pred = np.load(tmp_path / "p" / "clap" / "a_clip.npy")
    assert np.abs(pred - gt).max() < 1.2
    assert np.abs((pred - gt).mean(axis=(0, 1))).max() < 0.2  # no systematic shift in x or y
    summary, _ = video_eval.score_keypoints(data, tmp_path / "p")
    assert summary["PCK@0.1"] == 1.0


def test_part_pipeline_tracks_known_motion(tmp_path: Path):
    from PIL import Image
    from utils.label_propagation import PropagationSettings
    root = tmp_path / "VIP_Fine"
    labels = vip_labels(4)
    write_vip_fixture(root, {"videos1": labels})
    for t, frame in enumerate(scene_frames(4, SIZE)):
        # JPEG without chroma subsampling keeps the coordinate channels sharp.
        Image.fromarray(frame).save(root / "Images" / "videos1" / f"{t * 5:06d}.jpg", quality=100, subsampling=0)
    data = VipVideos(root)
    settings = PropagationSettings(stride=2, topk=4, radius=6, temperature=0.02, num_short=2)
    video_eval.run_part_propagation(SceneCoordinateEncoder(), data, settings, 32, tmp_path / "p", torch.device("cpu"))
    summary, _ = video_eval.score_parts(data, tmp_path / "p")
    assert summary["mIoU"] > 0.9 and summary["pixel_accuracy"] > 0.95  # only the parts' edges blur


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["jhmdb", "vip"])
def test_two_processes_share_the_videos_and_score_the_same(tmp_path: Path, dataset: str):
    from tests.test_distributed import torchrun
    root = tmp_path / "data"
    if dataset == "jhmdb":
        write_jhmdb_fixture(root, {"clap/a_clip": joints(3), "run/b_clip": joints(3, 1), "run/c_clip": joints(3, 2)})
    else:
        write_vip_fixture(root, {"videos1": vip_labels(3), "videos2": vip_labels(3)[:, ::-1], "videos3": vip_labels(2)})
    common = ["--dataset", dataset, "--task", "propagation", "--data_path", str(root), "--which_encoder", "vit_micro_p8",
              "--no_pretrained", "--setting", "stride8", "--prop_size", "32", "--device", "cpu"]
    eval_smtc.main([*common, "--output_dir", str(tmp_path / "one")])
    result = torchrun(2, *common, "--output_dir", str(tmp_path / "two"), script="eval_smtc.py")
    assert result.returncode == 0, result.stderr[-3000:]
    split = "split1" if dataset == "jhmdb" else "val"
    one, two = ((tmp_path / d / "propagation_stride8" / f"results-{split}.csv").read_text() for d in ("one", "two"))
    assert one == two
