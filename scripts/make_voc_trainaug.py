"""Write VOC 2012's ``trainaug`` id list (10,582 ids) into ``ImageSets/Segmentation/trainaug.txt``.

The list is (SBD train + SBD val + VOC train) - VOC val, from the SBD download's
``benchmark_RELEASE`` folder, or the ``SegmentationClassAug/*.png`` ids minus VOC val when that
folder is in ``VOC2012``. Training finds the list by itself when ``--sbd_path`` is given; this
script writes it once so later runs need neither. Example (from the repository root)::

    python scripts/make_voc_trainaug.py --data_path /data/VOCdevkit --sbd_path /data/benchmark_RELEASE
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

from datasets.voc import find_voc_root, write_trainaug  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--data_path", required=True, help="VOCdevkit/VOC2012 or a folder holding it")
    parser.add_argument("--sbd_path", default=None, help="SBD benchmark_RELEASE folder (else SegmentationClassAug is used)")
    parser.add_argument("--out", default=None, help="output file (default: ImageSets/Segmentation/trainaug.txt)")
    args = parser.parse_args(argv)
    voc = find_voc_root(args.data_path)
    return write_trainaug(voc, args.sbd_path, Path(args.out) if args.out else None)


if __name__ == "__main__":
    run_cli(main)
