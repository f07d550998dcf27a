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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
