#!/usr/bin/env python
"""Convert a SlotCon/SlotFA checkpoint's TEACHER ResNet to detectron2's pickle format.

    python scripts/convert_to_detectron2.py output/<run>/ckpt_epoch_800.pth slotfa_r50.pkl

Accepts this project's checkpoints (a file or run folder) and upstream ones (``module.encoder_k.*``).
Use the weights with an RGB config (pixel mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375],
STRIDE_IN_1X1 False), e.g. upstream's COCO_R_50_FPN_1x_SlotCon.yaml; see README.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from models.resnet import load_pretrain_state, teacher_backbone, to_detectron2  # noqa: E402
from utils.cli import add_trust_arg  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("checkpoint", help="pretraining checkpoint file or run folder")
    parser.add_argument("output", help="output .pkl for detectron2's MODEL.WEIGHTS")
    add_trust_arg(parser)
    args = parser.parse_args(argv)
    payload = to_detectron2(teacher_backbone(load_pretrain_state(args.checkpoint, args.trust_checkpoint)))
    tmp = args.output + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    os.replace(tmp, args.output)
    print(f"wrote {len(payload['model'])} tensors to {args.output}")


if __name__ == "__main__":
    run_cli(main)
