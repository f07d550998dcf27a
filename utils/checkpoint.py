"""Atomic checkpoints that store only what cannot be rebuilt, and strict, safe loading with clear errors.

A checkpoint holds only tensors, plain containers and primitives (checked when it is written), so
it loads with ``torch.load(weights_only=True)``; every file the user names is read through
:func:`ground.safe_io.read_torch_file`. What a checkpoint holds, format versions and upgrades: docs/checkpoints.md.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ground.errors import UserError
from ground.safe_io import numpy_array_globals, read_safetensors, read_torch_file

CHECKPOINT_NAME = "checkpoint.pt.tar"
# 1: numpy's RNG state stored as a numpy array (needs numpy classes to unpickle);
# 2: every RNG state as tensors and plain values (weights_only loads it). See docs/checkpoints.md.
FORMAT_VERSION = 2
# The safetensors metadata key holding an exported checkpoint's record (JSON), see scripts/export_weights.py.
EXPORT_METADATA_KEY = "checkpoint_record"
# The keys a checkpoint needs to rebuild its model, and those only a training checkpoint (resume) has.
MODEL_KEYS = ("format_version", "method", "model_config", "model")
TRAINING_KEYS = ("optimizer", "step", "rng")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder + rename).

    A crash while writing leaves the previous checkpoint intact. ``state`` must hold only
    tensors, plain containers and primitives (paths are stored as strings): anything else is a
    ``TypeError`` here rather than a file that cannot be loaded safely.
    """
    path = Path(path)
    state = plain({"format_version": FORMAT_VERSION, **state})
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(write_failure(path, err)) from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; checkpoints follow the umask like every other file
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
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


# Exact types: a subclass (numpy.float64 is a float, an enum member an int) pickles its own class.
_PRIMITIVES = (str, int, float, bool, type(None), torch.dtype, torch.device, torch.Size)


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with paths as strings, numpy scalars as Python numbers; a ``TypeError`` naming the
    first entry that is not a tensor, a plain container or a primitive (it would need unpickling)."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PRIMITIVES:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic) and not isinstance(obj, np.object_):
        return obj.item()
    if isinstance(obj, dict):  # an unchanged dict is kept as is (a state_dict keeps its OrderedDict metadata)
        items = {plain(k, f"{where} key"): plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        same = all(a is b for a, b in zip(items, obj)) and all(items[k] is obj[k] for k in obj)
        return obj if same else items
    if type(obj) in (list, tuple):
        values = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return obj if all(a is b for a, b in zip(values, obj)) else type(obj)(values)
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints hold only tensors, "
                    "plain containers and primitives (docs/checkpoints.md)")


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


# --- numpy RNG state as plain values (format 2) -----------------------------------------------------
def numpy_rng_to_plain(state: tuple) -> dict[str, Any]:
    """``np.random.get_state()`` as a tensor and plain values (no numpy class to unpickle)."""
    name, keys, pos, has_gauss, cached_gaussian = state
    return {"bit_generator": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def numpy_rng_from_plain(state: dict[str, Any]) -> tuple:
    """The inverse of :func:`numpy_rng_to_plain`, for ``np.random.set_state``."""
    return (state["bit_generator"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached_gaussian"])


# --- reading checkpoints -----------------------------------------------------------------------------
def load_checkpoint(
    path: str | os.PathLike,
    *,
    trust: bool = False,
    methods: Iterable[str] | None = None,
    training: bool = False,
    what: str = "checkpoint",
) -> dict[str, Any]:
    """Read, upgrade and check a checkpoint of this project (a ``.pt.tar`` file, its run folder or an
    exported ``.safetensors``). The one place where checkpoints are validated.

    Read without running code (``trust``: the user's ``--trust_checkpoint``). The file must be a
    checkpoint written by this project (format version at most :data:`FORMAT_VERSION`; older ones are
    upgraded by :func:`upgrade_checkpoint`) whose records rebuild its model exactly
    (``models.check_model_record``); ``methods``: the methods the caller accepts; ``training``: the
    caller resumes training, so the optimizer, step and RNG states must be there. ``what`` names
    the file in messages (e.g. ``"--teacher_checkpoint_path"``). Anything else is one line.
    """
    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        state: Any = _read_exported(path, what)
    else:
        state = read_torch_file(path, trust=trust, what=what, allow=numpy_array_globals())
    state = check_checkpoint(state, f"{what} {path}", methods=methods, training=training)
    return state


def check_checkpoint(state: Any, source: str, *, methods: Iterable[str] | None = None,
                     training: bool = False) -> dict[str, Any]:
    """Check (and upgrade) an object read from a checkpoint file; see :func:`load_checkpoint`."""
    if not isinstance(state, dict):
        raise UserError(f"{source} holds a {type(state).__name__}, not a checkpoint of this project's training "
                        "scripts (a dict with method, model_config and model)")
    missing = [k for k in MODEL_KEYS if k not in state]
    if "method" not in state or "model" not in state:
        found = ", ".join(sorted(map(str, state))[:6]) or "nothing"
        raise UserError(f"{source} is not a checkpoint written by this project's training scripts (it holds {found}; "
                        f"expected {', '.join(MODEL_KEYS)}); released checkpoints are imported with "
                        "scripts/import_checkpoint.py")
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}, which rebuilding its model needs; the file was edited "
                        "or cut short: use the run's original checkpoint")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UserError(f"{source} has format_version {version!r}, which no version of this code wrote; "
                        "use the run's original checkpoint")
    if version > FORMAT_VERSION:
        raise UserError(f"{source} has format version {version}, newer than this code reads ({FORMAT_VERSION}); "
                        "update the code to evaluate or resume it")
    state = upgrade_checkpoint(state)
    method = state["method"]
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise UserError(f"{source}: its 'model' entry is not a state dict of tensors; use the run's original "
                        "checkpoint")
    if methods is not None:
        accepted = list(methods)
        if method not in accepted:
            raise UserError(f"{source} is a {method} checkpoint; this needs a {' or '.join(accepted)} checkpoint")
    from models import check_model_record  # the registry knows what each method's model needs

    check_model_record(method, state["model_config"], state.get("encoder"), source)
    if training:
        lacking = [k for k in TRAINING_KEYS if k not in state]
        if lacking:
            raise UserError(f"{source} holds model weights only (no {', '.join(lacking)}): it can be evaluated but not "
                            f"resumed; resume from the run folder's {CHECKPOINT_NAME}")
    return state


def upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """Bring a checkpoint of an older format up to :data:`FORMAT_VERSION`, one version at a time.

    1 -> 2: numpy's RNG state (a uint32 array in ``rng`` and every ``rng_per_rank`` entry)
    becomes a tensor and plain values, and the model config gains the fields listed in
    ``models.FIELDS_ADDED_IN_FORMAT_2`` with the values that reproduce format 1's models.
    """
    state = dict(state)
    if state["format_version"] == 1:
        def upgrade_rng(rng: Any) -> Any:
            if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
                return {**rng, "numpy": numpy_rng_to_plain(rng["numpy"])}
            return rng

        from models import upgrade_model_config

        if isinstance(state.get("model_config"), dict):  # fields that format 1 had not: their old behaviour
            state["model_config"] = upgrade_model_config(str(state.get("method")), state["model_config"])
        if "rng" in state:
            state["rng"] = upgrade_rng(state["rng"])
        if state.get("rng_per_rank"):
            state["rng_per_rank"] = [upgrade_rng(r) for r in state["rng_per_rank"]]
        state["format_version"] = 2
    assert state["format_version"] == FORMAT_VERSION, state["format_version"]
    return state


# --- exported weights (.safetensors) -----------------------------------------------------------------
def export_record(state: dict[str, Any]) -> dict[str, Any]:
    """What an exported ``.safetensors`` file stores beside the weights (as JSON metadata)."""
    return {"format_version": FORMAT_VERSION, "method": state["method"], "model_config": state["model_config"],
            "encoder": state.get("encoder"), "step": state.get("step"), "args": state.get("args") or {}}


def write_exported(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a checkpoint's model weights and record to ``path`` (``.safetensors``), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    record = json.dumps(export_record(state), sort_keys=True, default=_json_default)
    # safetensors refuses tensors that share memory: each gets its own contiguous copy.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state["model"].items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={EXPORT_METADATA_KEY: record})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _read_exported(path: Path, what: str) -> dict[str, Any]:
    tensors, metadata = read_safetensors(path, what=what)
    if EXPORT_METADATA_KEY not in metadata:
        raise UserError(f"{what} {path} holds bare weights without this project's checkpoint record; export a run "
                        "with scripts/export_weights.py (an encoder's weights go to --encoder_weights)")
    try:
        record = json.loads(metadata[EXPORT_METADATA_KEY])
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {path} has a damaged checkpoint record ({err.msg}); export the run again") from None
    if not isinstance(record, dict):
        raise UserError(f"{what} {path} has a damaged checkpoint record; export the run again")
    return {**record, "model": tensors}
