"""Merge RAVENS generator chunks into the two files ``--dataset ravens`` reads (docs/data.md, "RAVENS").

The seed's RAVENS fork writes one ``ravens_robot_data_{mode}_{seed}.h5`` per ``demos.py`` run;
its published training set is two such chunks joined. This script appends the chunks given
to ``--train`` (and ``--test``) in order into ``<out>/ravens_robot_data_train.h5`` (and
``_test.h5``), copying ``color``, ``segm`` and ``num_objects_on_table`` in blocks of 2,000
rows (gzip, growable first axis, as the generator writes them). Each chunk is checked first.

Example (the published split)::

    python scripts/prepare_ravens.py --train ravens_robot_data_train_0.h5 ravens_robot_data_train_23334.h5 \\
        --test ravens_robot_data_test_1.h5 --out data/ravens
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Entry scripts run from the repository root without installing the package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from datasets.ravens import VIEWS_PER_SCENE, check_file  # noqa: E402
from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

KEYS: tuple[str, ...] = ("color", "segm", "num_objects_on_table")
BLOCK_ROWS = 2_000


def merge(chunks: list[Path], out: Path) -> int:
    """Append ``chunks`` (checked RAVENS files) into a new file ``out``; returns the scene count."""
    import h5py

    shapes = set()
    for chunk in chunks:
        if not chunk.is_file():
            raise UserError(f"{chunk} not found; pass the .h5 files written by the RAVENS fork's demos.py")
        height, width, _ = check_file(chunk)
        shapes.add((height, width))
    if len(shapes) > 1:
        raise UserError(f"the chunks have different image sizes ({sorted(shapes)}); they are not from one generator setup")
    if out.exists():
        raise UserError(f"{out} exists; remove it or choose another --out")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as dst:
            for chunk in chunks:
                with h5py.File(chunk, "r") as src:
                    for key in KEYS:
                        data = src[key]
                        if key not in dst:
                            dst.create_dataset(key, shape=(0, *data.shape[1:]), maxshape=(None, *data.shape[1:]),
                                               dtype=data.dtype, chunks=True, compression="gzip")
                        target = dst[key]
                        start = target.shape[0]
                        target.resize(start + data.shape[0], axis=0)
                        for row in range(0, data.shape[0], BLOCK_ROWS):
                            block = data[row : row + BLOCK_ROWS]
                            target[start + row : start + row + len(block)] = block
            scenes = dst["num_objects_on_table"].shape[0]
        os.replace(tmp, out)  # a crash never leaves a half-written file under the final name
    finally:
        if tmp.exists():
            tmp.unlink()
    return scenes


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--train", nargs="+", default=[], help="training chunks, in order")
    parser.add_argument("--test", nargs="+", default=[], help="test chunks, in order (the seed validates on these)")
    parser.add_argument("--out", required=True, help="folder for ravens_robot_data_{train,test}.h5 (created)")
    args = parser.parse_args(argv)
    if not args.train and not args.test:
        raise UserError("give --train and/or --test chunks to merge")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for mode in ("train", "test"):
        chunks = [Path(p) for p in getattr(args, mode)]
        if chunks:
            counts[mode] = merge(chunks, out / f"ravens_robot_data_{mode}.h5")
            print(f"{mode}: {counts[mode]} scenes ({VIEWS_PER_SCENE * counts[mode]} images) -> "
                  f"{out / f'ravens_robot_data_{mode}.h5'}")
    return counts


if __name__ == "__main__":
    run_cli(main)
