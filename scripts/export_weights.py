#!/usr/bin/env python
"""Export a run's model weights to a .safetensors file, with its configuration as JSON metadata.

    python scripts/export_weights.py logs/spot_coco/TIMESTAMP --out spot_coco.safetensors

The file holds the model's tensors (as the checkpoint stores them: frozen pretrained encoder
weights are rebuilt from the encoder record, not stored) and, under the metadata key
``checkpoint_record``, the method, model_config, encoder record, format_version, step and the
run's flags. Loading it runs no code, and eval_spot.py --checkpoint_path, predict.py --checkpoint
and train_spot_2.py --teacher_checkpoint_path read it as they read the run's checkpoint. It holds
no optimizer state, so it cannot be resumed. See docs/checkpoints.md.
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
from utils.checkpoint import load_checkpoint, resolve_checkpoint, write_exported  # noqa: E402
from utils.cli import add_trust_arg, one_line_errors  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("checkpoint", help="run folder or its checkpoint.pt.tar (or a ckpt_epoch_*.pth)")
    parser.add_argument("--out", required=True, help="the .safetensors file to write (replaced if it exists)")
    add_trust_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    one_line_errors(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out} must end in .safetensors")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it first")
    source = resolve_checkpoint(args.checkpoint)
    if source.resolve() == out.resolve():
        raise UserError(f"--out {out} is the checkpoint being exported; pass another file name")
    state = load_checkpoint(source, trust=args.trust_checkpoint)
    write_exported(out, state)
    print(f"wrote {len(state['model'])} tensors of a {state['method']} model (step {state.get('step')}) to {out}")
    return out


if __name__ == "__main__":
    run_cli(main)
