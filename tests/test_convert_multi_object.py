"""scripts/convert_multi_object.py: DeepMind TFRecords -> the seed's HDF5 layout, read back identically."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import build_dataset
from ground.errors import UserError
from tests.fixtures_pixel import write_clevr_tfrecord, write_tetrominoes_tfrecord

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("convert_multi_object", REPO / "scripts" / "convert_multi_object.py")
convert = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert)


def _assert_same(h5_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with h5py.File(h5_path, "r") as f:
        assert set(f.keys()) == set(arrays)
        for name, values in arrays.items():
            assert f[name].dtype == values.dtype, name
            np.testing.assert_array_equal(f[name][:], values, err_msg=name)


def test_clevr_tfrecord_converts_identically_and_loads(tmp_path: Path) -> None:
    tfrecord, arrays = write_clevr_tfrecord(tmp_path / "clevr_with_masks_train.tfrecords", num_samples=2)
    out = tmp_path / "data" / "clevr_with_masks.h5"
    assert convert.main(["--dataset", "clevr", "--tfrecord", str(tfrecord), "--out", str(out)]) == 2
    _assert_same(out, arrays)
    assert arrays["image"].shape == (2, 240, 320, 3) and arrays["mask"].shape == (2, 11, 240, 320, 1)
    # A full-size 2-scene file is split proportionally: test holds the last scene.
    item = build_dataset("clevr", "test", image_size=64, mask_size=64, data_path=str(out.parent))[0]
    labels = arrays["mask"][1, :, 29:221, 64:256, 0].argmax(0)[::3, ::3]  # crop, then 192 -> 64 nearest
    np.testing.assert_array_equal(item["mask_instance"].numpy(), labels)
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        convert.main(["--dataset", "clevr", "--tfrecord", str(tfrecord), "--out", str(out)])


def test_tetrominoes_tfrecord_converts_and_max_samples(tmp_path: Path) -> None:
    tfrecord, arrays = write_tetrominoes_tfrecord(tmp_path / "tetrominoes_train.tfrecords", num_samples=5)
    out = tmp_path / "tetrominoes.h5"
    assert convert.main(["--dataset", "tetrominoes", "--tfrecord", str(tfrecord), "--out", str(out)]) == 5
    _assert_same(out, arrays)
    assert convert.main(["--dataset", "tetrominoes", "--tfrecord", str(tfrecord), "--out", str(out),
                         "--max_samples", "3", "--overwrite"]) == 3
    _assert_same(out, {k: v[:3] for k, v in arrays.items()})


def test_converter_errors(tmp_path: Path) -> None:
    tfrecord, _ = write_tetrominoes_tfrecord(tmp_path / "tetrominoes_train.tfrecords", num_samples=1)
    out = tmp_path / "x.h5"
    with pytest.raises(UserError, match="feature 'image' has 3675 bytes values, expected 230400"):  # Tetrominoes as CLEVR
        convert.main(["--dataset", "clevr", "--tfrecord", str(tfrecord), "--out", str(out)])
    assert not out.exists() and not list(tmp_path.glob("x.h5.tmp*"))  # nothing half-written
    with pytest.raises(UserError, match="not found"):
        convert.main(["--dataset", "clevr", "--tfrecord", str(tmp_path / "nope.tfrecords"), "--out", str(out)])
    with pytest.raises(UserError, match="--max_samples must be >= 1"):
        convert.main(["--dataset", "tetrominoes", "--tfrecord", str(tfrecord), "--out", str(out), "--max_samples", "0"])


def test_worker_processes_give_the_same_file_and_report_bad_crcs(tmp_path: Path) -> None:
    tfrecord, arrays = write_tetrominoes_tfrecord(tmp_path / "t.tfrecords", num_samples=6)
    out = tmp_path / "t.h5"
    assert convert.main(["--dataset", "tetrominoes", "--tfrecord", str(tfrecord), "--out", str(out), "--workers", "2"]) == 6
    _assert_same(out, arrays)
    # Flip one byte inside record 4's data (uncompressed copy): the worker's CRC check names it.
    import gzip

    raw = bytearray(gzip.decompress(tfrecord.read_bytes()))
    record_size = len(raw) // 6
    raw[4 * record_size + 100] ^= 0xFF
    broken = tmp_path / "broken.tfrecords"
    broken.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="bad data CRC at record 4"):
        convert.main(["--dataset", "tetrominoes", "--tfrecord", str(broken), "--out", str(tmp_path / "b.h5"),
                      "--workers", "2"])
    assert not (tmp_path / "b.h5").exists()
