"""Convert the FBMS-59 release into the layout ``eval_smtc.py --dataset fbms`` reads.

Example (from the repository root)::

    python scripts/prepare_fbms.py --fbms_path /data/FBMS --output_path /data/FBMS_clean

Reads ``<fbms_path>/Testset/<seq>/*.jpg`` (and ``Trainingset/`` with ``--split all``) and each
sequence's ``GroundTruth/`` masks; writes ``JPEGImages/<seq>/<NNNNN>.jpg`` and 0/255 masks
``Annotations/<seq>/<NNNNN>.png`` (all objects merged into one foreground). Frames and masks are
both named by the frame number in their release file names, so each mask lands on its own frame
whatever number the sequence's frames start from. See docs/video_evaluation.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.fbms import TEST_SEQUENCES, foreground_from_grey, frame_number, ground_truth_files  # noqa: E402
from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--fbms_path", required=True, help="the release folder holding Testset/ (and Trainingset/)")
    parser.add_argument("--output_path", required=True, help="new folder to write (must be absent or empty)")
    parser.add_argument("--split", choices=("test", "all"), default="test",
                        help="test: the 30 Testset sequences; all: Trainingset too")
    return parser.parse_args(argv)


def _numbered(paths: list[Path], seq: str, what: str) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for path in paths:
        try:
            n = frame_number(path.stem, seq)
        except ValueError:
            raise UserError(f"{path}: no frame number in the file name") from None
        if n in out:
            raise UserError(f"{out[n].name} and {path.name} are both {what} {n} of {seq}")
        out[n] = path
    return out


def prepare_sequence(src: Path, seq: str, out: Path) -> int:
    """Copy one sequence's frames and convert its masks; returns the number of masks."""
    frames = _numbered(sorted(src.glob("*.jpg")), seq, "frame")
    if not frames:
        raise UserError(f"no .jpg frames in {src}")
    gt_dir = src / "GroundTruth"
    if not gt_dir.is_dir():
        raise UserError(f"{gt_dir} not found; --fbms_path must be the FBMS release folder")
    files, from_ppm = ground_truth_files(gt_dir)
    masks = _numbered(files, seq, "mask")
    if not masks:
        raise UserError(f"no .pgm/.ppm masks in {gt_dir}")
    lost = sorted(set(masks) - set(frames))
    if lost:
        raise UserError(f"mask of frame {lost[0]} of {seq} ({masks[lost[0]].name}) has no frame with that number")
    (out / "JPEGImages" / seq).mkdir(parents=True)
    (out / "Annotations" / seq).mkdir(parents=True)
    for n, path in frames.items():
        shutil.copy2(path, out / "JPEGImages" / seq / f"{n:05d}.jpg")
    for n, path in masks.items():
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
        fg = foreground_from_grey(grey, from_ppm, seq)
        Image.fromarray(fg.astype(np.uint8) * 255).save(out / "Annotations" / seq / f"{n:05d}.png")
    return len(masks)


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    src, out = Path(args.fbms_path), Path(args.output_path)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new --output_path")
    jobs = [(src / "Testset" / s, s) for s in TEST_SEQUENCES]
    if args.split == "all":
        train = src / "Trainingset"
        if not train.is_dir():
            raise UserError(f"{train} not found; --split all needs the Trainingset folder")
        jobs += [(p, p.name) for p in sorted(train.iterdir()) if p.is_dir()]
    missing = [str(p) for p, _ in jobs if not p.is_dir()]
    if missing:
        raise UserError(f"{len(missing)} sequence folders missing, e.g. {missing[0]}; --fbms_path must be the FBMS "
                        "release folder holding Testset/<seq>/")
    counts = {seq: prepare_sequence(path, seq, out) for path, seq in jobs}
    print(f"wrote {len(counts)} sequences ({sum(counts.values())} annotated frames) to {out}")
    return counts


if __name__ == "__main__":
    run_cli(main)
