"""Shared helpers of the released-checkpoint import tests (fixtures in tests/fixtures/official/).

Each fixture folder holds a checkpoint written by an official code base (tiny, random weights),
the inputs of one forward pass with every random draw it made (``inputs.pt["draws"][mode]``),
and the official outputs (``outputs.pt[mode]``); see tests/fixtures/official/README.md.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "official"
TOL = 2e-5  # the fixtures' suggested max-abs tolerance for these paths


def load(name: str, what: str) -> Any:
    """``inputs.pt`` / ``outputs.pt`` of a fixture (plain tensors and dicts: the safe loader reads them)."""
    return torch.load(FIXTURES / name / what, map_location="cpu", weights_only=True)


@contextlib.contextmanager
def replay_draws(draws: list[dict[str, Any]]) -> Iterator[list[torch.Tensor]]:
    """Answer the model's torch.randn / randn_like / Tensor.normal_ / Tensor.exponential_ calls with the
    recorded values, in order (``random.choice`` draws are left to the caller). Yields the queue,
    which must be empty afterwards (every recorded draw consumed, none invented)."""
    queue = [d["value"].clone() for d in draws if d["fn"] != "random.choice"]
    originals = (torch.randn, torch.randn_like, torch.Tensor.normal_, torch.Tensor.exponential_)

    def take(shape: torch.Size) -> torch.Tensor:
        assert queue, "the model drew more random numbers than the official forward"
        value = queue.pop(0)
        assert tuple(value.shape) == tuple(shape), (tuple(value.shape), tuple(shape))
        return value

    def randn(*size: Any, **kwargs: Any) -> torch.Tensor:
        shape = torch.Size(size[0] if len(size) == 1 and not isinstance(size[0], int) else size)
        return take(shape).to(dtype=kwargs.get("dtype") or torch.float32, device=kwargs.get("device"))

    def randn_like(t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return take(t.shape).to(t)

    def fill(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return self.copy_(take(self.shape))

    torch.randn, torch.randn_like = randn, randn_like  # type: ignore[assignment]
    torch.Tensor.normal_ = fill  # type: ignore[method-assign]
    torch.Tensor.exponential_ = fill  # type: ignore[method-assign]
    try:
        yield queue
    finally:
        torch.randn, torch.randn_like, torch.Tensor.normal_, torch.Tensor.exponential_ = originals  # type: ignore[misc]


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference (shapes must agree)."""
    assert tuple(a.shape) == tuple(b.shape), (tuple(a.shape), tuple(b.shape))
    return float((a.detach().float() - b.float()).abs().max())
