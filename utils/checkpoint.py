"""Atomic checkpoints that store only what cannot be rebuilt, and strict loading with clear errors."""
from __future__ import annotations

import argparse
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from utils.errors import UserError

CHECKPOINT_NAME = "checkpoint.pt.tar"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder + rename).

    A crash while writing leaves the previous checkpoint intact.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(write_failure(path, err)) from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; checkpoints follow the umask like every other file
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error(err)
        if cause is not None:  # disk full, file size limit, I/O error: one line (torch wraps it in a RuntimeError)
            raise UserError(write_failure(path, cause)) from err
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _os_error(err: BaseException) -> OSError | None:
    """The operating-system error behind ``err`` (torch reports a failed write as a RuntimeError)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def write_failure(path: Path, err: OSError) -> str:
    """One line for a checkpoint that could not be written: which folder and device, why, and the fix."""
    import errno
    import resource
    import shutil

    folder = path.parent
    mount, device = _mount_of(folder)
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    previous = f"the previous checkpoint {path} is intact" if path.is_file() else "no earlier checkpoint exists"
    if err.errno == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        why = f"the file size limit of this process ({limit} bytes, ulimit -f) is too small"
        fix = "raise it (ulimit -f unlimited)"
    elif err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"no space left on {device} mounted at {mount} ({free})"
        fix = "free space there or train into a folder on another disk"
    else:
        why = f"{err.strerror} on {device} mounted at {mount}"
        fix = "make the folder writable or use another one"
    return (f"cannot write the checkpoint into {folder}: {why}; {previous}. {fix.capitalize()}, "
            f"then resume with --resume {folder}")


def _mount_of(folder: Path) -> tuple[Path, str]:
    """(mount point, device name) of the file system holding ``folder``."""
    try:
        current = folder.resolve()
        dev = current.stat().st_dev
        while current.parent != current and current.parent.stat().st_dev == dev:
            current = current.parent
    except OSError:
        return folder, "its device"
    device = "its device"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1 and fields[1] == str(current):
                    device = fields[0]  # the last entry for a mount point is the visible one
    except OSError:
        pass
    return current, device


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a process killed mid-write left in ``folder``; returns them."""
    stale = sorted(Path(folder).glob(f".{CHECKPOINT_NAME}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """Accept a checkpoint file or a run folder holding ``checkpoint.pt.tar``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass a run folder or its {CHECKPOINT_NAME}")
    return path


# Classes that known upstream checkpoint formats pickle and that are safe to rebuild
# (SlotCon/SlotFA and GNM store an argparse.Namespace). Nothing broader: see docs/released_models.md.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def read_torch_file(path: str | os.PathLike, *, trust: bool = False, what: str = "checkpoint") -> Any:
    """Read a torch file (or ``.safetensors``) onto the CPU without running code stored in it.

    Only tensors, plain containers, primitives and :data:`SAFE_GLOBALS` are unpickled. A file that
    needs more is refused with one line naming ``--trust_checkpoint``; with ``trust=True`` (the
    user's explicit opt-in for this run) it is fully unpickled after a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found; check the path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        try:
            with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not trust:
                raise UserError(
                    f"{what} {path} holds pickled objects that could run code when loaded "
                    f"({_first_line(err)}); pass --trust_checkpoint only if you trust where the file came from"
                ) from None
            import warnings

            warnings.warn(f"--trust_checkpoint: fully unpickling {path}; this can run code stored in the file",
                          stacklevel=2)
            return torch.load(path, map_location="cpu", weights_only=False)
    except UserError:
        raise
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise UserError(f"{what} {path} is unreadable or truncated ({type(err).__name__}); use another file") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU, refusing files that are not this project's checkpoints."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise UserError(f"checkpoint {path} is unreadable or truncated ({type(err).__name__}); use another one") from err
    if not isinstance(state, dict) or "model" not in state or "method" not in state:
        raise UserError(f"{path} is not a checkpoint written by this project's training scripts")
    return state


def _excluded_prefixes(model: nn.Module) -> list[str]:
    """Submodules whose frozen weights are rebuilt from the encoder identifier, not stored."""
    prefixes = []
    for name, module in model.named_modules():
        if getattr(module, "is_pretrained", False) and name:
            prefixes.append(name + ".")
    return prefixes


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict without frozen pretrained encoder weights.

    Trainable encoder parameters (fine-tuned blocks) are kept; random-init encoders are kept
    whole, since they cannot be rebuilt from a name.
    """
    prefixes = _excluded_prefixes(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        k: v
        for k, v in model.state_dict().items()
        if k in trainable or not any(k.startswith(p) for p in prefixes)
    }


def describe_key_mismatch(
    loaded: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    loaded_name: str = "file",
    ignore: Callable[[str], bool] = lambda key: False,
) -> str | None:
    """One line naming missing, unexpected and wrongly shaped keys (None when they all fit)."""
    missing = sorted(k for k in expected if k not in loaded and not ignore(k))
    unexpected = sorted(k for k in loaded if k not in expected and not ignore(k))
    wrong = [
        f"{k}: {loaded_name} {tuple(loaded[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(expected)
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} wrong shapes, e.g. {', '.join(wrong[:2])}")
    if missing:
        parts.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
    return "; ".join(parts) or None


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state`` (as written by :func:`model_state`), naming any mismatched keys."""
    expected = model_state(model)
    problem = describe_key_mismatch(state, expected, loaded_name="checkpoint")
    if problem:
        raise UserError(f"{source} does not match the model configuration ({problem}); it was trained with other model flags")
    model.load_state_dict(state, strict=False)  # frozen encoder keys are intentionally absent
