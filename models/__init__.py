"""Model registry: a checkpoint records ``method``, ``model_config`` and ``encoder``; this rebuilds it."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from utils.errors import UserError

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
        finetune_stem=spec.get("finetune_stem", False),
        pos_embed_resampling=spec.get("pos_embed_resampling", "dino"),
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


@dataclass(frozen=True)
class MethodSpec:
    """How to rebuild and evaluate one method's checkpoints.

    Attributes:
        config_cls: the model config dataclass stored (as a dict) in the checkpoint.
        build: ``(config, encoder_spec) -> model``; ``encoder_spec`` is None for pixel models.
        add_model_args: adds the method's model flags to a parser (eval checks typed ones
            against the stored config).
        eval_choices: model flags that choose *how to evaluate* and may differ from training
            (applied to the config at evaluation, e.g. SPOT's ``eval_permutations``).
        check_config: raises ``UserError`` on impossible flag combinations (or None).
        image_model: whether ``forward({"image": ...})`` gives masks (eval_spot.py, predict.py).
        primary_masks: the mask source reported first (SLATE: its slot-attention masks).
    """

    config_cls: type
    build: Callable[[Any, dict[str, Any] | None], nn.Module]
    add_model_args: Callable[[argparse.ArgumentParser], None]
    eval_choices: frozenset[str] = frozenset()
    check_config: Callable[[Any], None] | None = None
    image_model: bool = True  # False: a video model, evaluated by its own script (eval_smtc.py)
    primary_masks: str = "decoder"  # the mask source whose metrics carry the plain names


def _spot() -> MethodSpec:
    from models.spot import SPOT, SPOTConfig, add_model_args, check_config

    return MethodSpec(
        SPOTConfig,
        lambda config, encoder: SPOT(build_encoder_from_spec(encoder), config),  # type: ignore[arg-type]
        add_model_args,
        frozenset({"eval_permutations"}),
        check_config,
    )


def _slot_attention() -> MethodSpec:
    from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig, add_model_args, check_config

    return MethodSpec(SlotAttentionAEConfig, lambda config, encoder: SlotAttentionAE(config), add_model_args,
                      frozenset(), check_config)


def _slate() -> MethodSpec:
    from models.slate import SLATE, SLATEConfig, add_model_args, check_config

    return MethodSpec(SLATEConfig, lambda config, encoder: SLATE(config), add_model_args, frozenset(), check_config,
                      primary_masks="slots")


def _adaslot() -> MethodSpec:
    from models.adaslot import AdaSlot, AdaSlotConfig, add_model_args, check_config

    return MethodSpec(
        AdaSlotConfig,
        lambda config, encoder: AdaSlot(build_encoder_from_spec(encoder), config),  # type: ignore[arg-type]
        add_model_args,
        frozenset({"keep_rule"}),
        check_config,
    )


def _gnm() -> MethodSpec:
    from models.gnm import GNM, GNMConfig, add_model_args, check_config

    return MethodSpec(GNMConfig, lambda config, encoder: GNM(config), add_model_args, frozenset(), check_config)


def _no_model_flags(parser: argparse.ArgumentParser) -> None:
    """Methods whose architecture flags live in their training script only."""


def _slotcon() -> MethodSpec:
    from models.slotfa import SlotCon, SlotConConfig

    # The ResNet is trained, so its weights are in the checkpoint (no encoder record).
    return MethodSpec(SlotConConfig, lambda config, encoder: SlotCon(config), _no_model_flags)


def _smtc() -> MethodSpec:
    from models.smtc import SMTC, SMTCConfig

    return MethodSpec(
        SMTCConfig,
        lambda config, encoder: SMTC(build_encoder_from_spec(encoder), config),  # type: ignore[arg-type]
        _no_model_flags,
        image_model=False,
    )


def _ftdinosaur() -> MethodSpec:
    from models.ftdinosaur import FTDINOSAURConfig, add_model_args, build, check_config

    # top_k and num_slots choose how to evaluate: top-k decoding can be switched off, and the
    # shared-Gaussian slot init takes any number of slots.
    return MethodSpec(FTDINOSAURConfig, build, add_model_args, frozenset({"top_k", "num_slots"}),  # type: ignore[arg-type]
                      check_config)


# Method name (checkpoint["method"]) -> its spec; functions, so a method's imports load only when used.
METHODS: dict[str, Callable[[], MethodSpec]] = {
    "spot": _spot,
    "slot_attention": _slot_attention,
    "slate": _slate,
    "adaslot": _adaslot,
    "gnm": _gnm,
    "slotcon": _slotcon,
    "slotfa": _slotcon,
    "smtc": _smtc,
    "ftdinosaur": _ftdinosaur,
}


def method_spec(method: str) -> MethodSpec:
    """The registry entry of ``method``; unknown methods are a ``UserError``."""
    if method not in METHODS:
        raise UserError(
            f"checkpoint of method {method!r} cannot be built by this version of the code "
            f"(known: {', '.join(METHODS)})"
        )
    return METHODS[method]()


def model_config_of(method: str, model_config: dict[str, Any]) -> Any:
    """The method's config dataclass from a checkpoint's stored ``model_config``.

    A record that does not fit the method's config (a checkpoint written by other code, or
    relabelled) is a ``UserError`` naming the offending settings, not a ``TypeError``.
    """
    spec = method_spec(method)
    try:
        return spec.config_cls(**model_config)
    except TypeError as err:
        raise UserError(f"the checkpoint's model settings do not fit a {method} model ({err}); it was not written "
                        f"by this project's train script for {method}") from None


def build_model(method: str, model_config: dict[str, Any], encoder_spec: dict[str, Any] | None) -> nn.Module:
    """Rebuild a model from the records stored in its checkpoint."""
    return method_spec(method).build(model_config_of(method, model_config), encoder_spec)
