"""Export MOVi-C / MOVi-E from TensorFlow Datasets into the PNG layout that ``--dataset movi`` reads.

Needs the optional ``tensorflow-datasets`` (and ``tensorflow``) packages and access to the public
bucket ``gs://kubric-public/tfds``. Example (from the repository root)::

    pip install tensorflow tensorflow-datasets   # optional extra, not in the pinned environment
    python scripts/download_movi.py --level c --split train --out_path MOVi
    python scripts/download_movi.py --level c --split validation --out_path MOVi
    python train_spot.py --dataset movi --data_path MOVi/c ...

Writes ``<out_path>/<level>/<split>/<video:08d>/<frame:08d>_image.png`` for every frame and, for
splits other than ``train``, ``<frame:08d>_mask_<id:02d>.png`` (binary, id 0 = background) for ids
``0..max_num_objs-1``: the layout of SPOT's ``download_movi.py``. Videos already exported completely
are skipped, so an interrupted export continues where it stopped. Without TensorFlow, copy an
export made on another machine (any machine with ``pip install tensorflow-datasets``) instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

# Entry scripts run from the repository root without installing the package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.logging import get_logger  # noqa: E402

log = get_logger()
PUBLIC_DATA_DIR = "gs://kubric-public/tfds"
NO_TFDS = (
    "scripts/download_movi.py needs tensorflow-datasets, which is an optional extra: run "
    "'pip install tensorflow tensorflow-datasets' (in a separate environment if you prefer) and rerun, "
    "or copy a MOVi export made elsewhere into the layout described in README ('MOVi')"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out_path", default="MOVi", help="output root; the level and split become subfolders")
    parser.add_argument("--level", default="e", choices=("c", "e"), help="MOVi-C or MOVi-E")
    parser.add_argument("--split", default="train", choices=("train", "validation", "test"))
    parser.add_argument("--version", default="1.0.0", help="TFDS dataset version")
    parser.add_argument("--image_size", type=int, default=128, help="selects the movi_<level>/<size>x<size> builder")
    parser.add_argument("--max_num_objs", type=int, default=25, help="mask PNGs per frame (segment ids 0..N-1)")
    parser.add_argument("--data_dir", default=PUBLIC_DATA_DIR, help="TFDS data_dir (the public bucket, or a local copy)")
    parser.add_argument("--max_videos", type=int, default=None, help="export only the first N videos")
    parser.add_argument("--overwrite", action="store_true", help="rewrite videos that are already exported")
    return parser


def expected_files(num_frames: int, write_masks: bool, max_num_objs: int) -> set[str]:
    names = {f"{t:08d}_image.png" for t in range(num_frames)}
    if write_masks:
        names |= {f"{t:08d}_mask_{n:02d}.png" for t in range(num_frames) for n in range(max_num_objs)}
    return names


def export_video(example: dict[str, Any], folder: Path, write_masks: bool, max_num_objs: int) -> None:
    """Write one TFDS MOVi record (``video`` [T,H,W,3] uint8, ``segmentations`` [T,H,W,1]) as PNGs."""
    video = np.asarray(example["video"])
    if video.ndim != 4 or video.shape[-1] != 3:
        raise UserError(f"expected a 'video' of shape [T, H, W, 3], got {video.shape}; is this a MOVi dataset?")
    folder.mkdir(parents=True, exist_ok=True)
    segmentations = np.asarray(example["segmentations"])[..., 0] if write_masks else None
    if segmentations is not None and segmentations.max(initial=0) >= max_num_objs:
        raise UserError(f"segment id {int(segmentations.max())} >= --max_num_objs {max_num_objs}; raise --max_num_objs")
    for t, frame in enumerate(video):
        save_png(frame.astype(np.uint8), folder / f"{t:08d}_image.png")
        if segmentations is None:
            continue
        for n in range(max_num_objs):
            save_png(np.where(segmentations[t] == n, 255, 0).astype(np.uint8), folder / f"{t:08d}_mask_{n:02d}.png")


def save_png(array: np.ndarray, path: Path) -> None:
    """Write a PNG atomically, so an interrupted export never leaves a truncated file behind
    that the completeness check (by file name) would accept."""
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def export(
    examples: Iterable[dict[str, Any]],
    out_dir: Path,
    write_masks: bool,
    max_num_objs: int = 25,
    max_videos: int | None = None,
    overwrite: bool = False,
) -> tuple[int, int]:
    """Export records in order as ``out_dir/<index:08d>/``; returns (written, skipped) video counts."""
    written = skipped = 0
    for index, example in enumerate(examples):
        if max_videos is not None and index >= max_videos:
            break
        folder = out_dir / f"{index:08d}"
        num_frames = len(example["video"])
        if not overwrite and folder.is_dir() and expected_files(num_frames, write_masks, max_num_objs) <= set(os.listdir(folder)):
            skipped += 1
            continue
        export_video(example, folder, write_masks, max_num_objs)
        written += 1
        if written % 100 == 0:
            log.info(f"{written} videos written to {out_dir}")
    return written, skipped


def load_tfds(args: argparse.Namespace) -> Iterable[dict[str, Any]]:
    """The split's records as numpy dicts, in TFDS order (files not shuffled)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise UserError(NO_TFDS) from err
    name = f"movi_{args.level}/{args.image_size}x{args.image_size}:{args.version}"
    dataset = tfds.load(name, data_dir=args.data_dir, split=args.split, shuffle_files=False)
    return tfds.as_numpy(dataset)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_path) / args.level / args.split
    examples = load_tfds(args)
    start = time.perf_counter()
    written, skipped = export(examples, out_dir, args.split != "train", args.max_num_objs, args.max_videos, args.overwrite)
    log.info(f"{written} videos written, {skipped} already complete, in {time.perf_counter() - start:.0f} s: {out_dir}")
    if written + skipped == 0:
        raise UserError(f"the TFDS split {args.split} of movi_{args.level} yielded no video")
    return {"out_dir": str(out_dir), "written": written, "skipped": skipped}


if __name__ == "__main__":
    run_cli(main)
