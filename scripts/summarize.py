#!/usr/bin/env python
"""Collect every run's metrics.json under a folder into a table of mean +- std per configuration.

Example (from the repository root)::

    python scripts/summarize.py sweeps/dinosaur            # prints Markdown, writes summary.md/.csv
    python scripts/summarize.py logs --metrics fg_ari mbo_i
    python scripts/summarize.py runs/released --released   # imported released models (docs/released_models.md)

Runs are grouped by their recorded flags (``args.yaml``) except the seed, paths and flags that
do not change results (workers, device, resume bookkeeping); the table shows the flags that
differ between groups, the number of runs, their seeds and each metric's mean +- sample
standard deviation (``-`` for a single run).

With ``--released`` the table has one row per evaluation of an imported released checkpoint
(every ``metrics.json`` that records a ``released_format``): model folder, format, dataset,
protocol and metrics, with the authors' published figures beside them where known.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

DEFAULT_METRICS = ("fg_ari", "ari", "mbo_i", "mbo_c", "miou", "corloc", "mse")
# Flags that name or steer a run without changing its result.
NOT_CONFIG = {"seed", "log_path", "run_name", "resume", "checkpoint_path", "auto_resume", "num_workers", "device",
              "eval_batch_size", "checkpoint_every", "timeout", "max_steps"}


# Figures the authors published for a released file: (format, dataset) -> metric -> value.
PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    ("spot_stage2", "coco"): {"mbo_i": 34.9, "mbo_c": 44.8},  # SPOT README, --eval_permutations all
    ("spot_stage2", "voc"): {"mbo_i": 48.6, "mbo_c": 55.7},
}


def collect_released(root: Path) -> list[dict[str, Any]]:
    """One record per ``metrics.json`` under ``root`` written for an imported released checkpoint."""
    records = []
    for metrics_file in sorted(root.rglob("metrics.json")):
        try:
            record = json.loads(metrics_file.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"cannot read {metrics_file} ({type(err).__name__}); remove or fix it") from err
        if isinstance(record, dict) and record.get("released_format"):
            records.append({"folder": metrics_file.parent.relative_to(root).as_posix() or ".", **record})
    return records


def released_markdown(records: list[dict[str, Any]], metric_names: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """(Markdown table, CSV rows) of released-model evaluations, published figures in brackets."""
    header = ["model", "format", "dataset", "protocol", *metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for record in records:
        published = PUBLISHED.get((record["released_format"], record.get("dataset")), {})
        protocol = record.get("eval_protocol") or "-"
        if record.get("eval_permutations"):
            protocol += f", orderings {record['eval_permutations']}"
        row: dict[str, Any] = {"model": record["folder"], "format": record["released_format"],
                               "dataset": record.get("dataset"), "protocol": protocol}
        cells = [row["model"], row["format"], str(row["dataset"]), protocol]
        for name in metric_names:
            value = record.get(name)
            value = float(value) if isinstance(value, (int, float)) else math.nan
            row[name], row[f"{name}_published"] = value, published.get(name, math.nan)
            cell = "-" if math.isnan(value) else f"{value:.2f}"
            if name in published:
                cell += f" (published {published[name]:.1f})"
            cells.append(cell)
        rows.append(row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", rows


def collect(root: Path) -> list[dict[str, Any]]:
    """One record per run folder with both ``args.yaml`` and ``metrics.json``."""
    runs = []
    for metrics_file in sorted(root.rglob("metrics.json")):
        args_file = metrics_file.parent / "args.yaml"
        if not args_file.is_file():
            continue
        try:
            metrics = json.loads(metrics_file.read_text())
            args = yaml.safe_load(args_file.read_text())
        except (json.JSONDecodeError, yaml.YAMLError) as err:
            raise UserError(f"cannot read {metrics_file.parent} ({type(err).__name__}); remove or fix that run") from err
        config = {k: v for k, v in args.items() if k not in NOT_CONFIG}
        runs.append({"folder": metrics_file.parent, "seed": args.get("seed"), "config": config, "metrics": metrics})
    if all(run["config"].get("data_seed") in (None, run["seed"]) for run in runs):
        for run in runs:  # the data seed followed the seed (the default): it is part of the seed
            run["config"].pop("data_seed", None)
    return runs


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def summarize(runs: list[dict[str, Any]], metric_names: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one row per configuration with n, seeds and per-metric mean and std."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_key(run["config"]), []).append(run)
    configs = [group[0]["config"] for group in groups.values()]
    all_flags = sorted({k for c in configs for k in c})
    varying = [f for f in all_flags if len({json.dumps(c.get(f), default=str) for c in configs}) > 1]
    rows = []
    for group in groups.values():
        row: dict[str, Any] = {flag: group[0]["config"].get(flag) for flag in varying}
        row["n"] = len(group)
        row["seeds"] = " ".join(str(r["seed"]) for r in sorted(group, key=lambda r: str(r["seed"])))
        for name in metric_names:
            values = [float(r["metrics"][name]) for r in group
                      if isinstance(r["metrics"].get(name), (int, float)) and math.isfinite(r["metrics"][name])]
            row[f"{name}_mean"] = statistics.fmean(values) if values else math.nan
            row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        rows.append(row)
    rows.sort(key=lambda r: [str(r[f]) for f in varying])
    return varying, rows


def markdown(varying: list[str], rows: list[dict[str, Any]], metric_names: list[str]) -> str:
    header = [*varying, "n", "seeds", *metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[f]) for f in varying] + [str(row["n"]), row["seeds"]]
        for name in metric_names:
            mean, std = row[f"{name}_mean"], row[f"{name}_std"]
            digits = 4 if name == "mse" else 2
            cell = "-" if math.isnan(mean) else f"{mean:.{digits}f}"
            if not math.isnan(std):
                cell += f" ± {std:.{digits}f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("folder", help="a sweep folder, or any folder holding run folders")
    parser.add_argument("--metrics", nargs="+", default=None, help=f"columns (default: those of {DEFAULT_METRICS} present)")
    parser.add_argument("--out", default=None, help="prefix of the .md and .csv files (default: <folder>/summary)")
    parser.add_argument("--released", action="store_true",
                        help="one row per evaluated released model, with the published figures (default prefix: "
                             "<folder>/released)")
    args = parser.parse_args(argv)
    root = Path(args.folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass a sweep folder (scripts/sweep.py --out) or a --log_path")
    if args.released:
        return _released(root, args)
    runs = collect(root)
    if not runs:
        raise UserError(f"no finished run (args.yaml + metrics.json) under {root}; train or finish the runs first")
    present = {k for run in runs for k in run["metrics"]}
    metric_names = args.metrics or [m for m in DEFAULT_METRICS if m in present]
    unknown = [m for m in metric_names if m not in present]
    if unknown:
        raise UserError(f"no run has metric {unknown[0]!r}; available: {', '.join(sorted(present))}")
    varying, rows = summarize(runs, metric_names)
    table = markdown(varying, rows, metric_names)
    prefix = write_tables(Path(args.out) if args.out else root / "summary", table, rows)
    print(f"{len(runs)} runs in {len(rows)} configurations; wrote {prefix.with_suffix('.md')} and {prefix.with_suffix('.csv')}")
    return rows


def write_tables(prefix: Path, table: str, rows: list[dict[str, Any]]) -> Path:
    """Print the Markdown ``table`` and write it to ``prefix.md``, the ``rows`` to ``prefix.csv``."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".md").write_text(table)
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(table, end="")
    return prefix


def _released(root: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    records = collect_released(root)
    if not records:
        raise UserError(f"no evaluation of an imported released model under {root}; run scripts/evaluate_released.sh "
                        "or eval_spot.py on an imported run folder first")
    present = {k for record in records for k in record}
    metric_names = args.metrics or [m for m in DEFAULT_METRICS if m in present]
    table, rows = released_markdown(records, metric_names)
    prefix = write_tables(Path(args.out) if args.out else root / "released", table, rows)
    print(f"{len(rows)} evaluations of released models; wrote {prefix.with_suffix('.md')} and {prefix.with_suffix('.csv')}")
    return rows


if __name__ == "__main__":
    run_cli(main)
