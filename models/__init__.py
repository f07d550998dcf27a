"""Model registry: a checkpoint records ``method``, ``model_config`` and ``encoder``; this rebuilds it."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ground.errors import UserError

def encoder_fingerprint(encoder: nn.Module) -> float:
    """A cheap checksum of an encoder's weights (sum of |w| in float64)."""
    return float(sum(p.detach().double().abs().sum() for p in encoder.parameters()))


def build_encoder_from_spec(spec: dict[str, Any], trust: bool = False):
    """Build the frozen ViT described by a checkpoint's ``encoder`` record.

    When the record holds a fingerprint of pretrained weights, the rebuilt encoder must match
    it: features from other weights would give silently wrong results. ``trust``: the user's
    ``--trust_checkpoint`` for a weights file that needs full unpickling.
    """
    from models.encoders import FrozenViT

    encoder = FrozenViT(
        spec["name"],
        pretrained=spec["pretrained"],
        weights_path=spec.get("weights_path"),
        finetune_blocks_after=spec.get("finetune_blocks_after", 100),
        final_norm=spec.get("final_norm", False),
        # Sizes of a ViT that is not the named model's (read from a released file's tensors).
        model_overrides=spec.get("model_overrides"),
        trust_weights=trust,
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
        build: ``(config, encoder_spec[, trust]) -> model``; ``encoder_spec`` is None for pixel models;
            ``trust`` (the user's ``--trust_checkpoint``) is passed on to the encoder weights file.
        add_model_args: adds the method's model flags to a parser (eval checks typed ones
            against the stored config).
        eval_choices: model flags that choose *how to evaluate* and may differ from training
            (applied to the config at evaluation, e.g. SPOT's ``eval_permutations``).
        check_config: raises ``UserError`` on impossible flag combinations (or None).
        image_model: whether ``forward({"image": ...})`` gives masks (eval_spot.py, predict.py).
        primary_masks: the mask source reported first (SLATE: its slot-attention masks).
        encoder_record: whether checkpoints must carry an ``encoder`` record (a frozen ViT).
    """

    config_cls: type
    build: Callable[..., nn.Module]
    add_model_args: Callable[[argparse.ArgumentParser], None]
    eval_choices: frozenset[str] = frozenset()
    check_config: Callable[[Any], None] | None = None
    image_model: bool = True  # False: a video model, evaluated by its own script (eval_smtc.py)
    primary_masks: str = "decoder"  # the mask source whose metrics carry the plain names
    encoder_record: bool = False  # the model is built on a frozen ViT described by the checkpoint's encoder record


def _spot() -> MethodSpec:
    from models.spot import SPOT, SPOTConfig, add_model_args, check_config

    return MethodSpec(
        SPOTConfig,
        lambda config, encoder, trust=False: SPOT(build_encoder_from_spec(encoder, trust), config),
        add_model_args,
        frozenset({"eval_permutations"}),
        check_config,
        encoder_record=True,
    )


def _slot_attention() -> MethodSpec:
    from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig, add_model_args, check_config

    return MethodSpec(SlotAttentionAEConfig, lambda config, encoder: SlotAttentionAE(config), add_model_args,
                      frozenset(), check_config)


def _slate() -> MethodSpec:
    from models.slate import SLATE, SLATEConfig, add_model_args, check_config

    return MethodSpec(SLATEConfig, lambda config, encoder: SLATE(config), add_model_args, frozenset({"eval_tokens"}),
                      check_config, primary_masks="slots")


def _adaslot() -> MethodSpec:
    from models.adaslot import AdaSlot, AdaSlotConfig, add_model_args, check_config

    return MethodSpec(
        AdaSlotConfig,
        lambda config, encoder, trust=False: AdaSlot(build_encoder_from_spec(encoder, trust), config),
        add_model_args,
        frozenset({"keep_rule"}),
        check_config,
        encoder_record=True,
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
        lambda config, encoder, trust=False: SMTC(build_encoder_from_spec(encoder, trust), config),
        _no_model_flags,
        image_model=False,
        encoder_record=True,
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


# Config fields added after checkpoint format 1, each with the value that reproduces what a
# format-1 checkpoint computed (its stored model_config lacks the key). Only
# utils.checkpoint.upgrade_checkpoint applies this table, to format-1 records; loading is otherwise
# strict (docs/checkpoints.md). New runs store every key, with the official defaults
# (docs/methods/<method>.md). A field added later goes into the next format's table.
FIELDS_ADDED_IN_FORMAT_2: dict[str, dict[str, Any]] = {
    "slot_attention": {"activation": "relu", "encoder_norm": True, "implicit_extra_iteration": False},
    "adaslot": {"input_mlp_hidden": None, "init_scheme": "xavier"},
    "gnm": {"draw_map_norm": False, "paste_premultiplied": False, **{name: [] for name in (
        "encoder_filters", "encoder_kernels", "encoder_strides", "draw_stat_hidden", "draw_map_hidden", "head_hidden",
        "glimpse_filters", "glimpse_kernels", "glimpse_upscales", "bg_filters", "bg_kernels", "bg_upscales",
        "bg_posterior_hidden", "bg_prior_hidden")}},
    "spot": {"init_scheme": "xavier"},
    "slate": {"eval_tokens": "argmax", "official_bos": False},
    "smtc": {"qkv_bias": False, "encoder_drop_path": 0.0, "train_encoder_stem": False, "reparam_instances": True},
}


def upgrade_model_config(method: str, model_config: dict[str, Any]) -> dict[str, Any]:
    """A format-1 ``model_config`` with every field it predates set to the old behaviour
    (:data:`FIELDS_ADDED_IN_FORMAT_2`); keys the record holds are kept."""
    return {**FIELDS_ADDED_IN_FORMAT_2.get(method, {}), **model_config}


def model_config_of(method: str, model_config: dict[str, Any], source: str = "the checkpoint") -> Any:
    """The method's config dataclass from a checkpoint's stored ``model_config``.

    Every field must be stored: a missing one is never filled with today's default (which may
    differ from the value the model was trained with). A record that does not fit the method's
    config (a checkpoint written by other code, or relabelled) is a ``UserError`` naming the
    offending settings, not a ``TypeError``.
    """
    spec = method_spec(method)
    if not isinstance(model_config, dict):
        raise UserError(f"{source}: its model_config is a {type(model_config).__name__}, not a record of settings; "
                        "use the run's original checkpoint")
    fields = [f.name for f in dataclasses.fields(spec.config_cls)]
    missing = [name for name in fields if name not in model_config]
    unknown = sorted(set(model_config) - set(fields))
    if unknown:
        raise UserError(f"{source}: its model settings do not fit a {method} model ({', '.join(unknown[:4])} are "
                        f"unknown to it); it was not written by this project's train script for {method}")
    if missing:
        raise UserError(f"{source}: its model_config lacks {', '.join(missing[:6])}, needed to rebuild the {method} "
                        "model exactly (the file was edited or written by other code); use the run's original "
                        "checkpoint")
    try:
        return spec.config_cls(**model_config)
    except TypeError as err:
        raise UserError(f"{source}: its model settings do not fit a {method} model ({err}); it was not written "
                        f"by this project's train script for {method}") from None


# What an encoder record must hold to rebuild the same frozen ViT (weights_path and fingerprint may be
# absent: a record of random or downloaded weights).
ENCODER_RECORD_KEYS = ("name", "pretrained", "finetune_blocks_after", "final_norm")


def check_model_record(method: str, model_config: Any, encoder: Any, source: str = "the checkpoint") -> None:
    """Refuse (one line) a checkpoint record that cannot rebuild its model exactly: unknown method,
    incomplete or foreign ``model_config``, missing or incomplete encoder record."""
    if not isinstance(method, str):
        raise UserError(f"{source}: its method entry is a {type(method).__name__}; use the run's original checkpoint")
    if method not in METHODS:
        raise UserError(f"{source} is a {method!r} checkpoint, which this version of the code cannot build "
                        f"(known: {', '.join(METHODS)})")
    spec = method_spec(method)
    model_config_of(method, model_config, source)
    if spec.encoder_record and not isinstance(encoder, dict):
        raise UserError(f"{source}: a {method} checkpoint needs its encoder record (which ViT, which weights); "
                        "it has none: use the run's original checkpoint")
    if isinstance(encoder, dict):
        lacking = [k for k in ENCODER_RECORD_KEYS if k not in encoder]
        if lacking:
            raise UserError(f"{source}: its encoder record lacks {', '.join(lacking)}; use the run's original "
                            "checkpoint")


def build_model(method: str, model_config: dict[str, Any], encoder_spec: dict[str, Any] | None,
                trust: bool = False) -> nn.Module:
    """Rebuild a model from the records stored in its checkpoint (``trust``: ``--trust_checkpoint``,
    for an encoder weights file that needs full unpickling)."""
    spec = method_spec(method)
    config = model_config_of(method, model_config)
    return spec.build(config, encoder_spec, trust) if spec.encoder_record else spec.build(config, encoder_spec)
