"""SPOT's own checkpoints: stage 1, stage 2 and DINOSAUR trained by the SPOT code base.

The file is ``{'epoch', 'best_*' metrics, 'model': SPOT.state_dict(), 'optimizer'}`` (``checkpoint.pt.tar``)
or the state dict alone (``best_model.pt``). Its model
holds the whole frozen DINO ViT (``encoder.``; in stage 2 the student's copy, whose late blocks
were fine-tuned, and ``second_encoder.``, the frozen original), slot attention with its input MLP
(``slot_attn.``), the decoder (``dec.``, ``tf_dec.`` in older runs) and, at the top level, the
decoder's ``input_proj.``, ``slot_proj.`` and ``bos_tokens``. See docs/released_models.md.

What the file records: every size, the decoder type, the number of patch orderings (BOS tokens),
the slot init (``slot_mu`` or ``slots_init``), the image size (the decoder's token count) and
the encoder. What it does not record is taken from SPOT's defaults and listed in
``Imported.assumed``: ``num_slots`` with the shared-Gaussian init (7), the decoder's
``num_heads`` (6) and ``num_cross_heads``, ``num_iterations`` (3) and ``truncate``.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from ground.errors import UserError
from utils.released import Imported, ReleasedFormat
from utils.released.vit import strip_prefix, vit_record

SPOT_TOP_KEYS = {"model", "epoch", "best_val_loss"}
# SPOT's defaults for what its checkpoints do not record.
DEFAULT_NUM_SLOTS = 7
DEFAULT_NUM_HEADS = 6
DEFAULT_NUM_ITERATIONS = 3

# Renames of the slot-attention part: SPOT name -> this project's name.
_SLOT_ATTN = [
    (r"^slot_attn\.layer_norm\.", "input_mlp.0."),
    (r"^slot_attn\.mlp\.0\.", "input_mlp.1."),
    (r"^slot_attn\.mlp\.2\.", "input_mlp.3."),
    (r"^slot_attn\.slot_mu$", "slot_attention.init.mu"),
    (r"^slot_attn\.slot_log_sigma$", "slot_attention.init.log_sigma"),
    (r"^slot_attn\.slots_init\.weight$", "slot_attention.init.embedding"),
    (r"^slot_attn\.slot_attention\.project_([qkv])\.", r"slot_attention.to_\1."),
    (r"^slot_attn\.slot_attention\.(norm_inputs|norm_slots|norm_mlp|gru|mlp\.0|mlp\.2)\.", r"slot_attention.\1."),
]
# The autoregressive transformer decoder.
_TRANSFORMER = [
    (r"^dec\.blocks\.(\d+)\.self_attn_layer_norm\.", r"decoder.blocks.\1.self_attn_norm."),
    (r"^dec\.blocks\.(\d+)\.self_attn\.(proj_[qkvo])\.", r"decoder.blocks.\1.self_attn.\2."),
    (r"^dec\.blocks\.(\d+)\.encoder_decoder_attn_layer_norm\.", r"decoder.blocks.\1.cross_attn_norm."),
    (r"^dec\.blocks\.(\d+)\.encoder_decoder_attn\.(proj_[qkvo])\.", r"decoder.blocks.\1.cross_attn.\2."),
    (r"^dec\.blocks\.(\d+)\.ffn_layer_norm\.", r"decoder.blocks.\1.ffn_norm."),
    (r"^dec\.blocks\.(\d+)\.ffn\.([02])\.", r"decoder.blocks.\1.ffn.\2."),
    (r"^dec\.layer_norm\.", "decoder.final_norm."),
    (r"^input_proj\.", "decoder.input_proj."),
    (r"^slot_proj\.", "decoder.slot_proj."),
]
# The MLP decoder (DINOSAUR); its Linear layers are decoder.0, .2, .4, .6.
_MLP = [
    (r"^dec\.pos_embed$", "decoder.pos_embed"),
    (r"^dec\.decoder\.(\d+)\.", r"decoder.mlp.\1."),
    (r"^slot_proj\.", "decoder.slot_proj."),
]


def _model_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The SPOT state dict: ``checkpoint.pt.tar``'s ``model``, or ``best_model.pt`` (the state dict alone)."""
    if isinstance(obj, dict) and SPOT_TOP_KEYS <= set(obj) and isinstance(obj["model"], dict):
        return obj["model"]
    if isinstance(obj, dict) and "slot_attn.slot_attention.project_q.weight" in obj:
        return obj
    return None


def _renamed(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The official loaders' rename of old runs' decoder prefix."""
    return {("dec." + k[len("tf_dec."):] if k.startswith("tf_dec.") else k): v for k, v in sd.items()}


def _is_spot(obj: Any) -> bool:
    sd = _model_dict(obj)
    if sd is None:
        return False
    keys = set(_renamed(sd))
    return ("slot_attn.slot_attention.project_q.weight" in keys and "encoder.patch_embed.proj.weight" in keys
            and any(k.startswith("dec.") for k in keys))


def detect_stage1(obj: Any) -> bool:
    """SPOT stage 1 / SPOT-repo DINOSAUR with the transformer decoder: one encoder, ``dec.blocks``."""
    sd = _model_dict(obj)
    return _is_spot(obj) and "second_encoder.patch_embed.proj.weight" not in sd and \
        any(k.startswith("dec.blocks.") for k in _renamed(sd))


def detect_stage2(obj: Any) -> bool:
    """SPOT stage 2 (the student): a fine-tuned ``encoder.`` and the frozen ``second_encoder.``."""
    sd = _model_dict(obj)
    return _is_spot(obj) and "second_encoder.patch_embed.proj.weight" in sd


def detect_mlp(obj: Any) -> bool:
    """DINOSAUR as trained by the SPOT repository (``--dec_type mlp``)."""
    sd = _model_dict(obj)
    return _is_spot(obj) and "second_encoder.patch_embed.proj.weight" not in sd and \
        "dec.pos_embed" in _renamed(sd)


def _rename(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, target in rules:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return None


def convert(obj: Any, fmt: str) -> Imported:
    """Map a SPOT-repository checkpoint onto this project's ``spot`` model."""
    source = "the SPOT checkpoint"
    sd = _renamed(_model_dict(obj))
    notes: list[str] = []
    if any(k.startswith("tf_dec.") for k in _model_dict(obj)):
        notes.append("renamed the decoder prefix tf_dec. -> dec. (older SPOT runs), as the official loader does")
    stage2 = "second_encoder.patch_embed.proj.weight" in sd
    transformer = any(k.startswith("dec.blocks.") for k in sd)

    # --- encoder: the frozen ViT (stage 2: second_encoder; the student's fine-tuned blocks are model weights)
    frozen = strip_prefix(sd, "second_encoder." if stage2 else "encoder.")
    encoder, encoder_state, vit_notes, assumed = vit_record(frozen, source)
    notes += vit_notes
    depth = 1 + max(int(k.split(".")[1]) for k in frozen if k.startswith("blocks."))
    state: dict[str, torch.Tensor] = {}
    finetune_after = 100
    if stage2:
        student = strip_prefix(sd, "encoder.")
        if set(student) != set(frozen):
            raise UserError(f"{source}: the student encoder and second_encoder hold different keys; the file is damaged")
        changed = [i for i in range(depth) if any(not torch.equal(v, frozen[k]) for k, v in student.items()
                                                    if k.startswith(f"blocks.{i}."))]
        finetune_after = min(changed) if changed else depth
        # The final LayerNorm is never applied to SPOT's features (encoder_final_norm False).
        stem_differs = [k for k, v in student.items() if not k.startswith(("blocks.", "norm."))
                        and not torch.equal(v, frozen[k])]
        if stem_differs or changed != list(range(finetune_after, depth)):
            raise UserError(f"{source}: the student encoder differs from the frozen one outside its last blocks "
                            f"({(stem_differs or ['block ' + str(i) for i in changed])[0]}); this project's stage 2 "
                            "fine-tunes the last blocks only")
        for key, value in student.items():
            if key.startswith("blocks.") and int(key.split(".")[1]) >= finetune_after:
                state[f"encoder.vit.{key}"] = value
        encoder["finetune_blocks_after"] = finetune_after
        notes.append(f"stage 2: encoder blocks {finetune_after}..{depth - 1} fine-tuned (differ from second_encoder); "
                     "second_encoder is the frozen encoder" if changed else
                     "stage 2: the student's encoder equals second_encoder (no block was changed)")
    width = int(frozen["patch_embed.proj.weight"].shape[0])
    patch = int(frozen["patch_embed.proj.weight"].shape[-1])

    # --- slot attention and decoder
    rules = _SLOT_ATTN + (_TRANSFORMER if transformer else _MLP)
    dropped: list[str] = []
    for key, value in sd.items():
        if key.startswith("encoder.") or key.startswith("second_encoder."):
            continue
        if transformer and re.match(r"^dec\.blocks\.\d+\.self_attn_mask$", key):
            n = value.shape[0]
            if value.dtype != torch.bool or not torch.equal(value, torch.ones(n, n, dtype=torch.bool).triu(1)):
                raise UserError(f"{source}: {key} is not the causal mask; the decoder cannot be rebuilt")
            continue  # rebuilt on the fly
        if key == "bos_tokens":
            if transformer:
                state["decoder.bos_tokens"] = value.reshape(value.shape[0], -1)
            else:
                dropped.append(key)
            continue
        if not transformer and key.startswith("input_proj."):
            dropped.append(key)  # built by SPOT for every decoder, used by the transformer only
            continue
        target = _rename(key, rules)
        if target is None:
            raise UserError(f"{source}: unexpected key {key}; this is not a layout the importer knows "
                            "(pass --format to check another one)")
        state[target] = value
    if dropped:
        notes.append(f"dropped {', '.join(sorted({k.split('.')[0] for k in dropped}))}: unused by the MLP decoder")

    embedding = "slot_attn.slots_init.weight" in sd
    slot_size = int(sd["slot_attn.slot_attention.project_q.weight"].shape[0])
    config: dict[str, Any] = {
        "slot_size": slot_size,
        "mlp_hidden_size": int(sd["slot_attn.slot_attention.mlp.0.weight"].shape[0]),
        "num_iterations": DEFAULT_NUM_ITERATIONS,
        "slot_attention_heads": 1,
        "truncate": "bi-level" if stage2 else "none",
        "init_method": "embedding" if embedding else "shared_gaussian",
        "dropout": 0.0,
        "use_second_encoder": stage2,
        "eval_permutations": "standard",
        "init_scheme": "xavier",  # the official code's slot-attention initialisation (docs/methods/spot.md)
    }
    assumed.update(num_iterations=DEFAULT_NUM_ITERATIONS, truncate=config["truncate"])
    if embedding:
        config["num_slots"] = int(sd["slot_attn.slots_init.weight"].shape[0])
    else:
        config["num_slots"] = DEFAULT_NUM_SLOTS
        assumed["num_slots"] = DEFAULT_NUM_SLOTS
    if transformer:
        blocks = sorted({int(k.split(".")[2]) for k in sd if k.startswith("dec.blocks.")})
        num_tokens = int(sd["dec.blocks.0.self_attn_mask"].shape[0]) if "dec.blocks.0.self_attn_mask" in sd \
            else int(frozen["pos_embed"].shape[1] - 1)
        num_orderings = int(sd["bos_tokens"].shape[0])
        if num_orderings not in (1, 9):
            raise UserError(f"{source}: {num_orderings} BOS tokens; SPOT has 1 (standard order) or 9 (permutations)")
        config.update(dec_type="transformer", num_dec_blocks=len(blocks), num_heads=DEFAULT_NUM_HEADS,
                      num_cross_heads=None, train_permutations="random" if num_orderings == 9 else "standard",
                      mlp_dec_hidden=2048, use_slot_proj=True)
        assumed.update(num_heads=DEFAULT_NUM_HEADS, num_cross_heads=None)
    else:
        linears = sorted({int(k.split(".")[2]) for k in sd if k.startswith("dec.decoder.")})
        if linears != [0, 2, 4, 6]:
            raise UserError(f"{source}: the MLP decoder has Linear layers {linears}; SPOT's has 3 hidden layers (0, 2, 4, 6)")
        num_tokens = int(sd["dec.pos_embed"].shape[1])
        # With --use_slot_proj the MLP reads slots projected to the feature width.
        use_slot_proj = "slot_proj.0.weight" in sd and int(sd["dec.decoder.0.weight"].shape[1]) == width
        if not use_slot_proj and "slot_proj.0.weight" in sd:
            for key in [k for k in state if k.startswith("decoder.slot_proj.")]:
                del state[key]
            notes.append("dropped slot_proj: the MLP decoder reads the slots directly")
        config.update(dec_type="mlp", num_dec_blocks=4, num_heads=DEFAULT_NUM_HEADS, num_cross_heads=None,
                      train_permutations="standard", mlp_dec_hidden=int(sd["dec.decoder.0.weight"].shape[0]),
                      use_slot_proj=use_slot_proj)
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise UserError(f"{source}: the decoder covers {num_tokens} tokens, not a square grid")
    config["image_size"] = grid * patch
    for key in ("num_slots", "num_heads", "num_iterations"):
        if key in assumed:
            notes.append(f"{key} {assumed[key]} is not recorded in the file (SPOT's default); "
                         f"pass --{key} (eval) or --set {key}=N (import) if the model was trained otherwise")
    args = {"image_size": config["image_size"], "num_slots": config["num_slots"], "which_encoder": encoder["name"]}
    return Imported(format=fmt, method="spot", model_config=config, model_state=state, encoder=encoder,
                    encoder_state=encoder_state, args=args, notes=notes, assumed=assumed)


FORMATS = [
    ReleasedFormat("spot_stage2", "SPOT stage 2 student (gkakogeorgiou/spot train_spot_2.py checkpoint.pt.tar)",
                   detect_stage2, lambda obj: convert(obj, "spot_stage2")),
    ReleasedFormat("spot_stage1", "SPOT stage 1 or DINOSAUR with the transformer decoder (gkakogeorgiou/spot "
                   "train_spot.py checkpoint.pt.tar)", detect_stage1, lambda obj: convert(obj, "spot_stage1")),
    ReleasedFormat("spot_dinosaur_mlp", "DINOSAUR with the MLP decoder (gkakogeorgiou/spot train_spot.py "
                   "--dec_type mlp checkpoint.pt.tar)", detect_mlp, lambda obj: convert(obj, "spot_dinosaur_mlp")),
]
