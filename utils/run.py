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

from utils.errors import UserError

ARGS_FILE = "args.yaml"


def make_run_dir(log_path: str | os.PathLike, name: str | None = None) -> Path:
    """Create ``<log_path>/<ISO timestamp>[_<name>]/`` and return it (never reuses a folder)."""
    stamp = datetime.now().isoformat()
    run_dir = Path(log_path) / (f"{stamp}_{name}" if name else stamp)
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise UserError(f"cannot create run folder {run_dir} ({err.strerror}); check --log_path") from err
    return run_dir


def save_args(run_dir: Path, args: argparse.Namespace) -> None:
    """Write every flag with its resolved value to ``args.yaml``."""
    with open(run_dir / ARGS_FILE, "w") as f:
        yaml.safe_dump(vars(args), f, sort_keys=True)


def load_args(run_dir: Path) -> dict[str, Any]:
    """Read the ``args.yaml`` of a run folder."""
    path = Path(run_dir) / ARGS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: --resume expects a run folder written by a training script")
    with open(path) as f:
        return yaml.safe_load(f)


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
    """``auto`` picks CUDA when available, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no GPU is visible; use --device cpu or auto")
    device = torch.device(name)
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
