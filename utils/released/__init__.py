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
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from ground.errors import UserError
from ground.safe_io import read_torch_file


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
        assumed: settings the file does not record, with the value used (the official default);
            :func:`apply_settings` replaces them by the user's values. Keys are ``model_config``
            fields, ``encoder.<name>`` for the ViT's size settings (``encoder.num_heads``), or
            ``which_encoder`` for the ViT that made the features of a file that holds none.
    """

    format: str
    method: str
    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    encoder: dict[str, Any] | None = None
    encoder_state: dict[str, torch.Tensor] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    assumed: dict[str, Any] = field(default_factory=dict)


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
    from utils.released import adaslot, ftdinosaur, pixel, spot, video

    formats.extend(spot.FORMATS)
    formats.extend(adaslot.FORMATS)
    formats.extend(ftdinosaur.FORMATS)
    formats.extend(pixel.FORMATS)
    formats.extend(video.FORMATS)
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


# ---------------------------------------------------------------------------------------------
# Settings a released file does not record
# ---------------------------------------------------------------------------------------------


def _set(config: dict[str, Any], encoder: dict[str, Any] | None, key: str,
         value: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model config, encoder record) with the open setting ``key`` set to ``value`` (new dicts)."""
    if key == "which_encoder":  # the ViT behind the features of a file that holds none
        assert encoder is not None, key
        return config, {**encoder, "name": value}
    if key.startswith("encoder."):  # a size of the ViT stored in the file
        assert encoder is not None, key
        overrides = dict(encoder.get("model_overrides") or {})
        width = overrides.get("embed_dim")
        if key == "encoder.num_heads" and (not isinstance(value, int) or value < 1 or (width and width % value)):
            raise UserError(f"encoder.num_heads {value}: the ViT is {width} wide; pass a divisor of {width}")
        overrides[key.split(".", 1)[1]] = value
        return config, {**encoder, "model_overrides": overrides}
    return {**config, key: value}, encoder


def apply_settings(imported: Imported, settings: dict[str, Any], source: str = "file",
                   strict: bool = False) -> Imported:
    """Replace the assumed settings of ``imported`` by those given in ``settings``.

    Only settings the file leaves open (``imported.assumed``) are taken; with ``strict`` any
    other key is a ``UserError`` (``import_checkpoint.py --set``), otherwise it is ignored
    (command-line flags of which only some concern the file).
    """
    for key, value in settings.items():
        if key not in imported.assumed:
            if strict:
                open_ = ", ".join(sorted(imported.assumed)) or "none"
                raise UserError(f"--set {key}: {source} records this itself or it is not a setting of a "
                                f"{imported.method} model; settings the file leaves open: {open_}")
            continue
        imported.model_config, imported.encoder = _set(imported.model_config, imported.encoder, key, value)
        if key == "which_encoder":
            imported.args = {**imported.args, "which_encoder": value}
        imported.assumed[key] = value
    return imported


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["num_slots=6", "encoder.num_heads=2"]`` -> dict, values read as YAML scalars."""
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair}: expected NAME=VALUE, e.g. --set num_slots=7")
        try:
            settings[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set {pair}: {text!r} is not a plain value") from None
    return settings


# ---------------------------------------------------------------------------------------------
# Project-format checkpoints from an import
# ---------------------------------------------------------------------------------------------


def encoder_fingerprint_of_state(state: dict[str, torch.Tensor]) -> float:
    """What :func:`models.encoder_fingerprint` gives for a ViT loaded with ``state`` (sum of |w|)."""
    return float(sum(v.detach().double().abs().sum() for v in state.values() if v.is_floating_point()))


def write_encoder_weights(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write the released file's frozen ViT to ``path`` (``.safetensors``), atomically."""
    from safetensors.torch import save_file

    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: several processes (torchrun ranks) may write the same cache file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def encoder_cache_dir() -> Path:
    """Where encoder weights taken from released files evaluated in place are kept.

    ``$OCL_RELEASED_CACHE``, else ``$XDG_CACHE_HOME/object-centric-slots/released_encoders``
    (``~/.cache/...``). Files are named by a hash of their contents, so one released model's
    encoder is written once.
    """
    if os.environ.get("OCL_RELEASED_CACHE"):
        return Path(os.environ["OCL_RELEASED_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "object-centric-slots" / "released_encoders"


def _content_hash(state: dict[str, torch.Tensor]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:20]


def to_checkpoint(imported: Imported, source: str, encoder_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The project-format checkpoint dict of an import (what ``eval_spot.py`` and the rest read).

    Encoder weights carried by the file are written to ``encoder_path`` (a run folder's
    ``encoder.safetensors``), or to :func:`encoder_cache_dir` when None, and the encoder
    record points at them with their fingerprint.
    """
    encoder = dict(imported.encoder) if imported.encoder is not None else None
    if encoder is not None and imported.encoder_state is not None:
        if encoder_path is None:
            path = encoder_cache_dir() / f"{_content_hash(imported.encoder_state)}.safetensors"
            if not path.is_file():
                try:
                    write_encoder_weights(imported.encoder_state, path)
                except OSError as err:
                    raise UserError(f"cannot write the encoder weights of {source} to {path} ({err.strerror}); "
                                    "set OCL_RELEASED_CACHE to a writable folder, or use "
                                    "scripts/import_checkpoint.py") from err
        else:
            path = write_encoder_weights(imported.encoder_state, encoder_path)
        encoder.update(pretrained=True, weights_path=str(Path(path).resolve()),
                       fingerprint=encoder_fingerprint_of_state(imported.encoder_state))
    released = {"format": imported.format, "source": str(source), "notes": list(imported.notes),
                "assumed": dict(imported.assumed)}
    from utils.checkpoint import FORMAT_VERSION

    return {
        "format_version": FORMAT_VERSION,
        "method": imported.method,
        "model_config": dict(imported.model_config),
        "encoder": encoder,
        "model": dict(imported.model_state),
        "args": {**imported.args, "released_format": imported.format, "released_source": str(source)},
        "step": None,
        "released": released,
    }


def check_loads(checkpoint: dict[str, Any], source: str) -> None:
    """Build the imported model and load its state strictly (``UserError`` if it does not fit).

    An encoder that the file does not carry (loaded by name at evaluation) is built with random
    weights here, so that importing needs no download; its weights are not part of the check.
    """
    from models import build_model
    from ground.state_dict import describe_key_mismatch, model_state

    encoder = checkpoint["encoder"]
    named_only = encoder is not None and encoder.get("pretrained") and not encoder.get("weights_path")
    if named_only:
        encoder = {**encoder, "pretrained": False}
    model = build_model(checkpoint["method"], checkpoint["model_config"], encoder)
    expected = model_state(model)
    if named_only:
        expected = {k: v for k, v in expected.items() if not k.startswith("encoder.")}
    problem = describe_key_mismatch(checkpoint["model"], expected, loaded_name="import")
    if problem:
        raise UserError(f"{source}: the imported weights do not fit the model ({problem})")
    model.load_state_dict(checkpoint["model"], strict=False)


def checkpoint_settings(checkpoint: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Apply command-line ``settings`` to what a released file left open (no-op for project files).

    Used by the entry scripts after parsing their flags: the official scripts build the model
    from their flags, so flags such as ``--num_slots`` or ``--num_heads`` give what the file
    itself does not record.
    """
    released = checkpoint.get("released")
    if not released or not released.get("assumed"):
        return checkpoint
    taken = {k: v for k, v in settings.items() if k in released["assumed"] and v != released["assumed"][k]}
    if not taken:
        return checkpoint
    checkpoint = dict(checkpoint)
    config, encoder = checkpoint["model_config"], checkpoint.get("encoder")
    for key, value in taken.items():
        config, encoder = _set(config, encoder, key, value)
    checkpoint.update(model_config=config, encoder=encoder,
                      released={**released, "assumed": {**released["assumed"], **taken}})
    return checkpoint


def load_any_checkpoint(path: str | os.PathLike, *, trust: bool = False, fmt: str | None = None,
                        methods: Iterable[str] | None = None, what: str = "checkpoint") -> dict[str, Any]:
    """A project-format checkpoint dict from ``path``, whether the file is this project's or released.

    ``path`` is a checkpoint file, a run folder or an exported ``.safetensors``. The file is read
    without running code (``trust``: the user's ``--trust_checkpoint``). This project's checkpoints
    are checked by :func:`utils.checkpoint.check_checkpoint`; a released file is detected (the format
    is logged), converted in memory, and its encoder weights are kept in :func:`encoder_cache_dir`.
    Settings the released file does not record take the official defaults; the caller applies its
    flags with :func:`checkpoint_settings`.
    """
    from ground.safe_io import numpy_array_globals
    from utils.checkpoint import check_checkpoint, load_checkpoint, resolve_checkpoint
    from utils.logging import get_logger

    path = resolve_checkpoint(path)
    if path.suffix == ".safetensors":
        return load_checkpoint(path, trust=trust, methods=methods, what=what)
    obj = read_torch_file(path, trust=trust, what=what, allow=numpy_array_globals())
    if isinstance(obj, dict) and "method" in obj and "model" in obj:
        return check_checkpoint(obj, f"{what} {path}", methods=methods)  # this project's own checkpoint
    formats = known_formats()
    if fmt is None and not any(f.detect(obj) for f in formats):
        if not isinstance(obj, dict):  # a tensor, a list: say what it is
            check_checkpoint(obj, f"{what} {path}", methods=methods)
        found = ", ".join(sorted(map(str, obj))[:6]) or "nothing"
        raise UserError(f"{what} {path} is neither a checkpoint written by this project's training scripts (it holds "
                        f"{found}; expected format_version, method, model_config, model) nor a released checkpoint "
                        f"layout it can import (known formats: {', '.join(f.name for f in formats)})")
    found = find_format(obj, fmt, source=str(path))
    imported = found.convert(obj)
    log = get_logger()
    log.info(f"{path}: released checkpoint, format {found.name} ({found.description}); imported in memory")
    for note in imported.notes:
        log.info(f"  {note}")
    return check_checkpoint(to_checkpoint(imported, str(path)), f"{what} {path} (imported as {found.name})",
                            methods=methods)
