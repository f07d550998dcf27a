"""TFRecord files of ``tf.train.Example`` without TensorFlow: reader, writer and HDF5 export.

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

(optionally the whole file is GZIP-compressed, as DeepMind's multi_object_datasets are). The
``tf.train.Example`` message is declared here from its public schema
(``tensorflow/core/example/{feature,example}.proto``) in a private protobuf descriptor pool, so
parsing uses the installed ``protobuf`` runtime and no TensorFlow (the ``tensorboard`` package
ships no ``example_pb2``), and it never clashes with TensorFlow's own classes when both are
imported.

CRC32C over records of several MB must be fast: :func:`crc32c` splits long buffers into lanes
that are processed in parallel with numpy and combines the lane CRCs with GF(2) matrices
(the CRC of a concatenation is linear in its parts).
"""
from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import multiprocessing
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Sequence

import numpy as np

from ground.errors import UserError

# ------------------------------------------------------------------------------ CRC32C

_CRC32C_POLY_REFLECTED = 0x82F63B78  # Castagnoli polynomial, bit-reversed
_MASK_DELTA = 0xA282EAD8  # TFRecord's CRC masking constant
_UINT32 = 0xFFFFFFFF


def _make_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY_REFLECTED if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_SMALL = 4096  # below this many bytes the plain byte loop is faster than numpy lanes
_LANES = 4096


def _crc_bytes_python(register: int, data: bytes) -> int:
    table = _TABLE_LIST
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


# A 32x32 GF(2) matrix acting on the CRC register is stored as its 32 columns (uint32 each).
def _apply(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector over GF(2), for a vector (or array) of uint32 registers."""
    out = np.zeros_like(vector)
    for bit in range(32):
        out ^= np.where((vector >> np.uint32(bit)) & np.uint32(1), matrix[bit], np.uint32(0))
    return out


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The matrix of ``a(b(x))``."""
    return _apply(a, b)


def _zero_byte_matrix() -> np.ndarray:
    """The map register -> register after feeding one zero byte."""
    columns = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
    return _TABLE[columns & np.uint32(0xFF)] ^ (columns >> np.uint32(8))


_ZERO_BYTE = _zero_byte_matrix()


@functools.lru_cache(maxsize=256)
def _zeros_matrix(num_bytes: int) -> np.ndarray:
    """The map register -> register after feeding ``num_bytes`` zero bytes (square and multiply).

    Cached: the records of one dataset mostly share a few lengths.
    """
    result = np.array([1 << bit for bit in range(32)], dtype=np.uint32)  # identity
    power = _ZERO_BYTE
    while num_bytes:
        if num_bytes & 1:
            result = _compose(power, result)
        power = _compose(power, power)
        num_bytes >>= 1
    return result


def _crc_raw_numpy(data: bytes) -> int:
    """CRC register (initial value 0, no final xor) of a long buffer, via parallel lanes."""
    lane_len = -(-len(data) // _LANES)
    padded = np.zeros(_LANES * lane_len, dtype=np.uint8)
    # Leading zero bytes leave a zero register unchanged, so padding goes in front.
    padded[len(padded) - len(data):] = np.frombuffer(data, dtype=np.uint8)
    columns = np.ascontiguousarray(padded.reshape(_LANES, lane_len).T)  # [lane_len, LANES]
    registers = np.zeros(_LANES, dtype=np.uint32)
    low = np.uint32(0xFF)
    eight = np.uint32(8)
    for column in columns:
        registers = _TABLE[(registers ^ column) & low] ^ (registers >> eight)
    # Combine neighbouring lanes pairwise: crc(A + B) = shift(crc(A), len(B)) ^ crc(B).
    level = 0
    while len(registers) > 1:
        registers = _apply(_zeros_matrix(lane_len << level), registers[0::2]) ^ registers[1::2]
        level += 1
    return int(registers[0])


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as used by TFRecord framing."""
    if len(data) < _SMALL:
        return _crc_bytes_python(_UINT32, data) ^ _UINT32
    # crc with initial register c = raw crc with register 0, plus c shifted through the data.
    initial = int(_apply(_zeros_matrix(len(data)), np.array([_UINT32], dtype=np.uint32))[0])
    return (_crc_raw_numpy(data) ^ initial) ^ _UINT32


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _UINT32


# ---------------------------------------------------------------------- record framing

COMPRESSIONS: tuple[str, ...] = ("auto", "gzip", "none")


class TFRecordError(UserError):
    """A TFRecord file is truncated, corrupt or not a TFRecord file."""


def _open(path: str, compression: str, mode: str) -> BinaryIO:
    if compression == "auto":
        compression = _sniff_compression(path) if "r" in mode else "gzip"
    if compression == "gzip":
        return gzip.open(path, mode)  # type: ignore[return-value]
    if compression == "none":
        return open(path, mode)  # type: ignore[return-value]
    raise UserError(f"unknown TFRecord compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")


def _sniff_compression(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(2)
    return "gzip" if head == b"\x1f\x8b" else "none"


def read_records(path: str, compression: str = "auto", check_crc: bool = True) -> Iterator[bytes]:
    """Yield the data of every record in a TFRecord file, checking both CRCs of each record."""
    for index, data, data_crc in _framed_records(path, compression, check_crc):
        if check_crc:
            _check_data_crc(path, index, data, data_crc)
        yield data


def _check_data_crc(path: str, index: int, data: bytes, data_crc: int) -> None:
    if masked_crc32c(data) != data_crc:
        raise TFRecordError(f"{path}: bad data CRC at record {index}; the file is corrupt, re-download it")


def _framed_records(path: str, compression: str, check_crc: bool) -> Iterator[tuple[int, bytes, int]]:
    """(index, data, stored data CRC) per record; checks the length CRC (cheap) only."""
    if not os.path.isfile(path):
        raise UserError(f"TFRecord file {path} not found")
    with _open(path, compression, "rb") as f:
        index = 0
        while True:
            try:
                header = f.read(12)
            except (OSError, EOFError, zlib.error) as err:
                raise TFRecordError(f"{path}: cannot decompress at record {index} ({err}); re-download the file") from err
            if not header:
                return
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated header at record {index}; the file is incomplete, re-download it")
            length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
            if check_crc and masked_crc32c(length_bytes) != length_crc:
                raise TFRecordError(
                    f"{path}: bad length CRC at record {index}; not a TFRecord file with this compression "
                    f"(try --compression gzip/none) or the file is corrupt"
                )
            (length,) = struct.unpack("<Q", length_bytes)
            try:
                data = f.read(length)
                footer = f.read(4)
            except (OSError, EOFError, zlib.error) as err:
                raise TFRecordError(f"{path}: cannot decompress at record {index} ({err}); re-download the file") from err
            if len(data) < length or len(footer) < 4:
                raise TFRecordError(f"{path}: truncated data at record {index}; the file is incomplete, re-download it")
            yield index, data, struct.unpack("<I", footer)[0]
            index += 1


def write_records(path: str, records: Sequence[bytes] | Iterator[bytes], compression: str = "gzip") -> int:
    """Write records to a TFRecord file (GZIP-compressed by default); returns how many."""
    count = 0
    with _open(path, compression, "wb") as f:
        for data in records:
            length_bytes = struct.pack("<Q", len(data))
            f.write(length_bytes)
            f.write(struct.pack("<I", masked_crc32c(length_bytes)))
            f.write(data)
            f.write(struct.pack("<I", masked_crc32c(data)))
            count += 1
    return count


# ------------------------------------------------------------------ tf.train.Example


def _example_classes() -> tuple[Any, Any]:
    """Build ``tensorflow.Example`` and ``tensorflow.Feature`` classes from the public schema."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow/core/example/example.proto", package="tensorflow", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> descriptor_pb2.DescriptorProto:
        msg = descriptor_pb2.DescriptorProto(name=name)
        for field_name, number, label, kind, type_name in fields:
            field = msg.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name
        return msg

    rep, opt = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL
    proto.message_type.append(message("BytesList", [("value", 1, rep, fd.TYPE_BYTES, "")]))
    proto.message_type.append(message("FloatList", [("value", 1, rep, fd.TYPE_FLOAT, "")]))
    proto.message_type.append(message("Int64List", [("value", 1, rep, fd.TYPE_INT64, "")]))
    feature = message("Feature", [
        ("bytes_list", 1, opt, fd.TYPE_MESSAGE, ".tensorflow.BytesList"),
        ("float_list", 2, opt, fd.TYPE_MESSAGE, ".tensorflow.FloatList"),
        ("int64_list", 3, opt, fd.TYPE_MESSAGE, ".tensorflow.Int64List"),
    ])
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    proto.message_type.append(feature)
    features = message("Features", [("feature", 1, rep, fd.TYPE_MESSAGE, ".tensorflow.Features.FeatureEntry")])
    entry = message("FeatureEntry", [
        ("key", 1, opt, fd.TYPE_STRING, ""),
        ("value", 2, opt, fd.TYPE_MESSAGE, ".tensorflow.Feature"),
    ])
    entry.options.map_entry = True
    features.nested_type.append(entry)
    proto.message_type.append(features)
    proto.message_type.append(message("Example", [("features", 1, opt, fd.TYPE_MESSAGE, ".tensorflow.Features")]))

    pool = descriptor_pool.DescriptorPool()  # private: no clash with TensorFlow's registered classes
    pool.Add(proto)
    example = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))
    feature_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Feature"))
    return example, feature_cls


Example, Feature = _example_classes()


# --------------------------------------------------------------- fixed-length features


@dataclass(frozen=True)
class FeatureSpec:
    """A fixed-length feature of a ``tf.train.Example`` (like ``tf.io.FixedLenFeature``).

    ``kind`` ``"bytes"``: the values are raw uint8 bytes (DeepMind's datasets store one
    single-byte string per element; one string holding all bytes is accepted too) decoded to
    ``dtype`` uint8. ``"float"``: a float_list; ``"int64"``: an int64_list.
    """

    shape: tuple[int, ...]
    kind: str
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _bytes_values(bytes_list: Any, size: int) -> np.ndarray:
    """The concatenated bytes of a BytesList as uint8.

    DeepMind's files hold one single-byte string per element; the wire form of such a list
    is the triplets ``0x0A 0x01 <byte>``, which is read with a strided view (about 10x faster
    than joining a million Python ``bytes`` objects). Any other layout takes the general path.
    """
    wire = np.frombuffer(bytes_list.SerializeToString(), dtype=np.uint8)
    if wire.size == 3 * size and (wire[0::3] == 0x0A).all() and (wire[1::3] == 0x01).all():
        return wire[2::3]
    return np.frombuffer(b"".join(bytes_list.value), dtype=np.uint8)


def decode_example(data: bytes, specs: dict[str, FeatureSpec], where: str = "example") -> dict[str, np.ndarray]:
    """Parse a serialized ``tf.train.Example`` into arrays of the given shapes and dtypes."""
    example = Example()
    try:
        example.ParseFromString(data)
    except Exception as err:  # protobuf raises its own DecodeError subclass; report it as bad data
        raise TFRecordError(f"{where}: not a tf.train.Example ({err})") from err
    features = example.features.feature
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        if name not in features:
            raise TFRecordError(
                f"{where}: feature {name!r} missing (has {', '.join(sorted(features))}); is this the right dataset?"
            )
        feature = features[name]
        if spec.kind == "bytes":
            values = _bytes_values(feature.bytes_list, spec.size)
        elif spec.kind == "float":
            values = np.asarray(feature.float_list.value, dtype=np.float32)
        else:
            values = np.asarray(feature.int64_list.value, dtype=np.int64)
        if values.size != spec.size:
            raise TFRecordError(
                f"{where}: feature {name!r} has {values.size} {spec.kind} values, expected {spec.size} "
                f"for shape {spec.shape}; is this the right dataset?"
            )
        out[name] = values.reshape(spec.shape).astype(spec.dtype, copy=False)
    return out


def encode_example(arrays: dict[str, np.ndarray], specs: dict[str, FeatureSpec]) -> bytes:
    """Serialize arrays as a ``tf.train.Example`` the way DeepMind's files store them.

    Bytes features become one single-byte string per element (DeepMind's layout, read back
    by ``tf.io.FixedLenFeature(shape, tf.string)`` + ``decode_raw``).
    """
    example = Example()
    for name, spec in specs.items():
        values = np.asarray(arrays[name]).reshape(-1)
        feature = example.features.feature[name]
        if spec.kind == "bytes":
            # The wire form of a list of single-byte strings: 0x0A 0x01 <byte> per element.
            wire = np.empty((values.size, 3), dtype=np.uint8)
            wire[:, 0], wire[:, 1], wire[:, 2] = 0x0A, 0x01, values.astype(np.uint8)
            feature.bytes_list.MergeFromString(wire.tobytes())
        elif spec.kind == "float":
            feature.float_list.value.extend(values.astype(np.float32).tolist())
        else:
            feature.int64_list.value.extend(values.astype(np.int64).tolist())
    return example.SerializeToString()


# ---------------------------------------------------------------------------- to HDF5


_CHUNK_BYTES = 64 * 1024


def _chunk_rows(spec: FeatureSpec) -> int:
    """Samples per HDF5 chunk: one for images and masks (random access reads one sample),
    many for small per-object attributes (a split's ``visibility`` is read in one go)."""
    return max(1, min(1024, _CHUNK_BYTES // (spec.size * np.dtype(spec.dtype).itemsize)))


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _decode_record(
    record: tuple[int, bytes, int], path: str, specs: dict[str, FeatureSpec], check_crc: bool
) -> dict[str, np.ndarray]:
    """Check one record's data CRC and decode its Example (runs in worker processes too)."""
    index, data, data_crc = record
    if check_crc:
        _check_data_crc(path, index, data, data_crc)
    return decode_example(data, specs, where=f"{path} record {index}")


def tfrecord_to_hdf5(
    tfrecord_path: str,
    hdf5_path: str,
    specs: dict[str, FeatureSpec],
    max_samples: int | None = None,
    compression: str = "auto",
    progress: bool = False,
    check_crc: bool = True,
    workers: int = 0,
) -> int:
    """Convert a TFRecord file of Examples into one HDF5 dataset per feature ([N, *shape]).

    Datasets are resizable along N, chunked by about 64 KiB and gzip-compressed. The file is
    written to ``<hdf5_path>.tmp<pid>`` and renamed when complete. With ``workers`` > 0 the CRC
    check and Example decoding (about half the time) run in that many processes; reading and
    writing stay in this one, in record order. Returns the sample count.
    """
    import h5py
    from tqdm import tqdm

    if max_samples is not None and max_samples < 1:
        raise UserError(f"--max_samples must be >= 1, got {max_samples}")
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    if not os.path.isfile(tfrecord_path):
        raise UserError(f"TFRecord file {tfrecord_path} not found; download it from gs://multi-object-datasets/")
    os.makedirs(os.path.dirname(os.path.abspath(hdf5_path)), exist_ok=True)
    tmp_path = f"{hdf5_path}.tmp{os.getpid()}"
    count = 0
    try:
        with h5py.File(tmp_path, "w") as f:
            datasets = {
                name: f.create_dataset(
                    name, shape=(0, *spec.shape), maxshape=(None, *spec.shape), dtype=spec.dtype,
                    chunks=(_chunk_rows(spec), *spec.shape), compression="gzip", compression_opts=4,
                )
                for name, spec in specs.items()
            }
            records = itertools.islice(_framed_records(tfrecord_path, compression, check_crc), max_samples)
            decode = functools.partial(_decode_record, path=tfrecord_path, specs=specs, check_crc=check_crc)
            with contextlib.ExitStack() as stack:
                if workers > 0:
                    # fork (where there is one) skips re-importing numpy/torch in every worker;
                    # the workers only parse bytes and never touch the open files.
                    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
                    pool = stack.enter_context(multiprocessing.get_context(method).Pool(workers))
                    # Batches, not pool.imap: imap reads ahead without bound, i.e. the whole
                    # (hundreds of GB uncompressed) file into memory.
                    decoded = (arrays for batch in _batches(records, 4 * workers) for arrays in pool.map(decode, batch))
                else:
                    decoded = map(decode, records)
                for arrays in tqdm(decoded, desc=os.path.basename(tfrecord_path), disable=not progress, total=max_samples):
                    for name, dset in datasets.items():
                        if dset.shape[0] <= count:  # grow in blocks: one resize per sample is slow
                            dset.resize(count + 1024, axis=0)
                        dset[count] = arrays[name]
                    count += 1
            if count == 0:
                raise UserError(f"{tfrecord_path} holds no records")
            for dset in datasets.values():
                dset.resize(count, axis=0)
            f.attrs["source"] = os.path.basename(tfrecord_path)
        os.replace(tmp_path, hdf5_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    return count
