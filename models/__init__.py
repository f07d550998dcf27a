"""Model registry: a checkpoint records ``method``, ``model_config`` and ``encoder``; this rebuilds it."""
from __future__ import annotations

from typing import Any

from torch import nn

from utils.errors import UserError


def build_encoder_from_spec(spec: dict[str, Any]):
    """Build the frozen ViT described by a checkpoint's ``encoder`` record."""
    from models.encoders import FrozenViT

    return FrozenViT(
        spec["name"],
        pretrained=spec["pretrained"],
        weights_path=spec.get("weights_path"),
        finetune_blocks_after=spec.get("finetune_blocks_after", 100),
        final_norm=spec.get("final_norm", False),
    )


def build_model(method: str, model_config: dict[str, Any], encoder_spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the records stored in its checkpoint."""
    if method == "spot":
        from models.spot import SPOT, SPOTConfig

        return SPOT(build_encoder_from_spec(encoder_spec), SPOTConfig(**model_config))
    raise UserError(f"checkpoint of method {method!r} cannot be built by this version of the code")
