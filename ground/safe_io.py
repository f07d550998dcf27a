"""Reading torch and safetensors files given by the user without running code stored in them.

Part of the ground layer (torch, safetensors and :mod:`ground.errors` only), so that library code
(``models.encoders``, ``models.resnet``) and orchestration (``utils.checkpoint``) share one
reader. See docs/checkpoints.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import pickletools
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ground.errors import UserError

# Classes that known upstream checkpoint formats pickle and that are safe to rebuild (SlotCon/SlotFA,
# GNM and DINO training checkpoints store an argparse.Namespace). Nothing broader.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)

TRUST_FLAG = "--trust_checkpoint"


def numpy_array_globals() -> list[Any]:
    """What format-1 project checkpoints pickle beyond plain data: numpy's RNG state, a uint32 array.

    A numpy array of a plain dtype is data (rebuilt from its bytes; nothing is called), so readers
    of project checkpoints allow exactly these classes; ``utils.checkpoint.upgrade_checkpoint``
    then turns the array into a tensor. An array of Python objects would still be refused.
    """
    import numpy as np
    from numpy._core.multiarray import _reconstruct  # numpy >= 2 (pickles written with it name numpy._core)

    return [_reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType,
            (_reconstruct, "numpy.core.multiarray._reconstruct")]  # as numpy 1 wrote it


def read_torch_file(
    path: str | os.PathLike,
    *,
    trust: bool = False,
    what: str = "checkpoint",
    allow: Sequence[Any] = (),
) -> Any:
    """Read a torch file (or ``.safetensors``) onto the CPU without running code stored in it.

    Only tensors, plain containers, primitives, :data:`SAFE_GLOBALS` and ``allow`` (extra classes a
    caller knows its format needs) are unpickled. A file that needs more is refused with one line
    naming the offending globals and ``--trust_checkpoint``; with ``trust=True`` (the user's
    explicit opt-in for this run) it is then fully unpickled after a printed warning.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found; check the path")
    if path.suffix == ".safetensors":
        return read_safetensors(path, what=what)[0]
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of plain pickles before refusing them.
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            with torch.serialization.safe_globals([*SAFE_GLOBALS, *allow]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = unsafe_globals(path, err)
        if found is None:  # not a pickle at all: garbage or a truncated file
            raise UserError(f"{what} {path} is unreadable or truncated (not a torch file); use another file") from None
        if not trust:
            raise UserError(
                f"{what} {path} needs full unpickling, which can run code stored in the file (it pickles {found}); "
                f"pass {TRUST_FLAG} only if you trust where the file came from"
            ) from None
        warn_trusted(path, found)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err2:  # noqa: BLE001 - whatever the trusted pickle raises
            raise UserError(f"{what} {path} could not be unpickled even with {TRUST_FLAG} "
                            f"({type(err2).__name__}); use another file") from err2
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise UserError(f"{what} {path} is unreadable or truncated ({type(err).__name__}); use another file") from err


def warn_trusted(path: Path, found: str) -> None:
    """The warning printed whenever ``--trust_checkpoint`` makes a file be fully unpickled."""
    print(f"warning: {TRUST_FLAG}: fully unpickling {path} (it pickles {found}); code stored in the file runs now",
          file=sys.stderr, flush=True)


def unsafe_globals(path: Path, err: BaseException | None = None) -> str | None:
    """The globals (``module.name``) a pickle refers to beyond plain data, as one short phrase;
    None when ``path`` is not a readable pickle (garbage, or cut short).

    Read without unpickling: torch's own scan for zip checkpoints, else a scan of the pickle's
    opcodes (plain pickles, legacy torch files), else the name in torch's error message.
    """
    try:
        if zipfile.is_zipfile(path):
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        else:
            names = _pickle_globals(path)
    except Exception:  # noqa: BLE001 - not a (complete) pickle
        return None
    names = [n for n in names if n not in _allowed_names()]
    if not names and err is not None:
        names = re.findall(r"GLOBAL ([\w.]+)", str(err))
    if not names:
        return "objects other than tensors and plain data"
    unique = list(dict.fromkeys(names))
    more = f" and {len(unique) - 3} more" if len(unique) > 3 else ""
    return ", ".join(unique[:3]) + more


def _allowed_names() -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS}


# torch's weights-only unpickler rebuilds these itself (tensors, containers); anything else is foreign.
_TORCH_OWN = re.compile(r"^(torch\.|collections\.OrderedDict$|builtins\.(set|frozenset|bytearray|complex|slice)$|"
                        r"_codecs\.encode$)")


def _pickle_globals(path: Path, limit: int = 1 << 26) -> list[str]:
    """Globals named by the GLOBAL / STACK_GLOBAL opcodes of the first pickle in ``path``."""
    with open(path, "rb") as f:
        data = f.read(limit)
    names, strings = [], []
    memo: dict[int, Any] = {}
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            names.append(str(arg).replace(" ", "."))
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif opcode.name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
            strings.append(memo[arg])
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.append(f"{strings[-2]}.{strings[-1]}")
        if opcode.name == "STOP":
            break
    else:
        raise ValueError("the pickle has no end")  # cut short
    return [n for n in names if not _TORCH_OWN.match(n)]


def read_safetensors(path: str | os.PathLike, what: str = "weights file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` file; a damaged file is one line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found; check the path")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        raise UserError(f"{what} {path} is not a readable .safetensors file ({type(err).__name__}); "
                        "use another file") from err
    return tensors, metadata
