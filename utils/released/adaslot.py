"""AdaSlot and DINOSAUR checkpoints of two code bases, mapped onto this project's ``adaslot`` model.

* ``adaslot_oclf``: the official AdaSlot (amazon-science/AdaSlot, built on OCLF) and OCLF's
  DINOSAUR, as Lightning ``.ckpt`` files: ``state_dict`` with ``models.feature_extractor.model.``
  (the frozen timm DINO ViT up to the feature level, saved), ``models.conditioning.`` (slot
  init), ``models.perceptual_grouping.`` (input MLP and slot attention; in AdaSlot also the
  keep/drop selector ``single_gumbel_score_network``) and ``models.object_decoder.`` (MLP decoder).
* ``adaslot_dinosaurpp``: the unofficial DINOSAUR/AdaSlot code the AdaSlot seed commands come from
  (``{'model_state_dict', 'optimizer_state_dict', 'scheduler_state_dict'}``, prefixes
  ``slot_encoder.``, ``slot_attention.``, ``slot_decoder.``, ``pos_dec``). Its frozen ViT is not
  saved: the encoder is named (``dino-vitb-16`` for 768-wide features) and loaded as usual.

What neither records (listed in ``Imported.assumed``): the number of slots (the init is one
shared Gaussian), the slot-attention iterations (3), the sparsity weight, and for the unofficial
files which ViT made the features (``which_encoder``).
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from ground.errors import UserError
from utils.released import Imported, ReleasedFormat
from utils.released.vit import strip_prefix, vit_record

OCLF_PREFIX = "models."
# OCLF name -> this project's name (after the "models." prefix).
_OCLF = [
    (r"^conditioning\.slots_mu$", "slot_attention.init.mu"),
    (r"^conditioning\.slots_logsigma$", "slot_attention.init.log_sigma"),
    (r"^perceptual_grouping\.positional_embedding\.layers\.1\.([013])\.", r"input_mlp.\1."),
    (r"^perceptual_grouping\.slot_attention\.to_([qkv])\.", r"slot_attention.to_\1."),
    (r"^perceptual_grouping\.slot_attention\.gru\.", "slot_attention.gru."),
    (r"^perceptual_grouping\.slot_attention\.norm_input\.", "slot_attention.norm_inputs."),
    (r"^perceptual_grouping\.slot_attention\.norm_slots\.", "slot_attention.norm_slots."),
    (r"^perceptual_grouping\.slot_attention\.ff_mlp\.module\.0\.", "slot_attention.norm_mlp."),
    (r"^perceptual_grouping\.slot_attention\.ff_mlp\.module\.1\.", "slot_attention.mlp.0."),
    (r"^perceptual_grouping\.slot_attention\.ff_mlp\.module\.3\.", "slot_attention.mlp.2."),
    (r"^perceptual_grouping\.slot_attention\.single_gumbel_score_network\.([013])\.", r"selector.net.\1."),
    (r"^object_decoder\.pos_embed$", "decoder.pos_embed"),
    (r"^object_decoder\.decoder\.(\d+)\.", r"decoder.mlp.\1."),
]
# The unofficial DINOSAUR/AdaSlot code (DINOSAURpp).
_DINOSAURPP = [
    (r"^slot_encoder\.([013])\.", r"input_mlp.\1."),
    (r"^slot_encoder\.4\.", "slot_attention.norm_inputs."),
    (r"^slot_attention\.slots_mu$", "slot_attention.init.mu"),
    (r"^slot_attention\.slots_logsigma$", "slot_attention.init.log_sigma"),
    (r"^slot_attention\.([QKV])\.", lambda m: f"slot_attention.to_{m.group(1).lower()}."),
    (r"^slot_attention\.norm\.", "slot_attention.norm_slots."),
    (r"^slot_attention\.gru\.", "slot_attention.gru."),
    (r"^slot_attention\.mlp\.norm\.", "slot_attention.norm_mlp."),
    (r"^slot_attention\.mlp\.layer1\.", "slot_attention.mlp.0."),
    (r"^slot_attention\.mlp\.layer2\.", "slot_attention.mlp.2."),
    (r"^slot_attention\.slot_gating_network\.([013])\.", r"selector.net.\1."),
    (r"^pos_dec$", "decoder.pos_embed"),
    (r"^slot_decoder\.layer(\d+)\.", lambda m: f"decoder.mlp.{2 * (int(m.group(1)) - 1)}."),
]
DINOSAURPP_ENCODERS = {384: "dino-vits-16", 768: "dino-vitb-16"}


def _rename(key: str, rules: list) -> str | None:
    for pattern, target in rules:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return None


def _map(sd: dict[str, torch.Tensor], rules: list, source: str) -> dict[str, torch.Tensor]:
    """Rename every key; an unknown key means another layout (nothing is silently dropped)."""
    out = {}
    for key, value in sd.items():
        target = _rename(key, rules)
        if target is None:
            raise UserError(f"{source}: unexpected key {key}; this is not a layout the importer knows")
        out[target] = value
    return out


# ------------------------------------------------------------------------------- OCLF (official)


def _oclf_state(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "pytorch-lightning_version" in obj:
        return obj["state_dict"]
    return None


def detect_oclf(obj: Any) -> bool:
    """A Lightning file whose model has OCLF's feature extractor, conditioning, grouping and decoder."""
    sd = _oclf_state(obj)
    return sd is not None and "models.conditioning.slots_mu" in sd and \
        "models.perceptual_grouping.slot_attention.to_q.weight" in sd and "models.object_decoder.pos_embed" in sd


def convert_oclf(obj: Any) -> Imported:
    """Official AdaSlot / OCLF DINOSAUR (Lightning) -> this project's ``adaslot`` model."""
    source = "the OCLF checkpoint"
    sd = _oclf_state(obj)
    vit = strip_prefix(sd, "models.feature_extractor.model.")
    if not vit:
        raise UserError(f"{source}: the feature extractor's ViT is not in the file; this importer needs it")
    encoder, encoder_state, notes, assumed = vit_record(vit, source)
    rest = {k[len(OCLF_PREFIX):]: v for k, v in sd.items()
            if k.startswith(OCLF_PREFIX) and not k.startswith("models.feature_extractor.")}
    others = [k for k in sd if not k.startswith(OCLF_PREFIX)]
    if others:
        raise UserError(f"{source}: unexpected key {others[0]} outside models.; not an OCLF model")
    state = _map(rest, _OCLF, source)
    adaptive = any(k.startswith("selector.") for k in state)
    config, more = _config(state, adaptive, encoder_width=int(vit["patch_embed.proj.weight"].shape[0]),
                           patch=int(vit["patch_embed.proj.weight"].shape[-1]), source=source,
                           num_slots=33 if adaptive else 7, sparsity_weight=0.1)
    assumed.update(more)
    notes += _notes(assumed, adaptive)
    return Imported("adaslot_oclf", "adaslot", config, state, encoder=encoder, encoder_state=encoder_state,
                    args=_args(config, encoder["name"]), notes=notes, assumed=assumed)


# ------------------------------------------------------------------------------- DINOSAURpp (unofficial)


def _dinosaurpp_state(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        return obj["model_state_dict"]
    return None


def detect_dinosaurpp(obj: Any) -> bool:
    """``{'model_state_dict': ...}`` with ``slot_encoder.``, ``slot_attention.slots_mu`` and ``slot_decoder.``."""
    sd = _dinosaurpp_state(obj)
    return sd is not None and "slot_attention.slots_mu" in sd and "slot_encoder.0.weight" in sd and "pos_dec" in sd


def convert_dinosaurpp(obj: Any) -> Imported:
    """Unofficial DINOSAUR / AdaSlot (DINOSAURpp) -> this project's ``adaslot`` model."""
    source = "the DINOSAUR/AdaSlot checkpoint"
    state = _map(_dinosaurpp_state(obj), _DINOSAURPP, source)
    adaptive = any(k.startswith("selector.") for k in state)
    width = int(state["input_mlp.0.weight"].shape[0])
    name = DINOSAURPP_ENCODERS.get(width)
    if name is None:
        raise UserError(f"{source}: features {width} wide come from no DINO ViT this importer knows (384, 768)")
    config, assumed = _config(state, adaptive, encoder_width=width, patch=16, source=source, num_slots=7,
                              sparsity_weight=0.5)
    assumed["which_encoder"] = name
    notes = [f"the file holds no encoder: features {width} wide, assumed from {name} (pretrained, loaded by timm; "
             "pass --which_encoder or --set which_encoder=NAME if another ViT made them)"] + _notes(assumed, adaptive)
    encoder = {"name": name, "pretrained": True, "weights_path": None, "finetune_blocks_after": 100,
               "final_norm": False}
    return Imported("adaslot_dinosaurpp", "adaslot", config, state, encoder=encoder, encoder_state=None,
                    args=_args(config, name), notes=notes, assumed=assumed)


# ------------------------------------------------------------------------------- shared


def _config(state: dict[str, torch.Tensor], adaptive: bool, encoder_width: int, patch: int, source: str,
            num_slots: int, sparsity_weight: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AdaSlot config read from the mapped state, and the settings assumed."""
    for key in ("input_mlp.1.weight", "input_mlp.3.weight", "slot_attention.to_q.weight", "slot_attention.mlp.0.weight",
                "decoder.pos_embed", "decoder.mlp.0.weight"):
        if key not in state:
            raise UserError(f"{source}: a trained module is missing ({key}); the file is incomplete")
    linears = sorted({int(k.split(".")[2]) for k in state if k.startswith("decoder.mlp.")})
    if linears != list(range(0, 2 * len(linears), 2)) or len(linears) < 2:
        raise UserError(f"{source}: the MLP decoder's layers are {linears}; expected Linear layers 0, 2, 4, ...")
    num_tokens = int(state["decoder.pos_embed"].shape[1])
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise UserError(f"{source}: the decoder covers {num_tokens} tokens, not a square grid")
    hidden = int(state["input_mlp.1.weight"].shape[0])
    config = {
        "image_size": grid * patch,
        "num_slots": num_slots,
        "slot_size": int(state["slot_attention.to_q.weight"].shape[0]),
        "mlp_hidden_size": int(state["slot_attention.mlp.0.weight"].shape[0]),
        "num_iterations": 3,
        "mlp_dec_hidden": int(state["decoder.mlp.0.weight"].shape[0]),
        "mlp_dec_layers": len(linears) - 1,
        "adaptive": adaptive,
        "use_sparsity_loss": adaptive,
        "sparsity_weight": sparsity_weight,
        "keep_rule": "gumbel",
        "input_mlp_hidden": None if hidden == encoder_width else hidden,
        # Both AdaSlot references keep PyTorch's default initialisation (docs/methods/adaslot.md).
        "init_scheme": "torch_default",
    }
    assumed = {"num_slots": num_slots, "num_iterations": 3}
    if adaptive:
        assumed["sparsity_weight"] = sparsity_weight
    return config, assumed


def _notes(assumed: dict[str, Any], adaptive: bool) -> list[str]:
    stage = "AdaSlot stage 2 (keep/drop selector)" if adaptive else "DINOSAUR / AdaSlot stage 1 (fixed K)"
    open_ = ", ".join(f"{k} {v}" for k, v in assumed.items() if not k.startswith("encoder.") and k != "which_encoder")
    return [f"{stage}; not recorded in the file, defaults of the code that wrote it: {open_} "
            "(pass the flags, e.g. --num_slots, or --set NAME=VALUE when importing)"]


def _args(config: dict[str, Any], encoder: str) -> dict[str, Any]:
    return {"image_size": config["image_size"], "num_slots": config["num_slots"], "which_encoder": encoder}


FORMATS = [
    ReleasedFormat("adaslot_oclf", "official AdaSlot or OCLF DINOSAUR, Lightning .ckpt (amazon-science/AdaSlot)",
                   detect_oclf, convert_oclf),
    ReleasedFormat("adaslot_dinosaurpp", "DINOSAUR/AdaSlot of pschroeppel/DINOSAUR-and-Adaptive-Slot-Attention "
                   "(model_state_dict)", detect_dinosaurpp, convert_dinosaurpp),
]
