"""Helpers for the tests that import the official code bases' checkpoints (tests/fixtures/official/).

``replay`` feeds the random draws the official forward recorded back into this project's model,
in order, whichever sampling function asks for them; ``write_run`` turns an imported record into
a run folder laid out as the training scripts write one (args.yaml + checkpoint.pt.tar).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import torch

from utils.checkpoint import CHECKPOINT_NAME, save_checkpoint
from utils.released import Imported
from utils.run import save_args

OFFICIAL = Path(__file__).parent / "fixtures" / "official"


def load_fixture(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``inputs.pt`` and ``outputs.pt`` of a fixture folder."""
    folder = OFFICIAL / name
    return (torch.load(folder / "inputs.pt", weights_only=True), torch.load(folder / "outputs.pt", weights_only=True))


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return (a.detach().float() - b.detach().float()).abs().max().item()


@contextlib.contextmanager
def replay(values: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Patch torch's samplers to return ``values`` in order (shapes must agree); all must be used."""
    queue = [v.clone() for v in values]

    def take(shape: Any) -> torch.Tensor:
        assert queue, "the model drew more random tensors than were recorded"
        value = queue.pop(0)
        assert tuple(value.shape) == tuple(shape), f"recorded draw {tuple(value.shape)}, model asks {tuple(shape)}"
        return value.clone()

    def size_of(size: tuple) -> tuple:
        return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)

    def randn(*size: Any, **kwargs: Any) -> torch.Tensor:
        return take(size_of(size)).to(kwargs.get("dtype") or torch.float32)

    def fill(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            self.copy_(take(self.shape))
        return self

    def normal(mean: Any, std: Any = 1.0, *args: Any, **kwargs: Any) -> torch.Tensor:
        return take(torch.broadcast_shapes(torch.as_tensor(mean).shape, torch.as_tensor(std).shape))

    with mock.patch("torch.randn", randn), mock.patch("torch.rand", randn), \
            mock.patch("torch.randn_like", lambda t, **k: take(t.shape).to(t.dtype)), \
            mock.patch("torch.normal", normal), mock.patch.object(torch.Tensor, "normal_", fill), \
            mock.patch.object(torch.Tensor, "exponential_", fill):
        yield queue
    assert not queue, f"{len(queue)} recorded draws were not used"


def random_state(layout: dict[str, dict[str, Any]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the shapes and dtypes a ``keys.json`` lists."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, spec in layout.items():
        dtype = getattr(torch, spec["dtype"])
        out[key] = (torch.randn(spec["shape"], generator=gen).to(dtype) if dtype.is_floating_point
                    else torch.zeros(spec["shape"], dtype=dtype))
    return out


def keys_json(name: str) -> dict[str, Any]:
    return json.loads((OFFICIAL / name / "keys.json").read_text())


def namespace(value: Any) -> Any:
    """Nested dicts as the argparse.Namespace objects the official files pickle."""
    if isinstance(value, dict):
        return argparse.Namespace(**{k: namespace(v) for k, v in value.items()})
    return value


def write_run(run_dir: Path, imported: Imported, args: dict[str, Any] | None = None) -> Path:
    """A run folder as the training scripts write it, from an imported record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    encoder = dict(imported.encoder) if imported.encoder is not None else None
    if imported.encoder_state is not None:
        assert encoder is not None
        path = run_dir / "encoder_weights.pt"
        torch.save(imported.encoder_state, path)
        encoder["weights_path"] = str(path)
    record = {**imported.args, **(args or {})}
    save_args(run_dir, record)
    save_checkpoint(run_dir / CHECKPOINT_NAME, {
        "method": imported.method, "model_config": imported.model_config, "encoder": encoder, "args": record,
        "model": imported.model_state, "step": int(record.get("step", 0)), "epoch": 0,
    })
    return run_dir
