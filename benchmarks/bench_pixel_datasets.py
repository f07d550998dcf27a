"""Loader throughput of the pixel-space object-discovery datasets on full-size synthetic files.

Writes fixtures at the real image sizes (CLEVR with masks 240 x 320 HDF5, Tetrominoes 35 x 35
HDF5, ClevrTex 240 x 320 PNG folders) with the test fixture writers, then reads every item
through a DataLoader and prints images/s, plus the ClevrTex index time (first run vs cached)
and the TFRecord -> HDF5 conversion time per CLEVR sample. The synthetic scenes are simpler
than real renders, so they compress better: real files decode somewhat slower. Example:

    python benchmarks/bench_pixel_datasets.py --num_scenes 200 --image_size 128 --num_workers 0
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import build_dataset  # noqa: E402
from datasets import clevr  # noqa: E402
from datasets.clevr import ClevrWithMasks  # noqa: E402
from datasets.tfrecord import tfrecord_to_hdf5  # noqa: E402
from tests.fixtures_pixel import (  # noqa: E402
    clevr_arrays, write_clevr_tfrecord, write_clevrtex_folder, write_h5, write_tetrominoes_h5,
)


def throughput(dataset, batch_size: int, num_workers: int) -> float:
    """Images per second for one pass over ``dataset`` (default collate, as the Trainer)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    start = time.perf_counter()
    count = sum(len(batch["image"]) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--num_scenes", type=int, default=200, help="CLEVR and ClevrTex scenes (Tetrominoes: 10x)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--convert_samples", type=int, default=10, help="CLEVR TFRecords converted for the timing")
    parser.add_argument("--convert_workers", type=int, default=2, help="also time the converter with this many workers")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores | "
          f"{args.image_size}px, batch {args.batch_size}, {args.num_workers} workers, split: test+val+train of "
          f"{args.num_scenes} scenes")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["OCL_CACHE_DIR"] = str(tmp / "cache")
        write_h5(tmp / "clevr" / ClevrWithMasks.FILE_NAME, clevr_arrays(args.num_scenes, *clevr.IMAGE_SHAPE))
        write_tetrominoes_h5(tmp / "tetrominoes", num_samples=10 * args.num_scenes)
        clevrtex_root = write_clevrtex_folder(tmp / "clevrtex", num_samples=args.num_scenes, height=240, width=320,
                                              per_folder=100)

        start = time.perf_counter()
        build_dataset("clevrtex", "train", args.image_size, data_path=str(clevrtex_root))
        first = time.perf_counter() - start
        start = time.perf_counter()
        build_dataset("clevrtex", "train", args.image_size, data_path=str(clevrtex_root))
        cached = time.perf_counter() - start
        print(f"clevrtex index: {first * 1e3:.0f} ms to build for {args.num_scenes} scenes "
              f"({first / args.num_scenes * 1e3:.2f} ms/scene), {cached * 1e3:.1f} ms from the cache")

        rows = {
            "clevr (masks)": (ClevrWithMasks, tmp / "clevr", True),
            "clevr (no masks)": (ClevrWithMasks, tmp / "clevr", False),
        }
        for name, (cls, path, masks) in rows.items():
            dataset = torch.utils.data.ConcatDataset(
                [cls(str(path), split, args.image_size, with_masks=masks) for split in ("train", "val", "test")]
            )
            print(f"{name:18s} {throughput(dataset, args.batch_size, args.num_workers):8.1f} images/s")
        for name, path in (("tetrominoes", tmp / "tetrominoes"), ("clevrtex", clevrtex_root)):
            dataset = torch.utils.data.ConcatDataset(
                [build_dataset(name, split, args.image_size, data_path=str(path)) for split in ("train", "val", "test")]
            )
            print(f"{name:18s} {throughput(dataset, args.batch_size, args.num_workers):8.1f} images/s")

        tfrecord, _ = write_clevr_tfrecord(tmp / "clevr.tfrecords", num_samples=args.convert_samples)
        for workers in sorted({0, args.convert_workers}):
            start = time.perf_counter()
            tfrecord_to_hdf5(str(tfrecord), str(tmp / f"converted{workers}.h5"), clevr.FEATURES, workers=workers)
            per_sample = (time.perf_counter() - start) / args.convert_samples
            print(f"convert CLEVR TFRecord -> HDF5, {workers} workers: {per_sample * 1e3:.0f} ms/sample "
                  f"(100k samples: {per_sample * 1e5 / 3600:.1f} h)")


if __name__ == "__main__":
    main()
