"""Import of released checkpoints written by the official code bases (see docs/released_models.md).

A :class:`ReleasedFormat` recognises an object read from a file (safely, through
:func:`utils.checkpoint.read_torch_file`) and converts it into an :class:`Imported` record: this
project's method name, model config, model state, encoder record and the flags to store in the
run folder's ``args.yaml``. Each family of formats lives in a module of this package and exposes a
``FORMATS`` list; :data:`FORMATS` below joins them in detection order (the first whose ``detect``
accepts the object wins, so more specific formats come first).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from utils.checkpoint import read_torch_file
from utils.errors import UserError


@dataclass
class Imported:
    """A released checkpoint mapped onto this project's model.

    Attributes:
        format: the name of the format it was read as.
        method: this project's method name (a key of ``models.METHODS``).
        model_config: the method's config, as a dict (``dataclasses.asdict`` of its Config).
        model_state: the state dict this project's model loads (as ``utils.checkpoint.model_state``
            would write it: frozen pretrained encoder weights left out).
        encoder: the encoder record stored in project checkpoints (None for pixel models).
        encoder_state: frozen encoder weights that the released file carries; the importer writes
            them to a file in the run folder and points ``encoder["weights_path"]`` at it.
        args: flags to record in the run folder's ``args.yaml`` (dataset, image size, ...).
        notes: one-line remarks shown to the user (what was renamed, dropped, assumed).
    """

    format: str
    method: str
    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    encoder: dict[str, Any] | None = None
    encoder_state: dict[str, torch.Tensor] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReleasedFormat:
    """One released checkpoint layout: how to recognise it and how to convert it."""

    name: str  # what --format takes
    description: str  # one line: whose code writes it, e.g. "SPOT stage 1 (gkakogeorgiou/spot train_spot.py)"
    detect: Callable[[Any], bool]  # (object read from the file) -> whether it has this layout
    convert: Callable[[Any], Imported]  # (object read from the file) -> the mapped model


def _all_formats() -> list[ReleasedFormat]:
    # Each family module appends its formats here (import inside, so one family's imports load
    # only when released files are read).
    formats: list[ReleasedFormat] = []
    from utils.released import ftdinosaur

    formats.extend(ftdinosaur.FORMATS)
    return formats


def known_formats() -> list[ReleasedFormat]:
    """Every known format, in detection order."""
    return _all_formats()


def find_format(obj: Any, name: str | None = None, source: str = "file") -> ReleasedFormat:
    """The format named ``name``, or the first that recognises ``obj``; one-line error otherwise."""
    formats = known_formats()
    names = ", ".join(f.name for f in formats)
    if name is not None:
        for fmt in formats:
            if fmt.name == name:
                if not fmt.detect(obj):
                    raise UserError(f"{source} does not have the layout of format {name!r}; "
                                    f"drop --format to detect it (known: {names})")
                return fmt
        raise UserError(f"unknown format {name!r}; known formats: {names}")
    for fmt in formats:
        if fmt.detect(obj):
            return fmt
    raise UserError(f"{source} is not a checkpoint layout this project can import; known formats: {names}")


def read_released(path: str | os.PathLike, name: str | None = None, trust: bool = False) -> Imported:
    """Read ``path`` safely, detect (or check) its format and convert it."""
    obj = read_torch_file(path, trust=trust, what="released checkpoint")
    return find_format(obj, name, source=str(path)).convert(obj)
