"""Model state dicts without frozen pretrained encoder weights, and strict loading that names
mismatched keys (used by models that load weights and by :mod:`utils.checkpoint`)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ground.errors import UserError


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
