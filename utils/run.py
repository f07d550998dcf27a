"""Run folders, argument records, seeding and device selection shared by every entry script."""
from __future__ import annotations

import argparse
import os
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from utils import distributed
from utils.errors import UserError

ARGS_FILE = "args.yaml"
# Run folders created by this process; a UserError before training leaves none behind
# (see :func:`remove_unused_run_dirs`, called by ``utils.errors.run_cli``).
CREATED_RUN_DIRS: list[Path] = []


def make_run_dir(log_path: str | os.PathLike, name: str | None = None) -> Path:
    """Create ``<log_path>/<ISO timestamp>[_<name>]/`` and return it (never reuses a folder)."""
    stamp = datetime.now().isoformat()
    run_dir = Path(log_path) / (f"{stamp}_{name}" if name else stamp)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise UserError(f"cannot create run folder {run_dir} ({err.strerror}); check --log_path") from err
    CREATED_RUN_DIRS.append(run_dir)
    return run_dir


def remove_unused_run_dirs() -> None:
    """Delete run folders made by this process that hold nothing but ``args.yaml``."""
    while CREATED_RUN_DIRS:
        run_dir = CREATED_RUN_DIRS.pop()
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {ARGS_FILE}:
            for path in run_dir.iterdir():
                path.unlink()
            run_dir.rmdir()


def save_args(run_dir: Path, args: argparse.Namespace | dict[str, Any]) -> None:
    """Write every flag with its resolved value to ``args.yaml`` (atomically: temp file + rename)."""
    values = args if isinstance(args, dict) else vars(args)
    tmp = Path(run_dir) / f".{ARGS_FILE}.tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(values, f, sort_keys=True)
    os.replace(tmp, Path(run_dir) / ARGS_FILE)


def load_args(run_dir: Path) -> dict[str, Any]:
    """Read the ``args.yaml`` of a run folder."""
    path = Path(run_dir) / ARGS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: --resume expects a run folder written by a training script")
    try:
        with open(path) as f:
            record = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not readable YAML ({type(err).__name__}); it was not written by a training script") from err
    if not isinstance(record, dict):
        raise UserError(f"{path} does not hold a record of flags; it was not written by a training script")
    return record


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """Names of the flags the user actually typed (as opposed to defaults)."""
    actions = parser._actions  # noqa: SLF001 - argparse has no public accessor
    saved = [action.default for action in actions]
    # set_defaults() values live in parser._defaults too and would otherwise count as typed.
    saved_parser_defaults = dict(parser._defaults)  # noqa: SLF001
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()  # noqa: SLF001
        typed, _ = parser.parse_known_args(argv)
    finally:
        for action, default in zip(actions, saved):
            action.default = default
        parser._defaults.update(saved_parser_defaults)  # noqa: SLF001
    return set(vars(typed))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; asking for CUDA without one is an error.

    Under torchrun each process gets its own GPU (``cuda:LOCAL_RANK``).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no GPU is visible; use --device cpu or auto")
    try:
        device = distributed.device_for_rank(torch.device(name))
    except RuntimeError as err:
        raise UserError(f"--device {name} is not a device name; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def str2bool(value: str | bool) -> bool:
    """argparse type for the seeds' ``--flag True/False`` booleans."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")
