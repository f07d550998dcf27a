"""FT-DINOSAUR's released checkpoints (rw-ocrl/ftdinosaur-inference; Hugging Face mseitzer/ftdinosaur).

The released files are plain state dicts with the prefixes ``encoder.`` (a DINOv2 ViT/14 stored at
its native 518-px grid, no final norm), ``slot_init.``, ``slot_attention.`` (the feature MLP and slot
attention) and ``decoder.`` (the MLP decoder with its position embedding). The keys map one to one
onto :class:`models.ftdinosaur.FTDINOSAUR`; the file has no frozen target encoder, so the imported
model has none (``target_encoder: False``) and needs no DINOv2 download. See docs/methods/ftdinosaur.md.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from ground.errors import UserError
from utils.released import Imported, ReleasedFormat

# Encoder shapes (width, depth, stored position tokens) -> this project's encoder name.
ENCODERS: dict[tuple[int, int, int], str] = {
    (384, 12, 1370): "dinov2_vits14",
    (768, 12, 1370): "dinov2_vitb14",
    (64, 2, 82): "vit_dinov2_tiny_p14",  # the tiny random test model of tests/fixtures/official/ftdinosaur
}
PATCH_SIZE = 14
# Released models are "s7" (7 slots) with top-3 decoding; the slot count is not stored in the weights.
RELEASED_NUM_SLOTS = 7
RELEASED_TOP_K = 3

# Official key (after the ``slot_attention.slot_attention.`` prefix) -> ours (after ``slot_attention.``).
_SLOT_ATTENTION_KEYS = {
    "norm_input.": "norm_inputs.",
    "norm_slots.": "norm_slots.",
    "ff_mlp.module.0.": "norm_mlp.",
    "ff_mlp.module.1.": "mlp.0.",
    "ff_mlp.module.3.": "mlp.2.",
    "to_q.": "to_q.",
    "to_k.": "to_k.",
    "to_v.": "to_v.",
    "gru.": "gru.",
}
_REQUIRED = ("encoder.pos_embed", "encoder.cls_token", "slot_init.slots_mu", "decoder.pos_embed",
             "slot_attention.slot_attention.to_q.weight", "slot_attention.feature_transform.1.weight")


def detect(obj: Any) -> bool:
    """A plain tensor dict with the package's four prefixes."""
    return isinstance(obj, dict) and all(isinstance(obj.get(key), torch.Tensor) for key in _REQUIRED)


def rename(key: str) -> str:
    """This project's name of an official key; a ``UserError`` for keys the layout does not have."""
    if key.startswith("encoder."):
        return "encoder.vit." + key[len("encoder."):]
    if key == "slot_init.slots_mu":
        return "slot_attention.init.mu"
    if key == "slot_init.slots_logsigma":
        return "slot_attention.init.log_sigma"
    match = re.fullmatch(r"slot_attention\.feature_transform\.([013])\.(weight|bias)", key)
    if match:
        return f"input_mlp.{match.group(1)}.{match.group(2)}"
    prefix = "slot_attention.slot_attention."
    if key.startswith(prefix):
        rest = key[len(prefix):]
        for theirs, ours in _SLOT_ATTENTION_KEYS.items():
            if rest.startswith(theirs):
                return "slot_attention." + ours + rest[len(theirs):]
    if key == "decoder.pos_embed":
        return key
    match = re.fullmatch(r"decoder\.decoder\.(\d+)\.(weight|bias)", key)
    if match:
        return f"decoder.mlp.{match.group(1)}.{match.group(2)}"
    raise UserError(f"released FT-DINOSAUR file has an unexpected key {key!r}; it is not a file of the official "
                    "inference package")


def convert(obj: dict[str, torch.Tensor]) -> Imported:
    """Map a released state dict onto this project's FT-DINOSAUR model (no target encoder)."""
    from models.ftdinosaur import FTDINOSAURConfig

    width = int(obj["encoder.cls_token"].shape[-1])
    depth = len({k.split(".")[2] for k in obj if k.startswith("encoder.blocks.")})
    stored_tokens = int(obj["encoder.pos_embed"].shape[1])
    name = ENCODERS.get((width, depth, stored_tokens))
    if name is None:
        raise UserError(f"released FT-DINOSAUR encoder of width {width}, depth {depth}, {stored_tokens} position "
                        f"tokens is not a known DINOv2 model (ViT-S/14 or ViT-B/14)")
    positions = int(obj["decoder.pos_embed"].shape[1])
    side = math.isqrt(positions)
    if side * side != positions:
        raise UserError(f"released decoder position embedding has {positions} positions, not a square grid")
    decoder_layers = sorted(int(k.split(".")[2]) for k in obj if re.fullmatch(r"decoder\.decoder\.\d+\.weight", k))
    config = FTDINOSAURConfig(
        image_size=side * PATCH_SIZE,
        num_slots=RELEASED_NUM_SLOTS,
        slot_size=int(obj["slot_init.slots_mu"].shape[-1]),
        mlp_hidden_size=int(obj["slot_attention.slot_attention.ff_mlp.module.1.weight"].shape[0]),
        num_iterations=3,
        feature_mlp_hidden=int(obj["slot_attention.feature_transform.1.weight"].shape[0]),
        mlp_dec_hidden=int(obj[f"decoder.decoder.{decoder_layers[0]}.weight"].shape[0]),
        num_dec_layers=len(decoder_layers) - 1,
        top_k=RELEASED_TOP_K,
        normalize_target=True,
        target_encoder=False,
    )
    state = {rename(k): v for k, v in obj.items()}
    # The released ViT has no final norm (it is never applied); ours keeps one, unused: identity values.
    state.setdefault("encoder.vit.norm.weight", torch.ones(width))
    state.setdefault("encoder.vit.norm.bias", torch.zeros(width))
    encoder = {"name": name, "pretrained": False, "weights_path": None, "finetune_blocks_after": 0,
               "final_norm": False}
    notes = [
        f"FT-DINOSAUR {name} at {config.image_size} px ({side}x{side} patches), top-{RELEASED_TOP_K} decoding, "
        f"{RELEASED_NUM_SLOTS} slots (pass --num_slots to evaluate with another count)",
        "no frozen target encoder in the file: the reported MSE is against the model's own encoder features",
    ]
    args = {"image_size": config.image_size, "which_encoder": name, "dataset": "coco"}
    return Imported(format="ftdinosaur", method="ftdinosaur", model_config=config.to_dict(), model_state=state,
                    encoder=encoder, args=args, notes=notes)


FORMATS = [
    ReleasedFormat(
        name="ftdinosaur",
        description="FT-DINOSAUR released weights (rw-ocrl/ftdinosaur-inference, Hugging Face mseitzer/ftdinosaur)",
        detect=detect,
        convert=convert,
    )
]
