"""Run logging: console lines, TensorBoard scalars/images and ``metrics.jsonl``."""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"


def get_logger(name: str = "ocl") -> logging.Logger:
    """A console logger with a short format, configured once.

    Library code logs through :func:`ground.log.get_logger` (the same logger, no handlers);
    :func:`utils.errors.run_cli` calls this before an entry script runs, so their messages reach
    the console too.
    """
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write one JSON document (NaN becomes null so every JSON reader accepts it).

    Atomically (temporary file + rename): an interrupted write leaves the previous file or none,
    never half a document.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump({k: _jsonable(v) for k, v in record.items()}, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class RunLogger:
    """TensorBoard writer plus an append-only ``metrics.jsonl`` in the run folder."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        # Imported here: this module also configures the console of light scripts (run_cli).
        from torch.utils.tensorboard import SummaryWriter

        from ground.errors import UserError

        self.run_dir = run_dir
        _quiet_tensorboard_thread()
        # On resume, purge_step hides events logged after the checkpoint by the interrupted run.
        try:
            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)
        except OSError as err:
            raise UserError(f"cannot write TensorBoard events into {run_dir} ({err.strerror}); "
                            "a run needs a writable folder with free space") from err

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def eval_record(self, record: dict[str, Any]) -> None:
        """Append one evaluation (step, epoch, metrics) to metrics.jsonl."""
        with open(self.run_dir / METRICS_JSONL, "a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")

    def close(self) -> None:
        self.writer.close()


def _quiet_tensorboard_thread() -> None:
    """TensorBoard writes events from a background thread, which prints its own traceback when the
    folder is not writable; the main thread meets the same error right after and reports it as one
    line (see ``RunLogger``), so the thread's copy is not printed."""
    previous = threading.excepthook
    if getattr(previous, "quiet_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboard"):
            return
        previous(args)

    hook.quiet_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def truncate_metrics_jsonl(run_dir: Path, step: int) -> None:
    """Drop evaluations after ``step`` (and a half-written last line) from ``metrics.jsonl``.

    A run killed after an evaluation but before its checkpoint evaluates again on resume; this
    keeps one line per evaluation. The file is replaced atomically.
    """
    path = Path(run_dir) / METRICS_JSONL
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # cut short by a crash
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def check_wandb() -> None:
    """Raise ``UserError`` (before any run folder exists) when the ``wandb`` package is missing."""
    import importlib.util

    from ground.errors import UserError

    if importlib.util.find_spec("wandb") is None:
        raise UserError("--log_wandb needs the wandb package (pip install wandb, then wandb login); "
                        "drop the flag to log to TensorBoard only")


def start_wandb(run_dir: Path, config: dict[str, Any], project: str, name: str | None, notes: str | None) -> Any:
    """Mirror this run's TensorBoard scalars and images to Weights & Biases; returns the wandb run.

    Must be called before the TensorBoard writer is created (``sync_tensorboard`` patches it).
    """
    check_wandb()
    import wandb

    return wandb.init(project=project, name=name, notes=notes, dir=str(run_dir), config=config, sync_tensorboard=True)
