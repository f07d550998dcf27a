#!/usr/bin/env python
"""Export a SlotCon/SlotFA checkpoint's TEACHER ResNet as a torchvision-style state dict (no ``fc``).

    python scripts/export_torchvision.py output/<run>/ckpt_epoch_800.pth slotfa_r50_torchvision.pth
    # then: m = torchvision.models.resnet50(); m.load_state_dict(torch.load(p), strict=False)  # only fc missing

The file also loads strictly into ``models.resnet.ResNet(arch)`` (e.g. ``train_slotfa.py --pretrained_weights``).
"""
from __future__ import annotations

import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

from models.resnet import load_pretrain_state, teacher_backbone, to_torchvision  # noqa: E402
from utils.cli import add_trust_arg  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("checkpoint", help="pretraining checkpoint file or run folder")
    parser.add_argument("output", help="output .pth state dict")
    add_trust_arg(parser)
    args = parser.parse_args(argv)
    state = to_torchvision(teacher_backbone(load_pretrain_state(args.checkpoint, args.trust_checkpoint)))
    tmp = args.output + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, args.output)
    print(f"wrote {len(state)} tensors to {args.output}")


if __name__ == "__main__":
    run_cli(main)
