"""Model registry: a checkpoint records ``method``, ``model_config`` and ``encoder``; this rebuilds it."""
from __future__ import annotations

from typing import Any

from torch import nn

from utils.errors import UserError

# Every method that build_model can rebuild (add a name here with its branch below); tools such as
# predict.py derive what they accept from this tuple.
METHODS: tuple[str, ...] = ("spot", "slate", "adaslot", "slotcon", "slotfa", "smtc", "gnm")


def encoder_fingerprint(encoder: nn.Module) -> float:
    """A cheap checksum of an encoder's weights (sum of |w| in float64)."""
    return float(sum(p.detach().double().abs().sum() for p in encoder.parameters()))


def build_encoder_from_spec(spec: dict[str, Any]):
    """Build the frozen ViT described by a checkpoint's ``encoder`` record.

    When the record holds a fingerprint of pretrained weights, the rebuilt encoder must match
    it: features from other weights would give silently wrong results.
    """
    from models.encoders import FrozenViT

    encoder = FrozenViT(
        spec["name"],
        pretrained=spec["pretrained"],
        weights_path=spec.get("weights_path"),
        finetune_blocks_after=spec.get("finetune_blocks_after", 100),
        final_norm=spec.get("final_norm", False),
    )
    expected = spec.get("fingerprint")
    if expected is not None and encoder.is_pretrained:
        actual = encoder_fingerprint(encoder)
        if abs(actual - expected) > 1e-6 * max(abs(expected), 1.0):
            raise UserError(
                f"the weights of encoder {spec['name']} ({encoder.weights_source}) differ from those used in "
                "training; pass the original file with --encoder_weights"
            )
    return encoder


def build_model(method: str, model_config: dict[str, Any], encoder_spec: dict[str, Any] | None) -> nn.Module:
    """Rebuild a model from the records stored in its checkpoint."""
    if method not in METHODS:
        raise UserError(f"checkpoint of method {method!r} cannot be built by this version of the code "
                        f"(it builds: {', '.join(METHODS)})")
    if method == "spot":
        from models.spot import SPOT, SPOTConfig

        return SPOT(build_encoder_from_spec(encoder_spec), SPOTConfig(**model_config))
    if method == "slate":  # no pretrained encoder: encoder_spec is None
        from models.slate import SLATE, SLATEConfig

        return SLATE(SLATEConfig(**model_config))
    if method == "adaslot":
        from models.adaslot import AdaSlot, AdaSlotConfig

        return AdaSlot(build_encoder_from_spec(encoder_spec), AdaSlotConfig(**model_config))
    if method in ("slotcon", "slotfa"):  # the ResNet is trained, so its weights are in the checkpoint
        from models.slotfa import SlotCon, SlotConConfig

        return SlotCon(SlotConConfig(**model_config))
    if method == "smtc":
        from models.smtc import SMTC, SMTCConfig

        return SMTC(build_encoder_from_spec(encoder_spec), SMTCConfig(**model_config))
    if method == "gnm":
        from models.gnm import GNM, GNMConfig

        return GNM(GNMConfig(**model_config))
    raise UserError(f"checkpoint of method {method!r} cannot be built by this version of the code")
