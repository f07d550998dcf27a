"""Write the synthetic shapes dataset to an HDF5 cache for ``ShapesDataset(hdf5_path=...)``.

Example (from the repository root)::

    python scripts/make_shapes_h5.py --out data/shapes_train_64.h5 --split train
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

from datasets.shapes import DEFAULT_NUM_SAMPLES, write_shapes_hdf5  # noqa: E402
from utils.errors import run_cli  # noqa: E402

BYTES_PER_MIB = 1024**2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output .h5 path")
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument(
        "--num_samples", type=int, default=None,
        help=f"default: {DEFAULT_NUM_SAMPLES['train']} for train, "
        f"{DEFAULT_NUM_SAMPLES['val']} for val",
    )
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--mask_size", type=int, default=None, help="default: image_size")
    parser.add_argument("--min_objects", type=int, default=2)
    parser.add_argument("--max_objects", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    write_shapes_hdf5(
        args.out, split=args.split, num_samples=args.num_samples, image_size=args.image_size,
        mask_size=args.mask_size, min_objects=args.min_objects, max_objects=args.max_objects,
        seed=args.seed, progress=True,
    )
    elapsed = time.perf_counter() - start
    num_samples = DEFAULT_NUM_SAMPLES[args.split] if args.num_samples is None else args.num_samples
    size_mib = os.path.getsize(args.out) / BYTES_PER_MIB
    print(
        f"wrote {args.out}: {num_samples} samples, {size_mib:.1f} MiB, "
        f"{elapsed:.1f} s ({elapsed / num_samples * 1e3:.2f} ms per sample incl. writing)"
    )


if __name__ == "__main__":
    run_cli(main)
