#!/usr/bin/env python
"""Turn a released checkpoint of an official code base into an ordinary run folder of this project.

Example (SPOT's released COCO model)::

    python scripts/import_checkpoint.py spot_coco/checkpoint.pt.tar --out runs/spot_coco_released
    python eval_spot.py --dataset coco --data_path /path/to/COCO2017 --eval_permutations all \
        --checkpoint_path runs/spot_coco_released

The format is detected from the file (``--format`` checks one); the run folder gets ``args.yaml``,
``checkpoint.pt.tar`` in this project's format and, when the file carries its frozen ViT,
``encoder.safetensors`` (recorded with its fingerprint, so no separate download is needed).
Settings the file does not record (e.g. SPOT's number of slots) take the official defaults;
``--set NAME=VALUE`` replaces them. The imported model is built and loaded once before anything
is written. Formats and their models: docs/released_models.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

ENCODER_FILE = "encoder.safetensors"
# The evaluation script of each kind of model (image models: eval_spot.py).
EVAL_HINTS = {
    "image": "python eval_spot.py --dataset DATASET --data_path PATH --checkpoint_path {out}",
    "smtc": "python eval_smtc.py --task propagation --davis_path DAVIS --checkpoint_path {out}",
    "slotcon": "python eval_slotfa.py probe --checkpoint {out} --train-dir TRAIN --val-dir VAL",
    "slotfa": "python eval_slotfa.py probe --checkpoint {out} --train-dir TRAIN --val-dir VAL",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("path", help="the released checkpoint file")
    parser.add_argument("--out", required=True, help="run folder to write (must not hold a checkpoint yet)")
    parser.add_argument("--format", default=None, help="check that the file has this format (default: detect it)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting the file does not record, e.g. --set num_slots=6 (repeatable)")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="fully unpickle the file (can run code in it; only for files you trust)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from ground.safe_io import read_torch_file
    from utils.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from utils.logging import get_logger
    from utils.released import apply_settings, check_loads, find_format, parse_settings, to_checkpoint
    from utils.run import save_args

    log = get_logger()
    out = Path(args.out)
    if (out / CHECKPOINT_NAME).exists():
        raise UserError(f"{out / CHECKPOINT_NAME} exists; pass a new --out folder")
    settings = parse_settings(args.settings)
    obj = read_torch_file(args.path, trust=args.trust_checkpoint, what="released checkpoint")
    fmt = find_format(obj, args.format, source=str(args.path))
    print(f"detected format: {fmt.name} ({fmt.description})")
    imported = apply_settings(fmt.convert(obj), settings, source=str(args.path), strict=True)
    del obj
    for note in imported.notes:
        print(f"  note: {note}")

    out.mkdir(parents=True, exist_ok=True)
    encoder_path = out / ENCODER_FILE if imported.encoder_state is not None else None
    checkpoint = to_checkpoint(imported, str(Path(args.path).resolve()), encoder_path=encoder_path)
    try:  # build and load once: a setting that does not fit fails here, not at evaluation
        check_loads(checkpoint, str(args.path))
    except (UserError, RuntimeError, ValueError) as err:  # the last two: a setting the model's own checks reject
        if encoder_path is not None:
            encoder_path.unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()
        if isinstance(err, UserError):
            raise
        raise UserError(f"the imported model cannot be built with these settings ({str(err).splitlines()[0][:160]}); "
                        "check --set values") from err
    save_checkpoint(out / CHECKPOINT_NAME, checkpoint)
    save_args(out, {**checkpoint["args"], "method": checkpoint["method"]})
    written = [out / CHECKPOINT_NAME, out / "args.yaml"] + ([encoder_path] if encoder_path else [])
    log.info(f"wrote {', '.join(str(p) for p in written)}")
    print("evaluate with: " + EVAL_HINTS.get(checkpoint["method"], EVAL_HINTS["image"]).format(out=out))
    return checkpoint


if __name__ == "__main__":
    run_cli(main)
