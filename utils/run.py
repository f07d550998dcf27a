"""Run folders, argument records, seeding and device selection shared by every entry script."""
from __future__ import annotations

import argparse
import atexit
import fcntl
import json
import os
import random
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ground.errors import UserError
from utils import distributed

ARGS_FILE = "args.yaml"
TENSORBOARD_PREFIX = "events.out.tfevents."
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
    """Delete run folders made by this process that no training step has used yet.

    Such a folder holds ``args.yaml``, its lock and perhaps an empty TensorBoard file (a data
    error met by the first batch, e.g. a corrupt image); a folder with anything else is kept.
    """
    while CREATED_RUN_DIRS:
        run_dir = CREATED_RUN_DIRS.pop()
        release_run_locks(run_dir)
        if run_dir.is_dir() and all(p.name in (ARGS_FILE, LOCK_FILE) or p.name.startswith(TENSORBOARD_PREFIX)
                                    for p in run_dir.iterdir()):
            for path in run_dir.iterdir():
                path.unlink()
            run_dir.rmdir()


def keep_run_dir(run_dir: Path) -> None:
    """Training has used ``run_dir`` (a step was taken): it is never removed as unused."""
    resolved = Path(run_dir).resolve()
    CREATED_RUN_DIRS[:] = [p for p in CREATED_RUN_DIRS if p.resolve() != resolved]


# --- one writer per run folder ---------------------------------------------------------------
LOCK_FILE = "writer.lock"
# Run folders this process writes (path -> open lock file descriptor holding an flock).
_HELD_LOCKS: dict[Path, int] = {}


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused PID is not taken for the lock holder."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive_here(holder: dict[str, Any]) -> bool:
    """Whether the process a lock record names still runs (only answerable on its own host)."""
    try:
        pid = int(holder.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    recorded, now = holder.get("pid_start"), _process_start(pid)
    return not (recorded and now and recorded != now)


def _describe(holder: dict[str, Any]) -> str:
    started = f", started {holder['started']}" if holder.get("started") else ""
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}{started}"


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        record = json.loads(data.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"unreadable": True}
    return record if isinstance(record, dict) else {"unreadable": True}


def acquire_run_lock(run_dir: str | os.PathLike) -> None:
    """Make this process the one writer of ``run_dir`` (``writer.lock``, held until training ends or exit).

    The lock file names host, PID and start time, and the process keeps an ``flock`` on it, which
    the kernel drops when the process dies however it ends. A second writer is refused with one
    line naming the first; a lock left by a process that no longer runs is taken over with a
    notice. Where the file system has no ``flock``, a lock of a dead process on this host is taken
    over and one from another host is refused (delete it once that process is gone). Calling it
    again for a folder this process holds is a no-op. See docs/distributed.md.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD_LOCKS:
        return
    path = run_dir / LOCK_FILE
    if not os.access(run_dir, os.W_OK):
        raise UserError(f"run folder {run_dir} is read-only; a run needs a writable folder: copy it somewhere "
                        "writable (cp -r) and resume the copy")
    for _ in range(5):  # retried only when the file was replaced between open and lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise UserError(
                f"cannot write in run folder {run_dir} ({err.strerror}); a run needs a writable folder: "
                "copy it somewhere writable (cp -r) and resume the copy"
            ) from err
        try:
            holder = _lock_or_describe(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if holder is None:  # the file was unlinked by its releasing owner after we opened it: retry
            os.close(fd)
            continue
        if holder and not holder.get("unreadable"):
            from utils.logging import get_logger  # local: keeps TensorBoard out of light importers

            get_logger().warning(f"notice: took over the lock of run folder {run_dir} from {_describe(holder)}, "
                                 "which no longer runs (it was killed or crashed)")
        record = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                  "started": datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        _HELD_LOCKS[run_dir] = fd
        return
    raise UserError(f"could not take the lock {path}: other processes keep replacing it; start one writer at a time")


def _lock_or_describe(fd: int, path: Path) -> dict[str, Any] | None:
    """Lock ``fd``; returns the previous holder's record ({} when none), None when ``path`` moved on.

    Raises the one-line refusal when a live process holds the lock.
    """
    holder = _read_holder(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flocked = True
    except BlockingIOError:
        if not holder:  # the holder has just created the file: give it a moment to write its name
            time.sleep(0.2)
            holder = _read_holder(fd)
        raise UserError(_refusal(path, holder)) from None
    except OSError:  # no flock on this file system: fall back to the recorded PID
        flocked = False
    try:
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            return None
    except FileNotFoundError:
        return None
    holder = _read_holder(fd)  # as it is now that we hold the lock
    if not flocked and holder and not holder.get("unreadable"):
        if holder.get("host") != socket.gethostname():
            raise UserError(_refusal(path, holder, remote=True))
        if _alive_here(holder) and int(holder.get("pid", 0)) != os.getpid():
            raise UserError(_refusal(path, holder))
    return holder


def _refusal(path: Path, holder: dict[str, Any], remote: bool = False) -> str:
    who = _describe(holder) if holder and not holder.get("unreadable") else "another process"
    how = (f"if no process on host {holder.get('host')} writes there any more, delete {path} and run again"
           if remote else "wait for it to finish or stop it, then run again (the run resumes from its checkpoint)")
    return f"run folder {path.parent} is being written by {who}; one run folder takes one writer: {how}"


@atexit.register
def release_run_locks(run_dir: str | os.PathLike | None = None) -> None:
    """Give up the lock of ``run_dir`` (every held lock when None, as at exit): delete ``writer.lock``, unlock."""
    targets = list(_HELD_LOCKS) if run_dir is None else [Path(run_dir).resolve()]
    for folder in targets:
        fd = _HELD_LOCKS.pop(folder, None)
        if fd is None:
            continue
        try:
            path = folder / LOCK_FILE
            if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
        except OSError:
            pass  # a read-only or vanished folder: the kernel still drops the flock below
        finally:
            os.close(fd)


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
    """Seed Python, NumPy and torch (CPU and CUDA); a seed outside NumPy's range is a :class:`UserError`."""
    if not 0 <= seed <= 2**32 - 1:
        raise UserError(f"--seed {seed} must be between 0 and {2**32 - 1}")
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
