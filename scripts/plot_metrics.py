#!/usr/bin/env python
"""Draw a run's evaluation curves from its metrics.jsonl into curves.png (PIL only, no matplotlib).

Example: python scripts/plot_metrics.py runs/quickstart/TIMESTAMP --metrics mse fg_ari mbo_i
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.logging import METRICS_JSONL  # noqa: E402
from utils.visualize import save_curves  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run", help="a run folder holding metrics.jsonl")
    parser.add_argument("--metrics", nargs="+", default=["mse", "fg_ari", "mbo_i"], help="one panel each")
    parser.add_argument("--out", default=None, help="PNG to write (default: <run>/curves.png)")
    args = parser.parse_args(argv)
    path = Path(args.run) / METRICS_JSONL
    if not path.is_file():
        raise UserError(f"{path} not found; pass a run folder written by a training script")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path} line {number} is not JSON; the file is damaged") from None
    if not records:
        raise UserError(f"{path} holds no evaluation yet; plot after the first --eval_every")
    unknown = [m for m in args.metrics if not any(m in r for r in records)]
    if unknown:
        known = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))} - {"step", "epoch"})
        raise UserError(f"{', '.join(unknown)} not in {path}; it records {', '.join(known)}")
    out = Path(args.out) if args.out else Path(args.run) / "curves.png"
    save_curves(out, records, args.metrics)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_cli(main)
