#!/usr/bin/env python
"""Cut decoded Sketchy frames into the processed layout that --dataset sketchy reads (docs/data.md).

Example: python scripts/prepare_sketchy.py --frames data/sketchy/frames --out data/sketchy/processed

DeepMind's Sketchy episode records can only be decoded with DeepMind's own reader; decode each
record file into one folder of PNG frames first, named ``<timestep>_fl.png`` (camera
basket_front_left) and ``<timestep>_fr.png`` (basket_front_right), 600 x 960 pixels. This script
then does what the published preparation does: the record folders, sorted by name, are split
10 % valid (the first ones), 10 % test (the next), the rest train; episodes are numbered across
train, valid and test in that order; each frame is pre-cropped per camera to 448 x 672 and cut
into the central 448 x 448 square (``full``) and six overlapping 352 x 352 crops (``c0``-``c5``:
top row left/middle/right, then bottom row), each resized bilinearly to 128 x 128.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

FRAME_SIZE = (600, 960)  # H, W of a decoded camera frame
# Pre-crop to 448 x 672 (rows per camera, the same columns for both).
PRE_CROP_ROWS = {"fl": (71, 600 - 81), "fr": (91, 600 - 61)}
PRE_CROP_COLS = (144, 960 - 144)
CROP, SIDE, OUT = 352, 448, 128
CROP_ROWS = ((0, CROP), (SIDE - CROP, SIDE))  # top, bottom
CROP_COLS = ((0, CROP), (160, 160 + CROP), (320, 320 + CROP))  # left, middle, right of the 672-wide frame
FRAME_NAME = re.compile(r"^(\d+)_(fl|fr)\.png$")


def views(frame: Image.Image, camera: str) -> dict[str, Image.Image]:
    """The seven 128 x 128 views of one decoded frame: ``full`` and ``c0``-``c5``."""
    top, bottom = PRE_CROP_ROWS[camera]
    left, right = PRE_CROP_COLS
    pre = frame.crop((left, top, right, bottom))  # 672 x 448 (W x H)
    out = {"full": pre.crop((112, 0, 112 + SIDE, SIDE)).resize((OUT, OUT), Image.BILINEAR)}
    index = 0
    for r0, r1 in CROP_ROWS:
        for c0, c1 in CROP_COLS:
            out[f"c{index}"] = pre.crop((c0, r0, c1, r1)).resize((OUT, OUT), Image.BILINEAR)
            index += 1
    return out


def split_records(records: list[Path]) -> dict[str, list[Path]]:
    """valid = the first tenth of the sorted records, test = the next tenth, train = the rest."""
    n_eval = len(records) // 10
    return {"train": records[2 * n_eval:], "valid": records[:n_eval], "test": records[n_eval:2 * n_eval]}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--frames", required=True, help="one folder of decoded PNG frames per record file")
    parser.add_argument("--out", required=True, help="the processed/ folder to create (must not exist)")
    args = parser.parse_args(argv)
    frames, out = Path(args.frames), Path(args.out)
    if not frames.is_dir():
        raise UserError(f"--frames {frames} is not a folder; decode the Sketchy records into it first")
    records = sorted(p for p in frames.iterdir() if p.is_dir())
    if len(records) < 10:
        raise UserError(f"{frames} holds {len(records)} record folders; the 10 % valid/test split needs at least 10")
    if out.exists():
        raise UserError(f"--out {out} exists; give a new folder (the preparation never overwrites)")
    episode = 0
    for mode, chosen in split_records(records).items():  # train, valid, test: episodes numbered across them
        for record in chosen:
            pairs = sorted((int(m.group(1)), m.group(2), p) for p in record.iterdir()
                           if (m := FRAME_NAME.match(p.name)))
            if not pairs:
                raise UserError(f"{record} holds no <timestep>_fl.png / <timestep>_fr.png frames")
            folder = out / mode / f"ep{episode:06d}"
            folder.mkdir(parents=True)
            for step, camera, path in pairs:
                with Image.open(path) as image:
                    frame = image.convert("RGB")
                if (frame.height, frame.width) != FRAME_SIZE:
                    raise UserError(f"{path} is {frame.width} x {frame.height}; Sketchy frames are 960 x 600")
                for view, picture in views(frame, camera).items():
                    picture.save(folder / f"ep{episode:06d}_t{step:03d}_{camera}_{view}.png")
            episode += 1
    print(f"wrote {episode} episodes to {out}")
    return out


if __name__ == "__main__":
    run_cli(main)
