"""Helpers shared by the converters of released checkpoints (see docs/released_models.md)."""
from __future__ import annotations

import argparse
from typing import Any, Iterable

import torch

from ground.errors import UserError


class KeyMap:
    """A released state dict being converted: every key must be taken (or dropped with a reason).

    ``take`` marks a key as used and returns its tensor; ``finish`` refuses a file that still
    holds unused keys, so a layout this converter does not fully understand is never half-loaded.
    """

    def __init__(self, state: dict[str, Any], source: str) -> None:
        self.state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.source = source
        self.used: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def has(self, key: str) -> bool:
        return key in self.state

    def peek(self, key: str) -> torch.Tensor:
        """The tensor under ``key`` (not marked as used); a missing key is one clear line."""
        if key not in self.state:
            raise UserError(f"{self.source} has no {key!r}: the file is incomplete or of another layout")
        return self.state[key]

    def take(self, key: str) -> torch.Tensor:
        tensor = self.peek(key)
        self.used.add(key)
        return tensor

    def drop(self, key: str) -> None:
        """Mark ``key`` as deliberately unused (the caller documents why)."""
        self.peek(key)
        self.used.add(key)

    def put(self, target: str, source_key: str) -> None:
        """Copy ``source_key`` to this project's ``target``."""
        self.out[target] = self.take(source_key).clone()

    def put_prefix(self, target: str, source: str, names: Iterable[str]) -> None:
        for name in names:
            self.put(f"{target}{name}", f"{source}{name}")

    def keys_under(self, prefix: str) -> list[str]:
        return sorted(k for k in self.state if k.startswith(prefix))

    def finish(self) -> dict[str, torch.Tensor]:
        left = sorted(set(self.state) - self.used)
        if left:
            raise UserError(f"{self.source} holds {len(left)} keys this converter does not know "
                            f"(e.g. {', '.join(left[:3])}); it is not the layout it was detected as")
        return self.out


def strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``state`` with ``prefix`` removed from every key (keys without it are kept as they are)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def all_start_with(state: Any, prefix: str) -> bool:
    return isinstance(state, dict) and bool(state) and all(isinstance(k, str) and k.startswith(prefix) for k in state)


def count_indexed(state: dict[str, Any], prefix: str) -> int:
    """How many consecutive ``prefix{i}.`` groups exist (``blocks.0.``, ``blocks.1.``, ...)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state):
        n += 1
    return n


def as_plain(value: Any) -> Any:
    """An ``argparse.Namespace`` tree as plain dicts (what args.yaml and safe checkpoints hold)."""
    if isinstance(value, argparse.Namespace):
        return {k: as_plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    return value
