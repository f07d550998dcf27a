"""TFRecord framing, CRC32C and tf.train.Example parsing without TensorFlow."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from datasets.tfrecord import (
    FeatureSpec, Example, TFRecordError, crc32c, decode_example, encode_example, masked_crc32c, read_records,
    write_records,
)
from ground.errors import UserError


def test_crc32c_known_value_and_independent_reference() -> None:
    # CRC-32C check value of the ASCII string "123456789" (RFC 3720, appendix B.4).
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as reference

    rng = np.random.default_rng(0)
    # Both sides of the numpy-lane threshold (4096) and lengths that do not divide into lanes.
    for length in (1, 7, 4095, 4096, 4097, 20_011, 70_000):
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        assert masked_crc32c(data) == reference(data), length


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_records_round_trip(tmp_path: Path, compression: str) -> None:
    records = [b"", b"a", bytes(range(256)) * 40]
    path = tmp_path / "r.tfrecords"
    assert write_records(str(path), records, compression=compression) == 3
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (compression == "gzip")
    assert list(read_records(str(path))) == records  # compression detected


def _raw_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "raw.tfrecords"
    length = struct.pack("<Q", len(data))
    path.write_bytes(length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data)))
    return path


def test_corrupt_and_truncated_records_are_clear_errors(tmp_path: Path) -> None:
    path = _raw_file(tmp_path, b"hello world")
    assert list(read_records(str(path))) == [b"hello world"]
    raw = bytearray(path.read_bytes())
    raw[14] ^= 0xFF  # flip a data byte
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="bad data CRC at record 0"):
        list(read_records(str(path)))
    assert list(read_records(str(path), check_crc=False))[0] != b"hello world"
    path.write_bytes(bytes(raw[:-6]))
    with pytest.raises(TFRecordError, match="truncated data at record 0"):
        list(read_records(str(path)))
    path.write_bytes(b"this is not a tfrecord file at all")
    with pytest.raises(TFRecordError, match="bad length CRC at record 0"):
        list(read_records(str(path)))
    gz = tmp_path / "cut.tfrecords"
    gz.write_bytes(gzip.compress(_raw_file(tmp_path, b"x" * 5000).read_bytes())[:-30])
    with pytest.raises(TFRecordError, match="record 0"):
        list(read_records(str(gz)))
    with pytest.raises(UserError, match="not found"):
        list(read_records(str(tmp_path / "missing.tfrecords")))


SPECS = {
    "image": FeatureSpec((4, 5, 3), "bytes", "uint8"),
    "visibility": FeatureSpec((3,), "float", "float32"),
    "count": FeatureSpec((2,), "int64", "int64"),
}


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "image": rng.integers(0, 256, (4, 5, 3)).astype(np.uint8),
        "visibility": rng.normal(size=3).astype(np.float32),
        "count": np.array([3, -7]),
    }


def test_example_round_trip_in_deepmind_encoding() -> None:
    arrays = _arrays()
    data = encode_example(arrays, SPECS)
    example = Example.FromString(data)
    # DeepMind stores one single-byte string per element (FixedLenFeature(shape, tf.string)).
    values = example.features.feature["image"].bytes_list.value
    assert len(values) == 60 and all(len(v) == 1 for v in values)
    decoded = decode_example(data, SPECS)
    for name, value in arrays.items():
        np.testing.assert_array_equal(decoded[name], value)
        assert decoded[name].dtype == np.dtype(SPECS[name].dtype) and decoded[name].shape == SPECS[name].shape


def test_example_with_one_bytes_string_and_bad_examples() -> None:
    arrays = _arrays()
    example = Example.FromString(encode_example(arrays, SPECS))
    image = example.features.feature["image"].bytes_list
    del image.value[:]
    image.value.append(arrays["image"].tobytes())  # all bytes in one string: also accepted
    np.testing.assert_array_equal(decode_example(example.SerializeToString(), SPECS)["image"], arrays["image"])
    with pytest.raises(TFRecordError, match="feature 'mask' missing"):
        decode_example(example.SerializeToString(), {**SPECS, "mask": FeatureSpec((1,), "bytes", "uint8")})
    with pytest.raises(TFRecordError, match="'image' has 60 bytes values, expected 120"):
        decode_example(example.SerializeToString(), {"image": FeatureSpec((8, 5, 3), "bytes", "uint8")})
    with pytest.raises(TFRecordError, match="not a tf.train.Example"):
        decode_example(b"\xff\xff\xff", SPECS)
