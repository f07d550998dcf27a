"""scripts/prepare_fbms.py and the FBMS-59 mask rules: frame numbers from release names, .ppm
white-is-background, per-sequence thresholds, masks landing on their own frame."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.fbms import TEST_SEQUENCES, FbmsSequences, foreground_from_grey, frame_number, ground_truth_files
from ground.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("prepare_fbms", REPO / "scripts" / "prepare_fbms.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_numbers_from_release_names():
    assert frame_number("cars1_0020_gt", "cars1") == 20  # not the 1 of the sequence name
    assert frame_number("tennis000", "tennis") == 0
    assert frame_number("marple2_020_gt", "marple2") == 20
    assert frame_number("img_05", "cats01") == 5  # other prefix: last digit run
    with pytest.raises(ValueError):
        frame_number("gt", "cats01")


def test_ppm_white_is_background_and_per_sequence_thresholds():
    grey = np.array([[255, 20, 80, 0]], np.uint8)
    assert foreground_from_grey(grey, True, "cars1").tolist() == [[False, False, True, False]]
    assert foreground_from_grey(grey, False, "cars1").tolist() == [[True, False, True, False]]  # pgm: white is object
    assert foreground_from_grey(grey, True, "marple7").tolist() == [[False, True, True, False]]  # threshold 0.05
    assert foreground_from_grey(grey, True, "marple2").tolist() == [[False, False, False, False]]  # threshold 0.4


def test_ground_truth_files_prefer_ppm_and_skip_prob(tmp_path: Path):
    for name in ("a_01_gt.ppm", "a_01_gt_PROB.ppm", "a_0001.pgm", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    files, from_ppm = ground_truth_files(tmp_path)
    assert [p.name for p in files] == ["a_01_gt.ppm"] and from_ppm
    (tmp_path / "a_01_gt.ppm").unlink()
    (tmp_path / "a_01_gt_PROB.ppm").unlink()
    files, from_ppm = ground_truth_files(tmp_path)
    assert [p.name for p in files] == ["a_0001.pgm"] and not from_ppm


def _box(t: int) -> np.ndarray:
    m = np.zeros((12, 16), bool)
    m[3:8, 2 + 2 * t : 6 + 2 * t] = True
    return m


def write_release(root: Path) -> None:
    """A tiny FBMS release: 30 test sequences. 'tennis' numbers frames from 0 (tennis000.jpg) with
    .pgm masks; 'cars1' from 1 (cars1_01.jpg) with colour .ppm masks plus a PROB file."""
    for seq in TEST_SEQUENCES:
        d = root / "Testset" / seq
        (d / "GroundTruth").mkdir(parents=True)
        first = 0 if seq == "tennis" else 1
        for t in range(4):
            img = np.full((12, 16, 3), 40, np.uint8)
            img[_box(t)] = (250, 200, 30)
            name = f"{seq}{first + t:03d}.jpg" if seq == "tennis" else f"{seq}_{first + t:02d}.jpg"
            Image.fromarray(img).save(d / name)
        annotated = 2  # the third frame
        if seq == "cars1":
            rgb = np.full((12, 16, 3), 255, np.uint8)
            rgb[_box(annotated)] = (255, 0, 0)
            Image.fromarray(rgb).save(d / "GroundTruth" / f"cars1_{first + annotated:02d}_gt.ppm")
            Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(d / "GroundTruth" / "cars1_01_gt_PROB.ppm")
        else:
            grey = (_box(annotated) * 255).astype(np.uint8)
            Image.fromarray(grey).save(d / "GroundTruth" / f"{seq}{first + annotated:03d}.pgm")


def test_prepare_fbms_end_to_end_masks_land_on_their_frames(tmp_path: Path, capsys):
    write_release(tmp_path / "FBMS")
    counts = _script().main(["--fbms_path", str(tmp_path / "FBMS"), "--output_path", str(tmp_path / "clean")])
    assert counts["cars1"] == 1 and len(counts) == 30  # the PROB file is not a mask
    assert "wrote 30 sequences (30 annotated frames)" in capsys.readouterr().out
    data = FbmsSequences(tmp_path / "clean", "test")
    assert data.annotated_names("tennis") == ["00002"]  # 0-based release numbering kept: frame tennis002
    assert data.frame_names("tennis")[0] == "00000"
    assert data.annotated_names("cars1") == ["00003"]
    for seq in ("tennis", "cars1"):
        (name,) = data.annotated_names(seq)
        frame = data.load_frames(seq)[data.frame_names(seq).index(name)]
        bright = frame[0] > 0.6  # the object drawn in that very frame
        assert np.array_equal(data.load_foreground(seq, name), _box(2)) and np.array_equal(bright, _box(2))


def test_prepare_fbms_errors(tmp_path: Path):
    script = _script()
    with pytest.raises(UserError, match="30 sequence folders missing"):
        script.main(["--fbms_path", str(tmp_path), "--output_path", str(tmp_path / "out")])
    write_release(tmp_path / "FBMS")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("")
    with pytest.raises(UserError, match="not empty"):
        script.main(["--fbms_path", str(tmp_path / "FBMS"), "--output_path", str(tmp_path / "out")])
    gt = tmp_path / "FBMS" / "Testset" / "dogs01" / "GroundTruth"
    (gt / "dogs01003.pgm").rename(gt / "dogs01009.pgm")
    with pytest.raises(UserError, match="mask of frame 9 of dogs01 .* has no frame with that number"):
        script.main(["--fbms_path", str(tmp_path / "FBMS"), "--output_path", str(tmp_path / "out2")])
    with pytest.raises(UserError, match="Trainingset"):
        script.main(["--fbms_path", str(tmp_path / "FBMS"), "--output_path", str(tmp_path / "out3"), "--split", "all"])
