"""Released pixel models: Slot Attention, SLATE and GNM of the seed's object-discovery repository
(Lightning ``.ckpt`` files) and the official SLATE layout (``.pt.tar``).

What each converter maps, and how it was checked: docs/released_models_pixel_video.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from utils.errors import UserError
from utils.released import Imported, ReleasedFormat
from utils.released.common import KeyMap, all_start_with, as_plain, count_indexed, strip_prefix

# --- shared ---------------------------------------------------------------------------------------


def _lightning(obj: Any, marker: str) -> dict[str, Any] | None:
    """The ``model.``-stripped state of a Lightning checkpoint holding ``model.<marker>``, else None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        return None
    state = obj["state_dict"]
    if not all_start_with(state, "model.") or f"model.{marker}" not in state:
        return None
    return strip_prefix(state, "model.")


def _hparams(obj: dict[str, Any]) -> dict[str, Any]:
    hp = obj.get("hyper_parameters")
    return as_plain(hp) if isinstance(hp, dict) else {}


def _dataset_args(hp: dict[str, Any], num_slots: int) -> tuple[dict[str, Any], list[str]]:
    """This project's ``--dataset`` for the object-discovery repository's dataset name, if it has one.

    That repository keeps scenes with at most ``num_slots - 1`` objects of CLEVR / ClevrTex.
    """
    from datasets import DATASETS

    name = str(hp.get("dataset", ""))
    if name in ("clevr", "clevrtex"):
        candidate = f"{name}{num_slots - 1}"
        return {"dataset": candidate if candidate in DATASETS else name}, []
    if name:
        return {}, [f"trained on {name!r}, which this project does not load; pass --dataset/--data_path when evaluating"]
    return {}, []


def _check_grid(grid: torch.Tensor, source: str) -> None:
    """The stored soft-position grid must be the one this project rebuilds (y, x, 1 - y, 1 - x)."""
    from models.position import position_grid

    expected = position_grid(grid.shape[-3], grid.shape[-2])
    if grid.shape[-1] != 4 or not torch.allclose(grid.reshape(expected.shape).float(), expected, atol=1e-6):
        raise UserError(f"{source}: the stored position grid is not the (y, x, 1-y, 1-x) grid this project uses")


def _map_slot_attention(keys: KeyMap, src: str, dst: str) -> None:
    """The seed repositories' slot attention (project_q/k/v, gru, mlp, norms) onto the shared module."""
    for name in ("norm_inputs", "norm_slots", "norm_mlp"):
        keys.put_prefix(f"{dst}{name}.", f"{src}{name}.", ("weight", "bias"))
    for a, b in (("project_q", "to_q"), ("project_k", "to_k"), ("project_v", "to_v")):
        keys.put(f"{dst}{b}.weight", f"{src}{a}.weight")
    keys.put_prefix(f"{dst}gru.", f"{src}gru.", ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    keys.put_prefix(f"{dst}mlp.", f"{src}mlp.", ("0.weight", "0.bias", "2.weight", "2.bias"))


# --- Slot Attention (object-discovery repository) ---------------------------------------------------


def _detect_sa(obj: Any) -> bool:
    return _lightning(obj, "encoder_out_layer.0.weight") is not None


def convert_sa_hhousen(obj: Any) -> Imported:
    """Map the object-discovery ``SlotAttentionModel`` onto :class:`models.slot_attention_ae.SlotAttentionAE`."""
    from models.slot_attention_ae import SlotAttentionAEConfig

    state = _lightning(obj, "encoder_out_layer.0.weight")
    assert state is not None
    hp = _hparams(obj)
    keys = KeyMap(state, "the Slot Attention checkpoint")
    num_layers = count_indexed(state, "encoder.")
    if num_layers != 4:
        raise UserError(f"the Slot Attention checkpoint has {num_layers} encoder convolutions; this project builds 4")
    conv0 = keys.peek("encoder.0.0.weight")
    channels, kernel = conv0.shape[0], conv0.shape[-1]
    enc_grid, dec_grid = keys.take("encoder_pos_embedding.grid"), keys.take("decoder_pos_embedding.grid")
    _check_grid(enc_grid, "encoder_pos_embedding")
    _check_grid(dec_grid, "decoder_pos_embedding")
    image_size = enc_grid.shape[1]
    num_dec = count_indexed(state, "decoder.")  # stride-2 blocks, then one block with two convolutions
    upsamples = num_dec - 1
    if dec_grid.shape[1] * 2**upsamples != image_size or enc_grid.shape[1] != enc_grid.shape[2]:
        raise UserError("the Slot Attention checkpoint's decoder does not reach its image size; unsupported layout")
    slot_size = keys.peek("slot_attention.slot_mu").shape[-1]
    num_slots = int(hp.get("num_slots", 7))
    iterations = int(hp.get("num_iterations", 3))
    config = SlotAttentionAEConfig(
        image_size=image_size, num_slots=num_slots,
        # That code runs num_iterations ordinary steps and one more from detached slots: in this
        # project that is num_iterations + 1 steps with the first-order (fixed-point) gradient.
        num_iterations=iterations + 1, implicit_grad=True,
        slot_size=slot_size, mlp_hidden_size=keys.peek("slot_attention.mlp.0.weight").shape[0],
        encoder_channels=channels, decoder_channels=keys.peek("decoder.0.0.weight").shape[1],
        decoder_upsamples=upsamples, kernel_size=kernel,
        activation="leaky_relu", encoder_norm=False,
    )
    for i in range(4):
        keys.put_prefix(f"encoder.convs.{2 * i}.", f"encoder.{i}.0.", ("weight", "bias"))
    keys.put_prefix("encoder.pos_embed.proj.", "encoder_pos_embedding.dense.", ("weight", "bias"))
    keys.put_prefix("encoder.mlp.", "encoder_out_layer.", ("0.weight", "0.bias", "2.weight", "2.bias"))
    keys.put_prefix("decoder.pos_embed.proj.", "decoder_pos_embedding.dense.", ("weight", "bias"))
    for i in range(upsamples):
        keys.put_prefix(f"decoder.layers.{2 * i}.", f"decoder.{i}.0.", ("weight", "bias"))
    keys.put_prefix(f"decoder.layers.{2 * upsamples}.", f"decoder.{upsamples}.0.", ("weight", "bias"))
    keys.put_prefix(f"decoder.layers.{2 * upsamples + 2}.", f"decoder.{upsamples}.2.", ("weight", "bias"))
    keys.put("slot_attention.init.mu", "slot_attention.slot_mu")
    keys.put("slot_attention.init.log_sigma", "slot_attention.slot_log_sigma")
    _map_slot_attention(keys, "slot_attention.", "slot_attention.")
    args, notes = _dataset_args(hp, num_slots)
    notes.append(f"{iterations} slot-attention iterations + 1 detached (the source code's implicit gradient)")
    return Imported("sa_hhousen", "slot_attention", asdict(config), keys.finish(),
                    args={"image_size": image_size, **args}, notes=notes)


# --- SLATE (both layouts) ---------------------------------------------------------------------------


def _map_slate(keys: KeyMap, sa_prefix: str, input_norm: str, input_mlp: str, bos_index: int,
               num_blocks: int) -> None:
    """The SLATE modules (dVAE, dictionary, positions, slot attention, decoder) onto :class:`models.slate.SLATE`.

    SLATE embeds a one-hot with one extra BOS column and adds a position table one longer than
    the tokens; this project keeps the codes' table and positions and a separate BOS vector, so
    the BOS row and the first position are summed into it (the same decoder input).
    """
    for part, count in (("encoder", 8), ("decoder", 12)):
        for i in range(count):
            if keys.has(f"dvae.{part}.{i}.m.weight"):  # conv (no bias) + GroupNorm affine
                keys.put(f"dvae.{part}.{i}.0.weight", f"dvae.{part}.{i}.m.weight")
                keys.put_prefix(f"dvae.{part}.{i}.1.", f"dvae.{part}.{i}.", ("weight", "bias"))
            elif keys.has(f"dvae.{part}.{i}.weight"):  # the last plain conv
                keys.put_prefix(f"dvae.{part}.{i}.", f"dvae.{part}.{i}.", ("weight", "bias"))
    table = keys.take("dictionary.dictionary.weight")
    pe = keys.take("positional_encoder.pe")
    codes = torch.cat([table[:bos_index], table[bos_index + 1:]])
    keys.out["token_embedding.weight"] = codes.clone()
    keys.out["position_embedding"] = pe[:, 1:].clone()
    keys.out["decoder.bos_tokens"] = (table[bos_index] + pe[0, 0]).view(1, -1).clone()
    keys.put_prefix("input_mlp.0.", f"{input_norm}.", ("weight", "bias"))
    keys.put_prefix("input_mlp.1.", f"{input_mlp}.0.", ("weight", "bias"))
    keys.put_prefix("input_mlp.3.", f"{input_mlp}.2.", ("weight", "bias"))
    mu_prefix = "slot_attn."
    keys.put("slot_attention.init.mu", f"{mu_prefix}slot_mu")
    keys.put("slot_attention.init.log_sigma", f"{mu_prefix}slot_log_sigma")
    _map_slot_attention(keys, sa_prefix, "slot_attention.")
    keys.put("decoder.slot_proj.0.weight", "slot_proj.weight")
    names = {"self_attn_layer_norm": "self_attn_norm", "encoder_decoder_attn_layer_norm": "cross_attn_norm",
             "ffn_layer_norm": "ffn_norm"}
    for b in range(num_blocks):
        src, dst = f"tf_dec.blocks.{b}.", f"decoder.blocks.{b}."
        mask = keys.take(f"{src}self_attn_mask")
        n = mask.shape[0]
        if not torch.equal(mask.bool(), torch.ones(n, n, dtype=torch.bool).triu(1)):
            raise UserError(f"the SLATE checkpoint's block {b} self-attention mask is not causal; unsupported layout")
        for a, c in names.items():
            keys.put_prefix(f"{dst}{c}.", f"{src}{a}.", ("weight", "bias"))
        for a, c in (("self_attn", "self_attn"), ("encoder_decoder_attn", "cross_attn")):
            keys.put_prefix(f"{dst}{c}.", f"{src}{a}.", ("proj_q.weight", "proj_k.weight", "proj_v.weight", "proj_o.weight"))
        keys.put_prefix(f"{dst}ffn.", f"{src}ffn.", ("0.weight", "0.bias", "2.weight", "2.bias"))
    keys.put_prefix("decoder.final_norm.", "tf_dec.layer_norm.", ("weight", "bias"))
    keys.put("decoder.head.weight", "out.weight")


def _slate_sizes(keys: KeyMap) -> dict[str, Any]:
    """Sizes readable from the tensors (the rest are not stored in the weights)."""
    pe = keys.peek("positional_encoder.pe")
    side = math.isqrt(pe.shape[1] - 1)
    if side * side != pe.shape[1] - 1:
        raise UserError("the SLATE checkpoint's token grid is not square; this project builds square images")
    out = keys.peek("out.weight")
    return {
        "image_size": 4 * side, "vocab_size": out.shape[0], "d_model": out.shape[1],
        "slot_size": keys.peek("slot_attn.slot_mu").shape[-1],
        "num_dec_blocks": count_indexed(keys.state, "tf_dec.blocks."),
        "dvae_hidden_size": keys.peek("dvae.encoder.0.m.weight").shape[0],
    }


def _slate_tau(step: int, config: Any) -> float:
    from utils.schedules import cosine_anneal

    return float(cosine_anneal(step, config.tau_start, config.tau_final, config.tau_steps))


def _detect_slate_hhousen(obj: Any) -> bool:
    return _lightning(obj, "slot_attn.input_mlp.0.weight") is not None and _lightning(obj, "dvae.encoder.0.m.weight") is not None


def convert_slate_hhousen(obj: Any) -> Imported:
    """Map the object-discovery ``SLATE`` (Lightning) onto :class:`models.slate.SLATE`."""
    from models.slate import SLATEConfig

    state = _lightning(obj, "slot_attn.input_mlp.0.weight")
    assert state is not None
    hp = _hparams(obj)
    keys = KeyMap(state, "the SLATE checkpoint")
    sizes = _slate_sizes(keys)
    iterations = int(hp.get("num_iterations", 3))
    config = SLATEConfig(
        **sizes, num_slots=int(hp.get("num_slots", 7)),
        # One extra iteration from detached slots in that code: num_iterations + 1, fixed-point gradient.
        num_iterations=iterations + 1, truncate="fixed-point",
        mlp_hidden_size=keys.peek("slot_attn.mlp.0.weight").shape[0],
        num_heads=int(hp.get("num_heads", 8)), dropout=float(hp.get("dropout", 0.1)),
        tau_start=float(hp.get("tau_start", 1.0)), tau_final=float(hp.get("tau_final", 0.1)),
        tau_steps=int(hp.get("tau_steps", 30000)), hard=bool(hp.get("hard", False)),
    )
    _map_slate(keys, "slot_attn.", "slot_attn.input_layer_norm", "slot_attn.input_mlp", bos_index=0,
               num_blocks=config.num_dec_blocks)
    step = int(obj.get("global_step", 0) or 0)
    keys.out["tau"] = torch.tensor(_slate_tau(step, config))
    args, notes = _dataset_args(hp, config.num_slots)
    notes.append(f"{iterations} slot-attention iterations + 1 detached (the source code's implicit gradient)")
    return Imported("slate_hhousen", "slate", asdict(config), keys.finish(),
                    args={"image_size": config.image_size, **args}, notes=notes)


def _detect_slate_official(obj: Any) -> bool:
    model = obj.get("model") if isinstance(obj, dict) else None
    return (isinstance(model, dict) and "dvae.encoder.0.m.weight" in model
            and "slot_attn.slot_attention.project_q.weight" in model and "tf_dec.layer_norm.weight" in model)


# What the official train.py uses when a flag is not given; the file stores none of them.
SLATE_OFFICIAL_DEFAULTS: dict[str, Any] = {"num_slots": 3, "num_heads": 4, "num_iterations": 3, "dropout": 0.1,
                                           "slot_attention_heads": 1}


def convert_slate_official(obj: Any, **overrides: Any) -> Imported:
    """Map singhgautam/slate's ``SLATE`` onto :class:`models.slate.SLATE`.

    The file holds no arguments: slots, heads and iterations are the official train.py defaults
    unless ``overrides`` (same names as :data:`SLATE_OFFICIAL_DEFAULTS`) say otherwise.
    """
    from models.slate import SLATEConfig

    unknown = set(overrides) - set(SLATE_OFFICIAL_DEFAULTS)
    if unknown:
        raise UserError(f"unknown SLATE settings {sorted(unknown)}; known: {', '.join(SLATE_OFFICIAL_DEFAULTS)}")
    keys = KeyMap(obj["model"], "the SLATE checkpoint")
    settings = {**SLATE_OFFICIAL_DEFAULTS, **overrides}
    config = SLATEConfig(**_slate_sizes(keys), **settings,
                         mlp_hidden_size=keys.peek("slot_attn.slot_attention.mlp.0.weight").shape[0])
    if config.d_model % config.num_heads:
        raise UserError(f"d_model {config.d_model} is not divisible by {config.num_heads} heads; give the number "
                        "of heads the model was trained with")
    # The BOS row: SLATE prepends the BOS column to the one-hot, so it is row 0 of the table.
    _map_slate(keys, "slot_attn.slot_attention.", "slot_attn.layer_norm", "slot_attn.mlp", bos_index=0,
               num_blocks=config.num_dec_blocks)
    # The file does not say how many steps were taken; released models train far past the
    # 30k-step temperature anneal, so the final temperature is used.
    epoch = int(obj.get("epoch", 0) or 0)
    keys.out["tau"] = torch.tensor(config.tau_start if epoch == 0 else config.tau_final)
    notes = [f"not stored in the file, assumed as in the official train.py: {settings}",
             f"Gumbel temperature {float(keys.out['tau']):g} (the file records epoch {epoch}, not the step)"]
    return Imported("slate_official", "slate", asdict(config), keys.finish(),
                    args={"image_size": config.image_size}, notes=notes)


FORMATS: list[ReleasedFormat] = [
    ReleasedFormat("sa_hhousen", "Slot Attention, object-discovery repository (HHousen/object-discovery-pytorch, "
                   "Lightning .ckpt)", _detect_sa, convert_sa_hhousen),
    ReleasedFormat("slate_hhousen", "SLATE, object-discovery repository (HHousen/object-discovery-pytorch, "
                   "Lightning .ckpt)", _detect_slate_hhousen, convert_slate_hhousen),
    ReleasedFormat("slate_official", "SLATE, official code (singhgautam/slate train.py, .pt.tar)",
                   _detect_slate_official, convert_slate_official),
]
