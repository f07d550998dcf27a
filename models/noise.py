"""Keyed random draws: the noise of a training step as a function of (seed, step, sample).

Why: under ``torchrun`` every process has its own global RNG, so draws such as slot noise,
Gumbel samples or SPOT's ordering differ between one process with batch 8 and two processes
with batch 4 each, and the two runs train different models. The training loop
(``utils/train.py``) therefore puts two keys into every training batch:

* ``batch["sample_seed"]``: int64 ``[B]``, ``sample_seeds(seed, step, global_index)`` of each
  sample, where ``global_index`` is the sample's position in the step's *global* batch;
* ``batch["step_seed"]``: int64 0-d, ``step_seed(seed, step)``, for draws made once per batch
  (one SPOT ordering for the whole global batch).

A model's ``forward(batch)`` decorated with :func:`keyed_forward` makes these keys current;
the draw helpers below (:func:`randn`, :func:`rand`, :func:`exponential`, :func:`randint`,
:func:`gumbel_softmax`) then draw each sample's numbers from its own generator, seeded by its
key and a *stream* name that tells the draw sites apart. Without keys (evaluation, prediction,
direct calls) they return ``None`` or fall back to exactly the plain ``torch`` call the model
made before, so seeded evaluation and tests that replay recorded draws are unchanged.
See docs/distributed.md ("What world-size invariance holds").
"""
from __future__ import annotations

import functools
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import torch
import torch.nn.functional as F

_MASK64 = (1 << 64) - 1
_MASK63 = (1 << 63) - 1
F_ = TypeVar("F_", bound=Callable[..., Any])


def _mix(value: int) -> int:
    """splitmix64's finaliser: a fixed, well-spread 64-bit hash (Python's ``hash`` is salted per process)."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _combine(*parts: int) -> int:
    """Hash of a tuple of integers, below 2**63 (fits an int64 tensor and ``manual_seed``)."""
    value = 0
    for part in parts:
        value = _mix(value ^ (int(part) & _MASK64))
    return value & _MASK63


def step_seed(seed: int, step: int) -> int:
    """The key of training step ``step`` of a run seeded with ``seed`` (draws made once per batch)."""
    return _combine(seed, step, 0x5EED)


def sample_seeds(seed: int, step: int, global_indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """int64 ``[B]`` keys of the samples at ``global_indices`` of step ``step``'s global batch."""
    indices = global_indices.tolist() if isinstance(global_indices, torch.Tensor) else list(global_indices)
    return torch.tensor([_combine(seed, step, 1 + int(i)) for i in indices], dtype=torch.int64)


@dataclass
class Keys:
    """The keys of the batch being processed (``sample`` one per sample, ``step`` one per batch).

    ``calls`` counts the draws per stream name: the second draw of a site in one forward (a
    teacher's slot noise after the student's, a second GNM layer) gets fresh numbers.
    """

    sample: tuple[int, ...]
    step: int | None
    calls: dict[str, int] = field(default_factory=dict)

    def stream_code(self, name: str) -> int:
        count = self.calls.get(name, 0)
        self.calls[name] = count + 1
        return _combine(zlib.crc32(name.encode()), count)


_CURRENT: ContextVar[Keys | None] = ContextVar("noise_keys", default=None)


def keys_of(batch: Mapping[str, Any]) -> Keys | None:
    """The keys a training batch carries, or None (a batch from evaluation or a direct call)."""
    sample = batch.get("sample_seed") if isinstance(batch, Mapping) else None
    if sample is None:
        return None
    step = batch.get("step_seed")
    return Keys(tuple(int(v) for v in torch.as_tensor(sample).reshape(-1).tolist()),
                None if step is None else int(torch.as_tensor(step)))


@contextmanager
def keyed(batch: Mapping[str, Any]) -> Iterator[Keys | None]:
    """Within the block, the draw helpers use the keys ``batch`` carries (none: plain draws).

    A nested block for a batch with the same keys (a model calling another keyed model on its
    batch) continues the outer block's draw counts instead of repeating its numbers. The state is
    only changed where it must be: ``torch.compile`` cannot trace a ``ContextVar`` change, so the
    training loop enters the block outside the compiled forward, and a batch without keys
    (evaluation, the compile tests) changes nothing.
    """
    keys, outer = keys_of(batch), _CURRENT.get()
    if keys is None and outer is None:  # nothing to make current: leave the state alone
        yield None
        return
    if keys is not None and outer is not None and (keys.sample, keys.step) == (outer.sample, outer.step):
        yield outer  # already current (the training loop entered the block before a compiled forward)
        return
    token = _CURRENT.set(keys)
    try:
        yield keys
    finally:
        _CURRENT.reset(token)


def keyed_forward(forward: F_) -> F_:
    """Decorator for a model's ``forward(self, batch, ...)``: its draws follow the batch's keys."""

    @functools.wraps(forward)
    def wrapper(self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        with keyed(batch):
            return forward(self, batch, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def current() -> Keys | None:
    """The keys in force (None outside a keyed training forward)."""
    return _CURRENT.get()


def _generators(keys: Keys, rows: int, stream: str, device: torch.device) -> list[torch.Generator]:
    """One generator per row. ``rows`` may be a multiple of the batch size: row ``r`` then belongs
    to sample ``r % B`` (copies of the batch stacked along dim 0, e.g. SPOT's orderings decoded
    together), and each copy gets its own numbers."""
    batch = len(keys.sample)
    if rows % batch:
        raise ValueError(f"keyed draw {stream!r}: {rows} rows for {batch} sample keys (not a multiple)")
    code = keys.stream_code(stream)
    return [torch.Generator(device=device).manual_seed(_combine(keys.sample[r % batch], code, r // batch))
            for r in range(rows)]


def _per_sample(draw: Callable[[torch.Generator], torch.Tensor], keys: Keys, batch_size: int, stream: str,
                device: torch.device) -> torch.Tensor:
    return torch.stack([draw(g) for g in _generators(keys, batch_size, stream, device)])


def randn(batch_size: int, shape: Sequence[int], stream: str, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """Standard normal ``[batch_size, *shape]``, sample ``b`` from its key; None without keys."""
    keys = current()
    if keys is None:
        return None
    device = torch.device(device or "cpu")
    return _per_sample(lambda g: torch.randn(tuple(shape), generator=g, device=device, dtype=dtype),
                       keys, batch_size, stream, device)


def rand(batch_size: int, shape: Sequence[int], stream: str, device: torch.device | str | None = None,
         dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """Uniform [0, 1) ``[batch_size, *shape]``, sample ``b`` from its key; None without keys."""
    keys = current()
    if keys is None:
        return None
    device = torch.device(device or "cpu")
    return _per_sample(lambda g: torch.rand(tuple(shape), generator=g, device=device, dtype=dtype),
                       keys, batch_size, stream, device)


def exponential(batch_size: int, shape: Sequence[int], stream: str, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor | None:
    """Exponential(1) ``[batch_size, *shape]`` (Gumbel noise is ``-log`` of it); None without keys."""
    keys = current()
    if keys is None:
        return None
    device = torch.device(device or "cpu")
    return _per_sample(lambda g: torch.empty(tuple(shape), device=device, dtype=dtype).exponential_(generator=g),
                       keys, batch_size, stream, device)


def sample_generators(batch_size: int, stream: str, device: torch.device | str = "cpu") -> list[torch.Generator] | None:
    """One generator per sample for draws of several kinds (e.g. augmentation parameters); None without keys."""
    keys = current()
    return None if keys is None else _generators(keys, batch_size, stream, torch.device(device))


def randn_like(tensor: torch.Tensor, stream: str) -> torch.Tensor:
    """``torch.randn_like(tensor)`` (batch first), keyed inside a keyed forward."""
    drawn = randn(tensor.shape[0], tensor.shape[1:], stream, tensor.device, tensor.dtype)
    return torch.randn_like(tensor) if drawn is None else drawn


def rand_like(tensor: torch.Tensor, stream: str) -> torch.Tensor:
    """``torch.rand_like(tensor)`` (batch first), keyed inside a keyed forward."""
    drawn = rand(tensor.shape[0], tensor.shape[1:], stream, tensor.device, tensor.dtype)
    return torch.rand_like(tensor) if drawn is None else drawn


def step_randint(high: int, stream: str, device: torch.device | str | None = None) -> torch.Tensor | None:
    """One integer in ``[0, high)`` for the whole (global) batch, from the step key; 0-d int64.

    None without keys, or when the batch carries no step key."""
    keys = current()
    if keys is None or keys.step is None:
        return None
    generator = torch.Generator().manual_seed(_combine(keys.step, keys.stream_code(stream)))
    return torch.randint(high, (), generator=generator).to(device or "cpu")


def step_randn(shape: Sequence[int], stream: str, device: torch.device | str | None = None) -> torch.Tensor | None:
    """Standard normal ``shape`` shared by the whole (global) batch, from the step key; None without it."""
    keys = current()
    if keys is None or keys.step is None:
        return None
    generator = torch.Generator().manual_seed(_combine(keys.step, keys.stream_code(stream)))
    return torch.randn(tuple(shape), generator=generator).to(device or "cpu")


def step_randperm(n: int, stream: str) -> torch.Tensor | None:
    """One permutation of ``range(n)`` for the whole (global) batch, from the step key; None without it."""
    keys = current()
    if keys is None or keys.step is None:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(_combine(keys.step, keys.stream_code(stream))))


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool, dim: int, stream: str) -> torch.Tensor:
    """``F.gumbel_softmax`` over ``logits`` (batch first) with keyed Gumbel noise; plain without keys."""
    noise = exponential(logits.shape[0], logits.shape[1:], stream, logits.device, logits.dtype)
    if noise is None:
        return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=dim)
    soft = ((logits - noise.log()) / tau).softmax(dim)
    if not hard:
        return soft
    index = soft.argmax(dim, keepdim=True)
    one_hot = torch.zeros_like(logits).scatter_(dim, index, 1.0)
    return one_hot - soft.detach() + soft  # straight-through, as F.gumbel_softmax


def dropout(x: torch.Tensor, p: float, training: bool, stream: str = "dropout") -> torch.Tensor:
    """``F.dropout`` with each row's mask drawn from its sample's key (batch-first ``x``); plain
    ``F.dropout`` outside a keyed forward. Successive calls get successive streams."""
    keys = current()
    if keys is None or not training or p == 0.0:
        return F.dropout(x, p, training)
    if p >= 1.0:
        return x * 0.0
    uniform = rand(x.shape[0], x.shape[1:], stream, x.device, torch.float32)
    assert uniform is not None
    return x * (uniform >= p).to(x.dtype) / (1.0 - p)


class KeyedDropout(torch.nn.Dropout):
    """``nn.Dropout`` whose masks follow the training batch's keys (see :func:`dropout`); the same
    module (no parameters, same ``state_dict``) and the same behaviour outside a keyed forward
    (never in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
