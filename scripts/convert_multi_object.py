#!/usr/bin/env python
"""Convert DeepMind multi_object_datasets TFRecords (CLEVR with masks, Tetrominoes) to HDF5, without TensorFlow.

Writes the layout the loaders read (and the seed's converted files have): one gzip-compressed
HDF5 dataset per ``tf.train.Example`` feature with a leading sample axis. Both CRCs of every
record are checked. Examples (files from gs://multi-object-datasets/):

    python scripts/convert_multi_object.py --dataset clevr --tfrecord clevr_with_masks_train.tfrecords --out data/clevr_with_masks.h5
    python scripts/convert_multi_object.py --dataset tetrominoes --tfrecord tetrominoes_train.tfrecords \
        --out data/tetrominoes.h5 --max_samples 90000    # the loaders use the first 90k (60k/15k/15k)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# Entry scripts run from the repository root without installing the package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from datasets import clevr, tetrominoes  # noqa: E402
from datasets.tfrecord import COMPRESSIONS, tfrecord_to_hdf5  # noqa: E402
from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

FEATURES = {"clevr": clevr.FEATURES, "clevr_with_masks": clevr.FEATURES, "tetrominoes": tetrominoes.FEATURES}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", required=True, choices=sorted(FEATURES), help="which DeepMind dataset the file holds")
    parser.add_argument("--tfrecord", required=True, help="input .tfrecords file")
    parser.add_argument("--out", required=True, help="output .h5 file (pass it, or its folder, as --data_path)")
    parser.add_argument("--max_samples", type=int, default=None, help="convert only the first N records")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="auto", help="TFRecord compression (auto: detect)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--workers", type=int, default=0, help="processes that check CRCs and decode (0: this one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        raise UserError(f"{args.out} exists; pass --overwrite to replace it")
    start = time.perf_counter()
    count = tfrecord_to_hdf5(
        args.tfrecord, args.out, FEATURES[args.dataset], max_samples=args.max_samples,
        compression=args.compression, progress=True, workers=args.workers,
    )
    elapsed = time.perf_counter() - start
    size_mib = os.path.getsize(args.out) / 2**20
    print(f"wrote {args.out}: {count} samples, {size_mib:.1f} MiB in {elapsed:.1f} s ({elapsed / count * 1e3:.1f} ms/sample)")
    return count


if __name__ == "__main__":
    run_cli(main)
