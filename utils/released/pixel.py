"""Released pixel models: Slot Attention, SLATE and GNM of the seed's object-discovery repository
(Lightning ``.ckpt`` files) and the official SLATE layout (``.pt.tar``).

What each converter maps, and how it was checked: docs/released_models.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from ground.errors import UserError
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
        # That code runs num_iterations ordinary steps and one more from detached slots: this
        # project's implicit gradient does the same (implicit_extra_iteration), so the count is as stored.
        num_iterations=iterations, implicit_grad=True, implicit_extra_iteration=True,
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
    the tokens; this project keeps the codes' table and positions apart from the BOS row and the
    BOS position (``official_bos``: their sum goes through the same embedding dropout).
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
    keys.out["bos_embedding"] = table[bos_index].view(1, -1).clone()
    keys.out["bos_position"] = pe[0, 0].view(1, -1).clone()
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
    from ground.schedules import cosine_anneal

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
        eval_tokens="sample", official_bos=True,
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
                         mlp_hidden_size=keys.peek("slot_attn.slot_attention.mlp.0.weight").shape[0],
                         eval_tokens="sample", official_bos=True)
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


# --- GNM (object-discovery repository) -------------------------------------------------------------


def _detect_gnm(obj: Any) -> bool:
    return _lightning(obj, "global_struct_draw.rnn_enc.conv.weight") is not None


def _anneal(train: dict[str, Any], name: str) -> list[float]:
    """That code's linear anneal (constant start value when the end step is 0) as this project's schedule."""
    start, end = float(train[f"{name}_anneal_start_value"]), float(train[f"{name}_anneal_end_value"])
    s0, s1 = int(train[f"{name}_anneal_start_step"]), int(train[f"{name}_anneal_end_step"])
    return [start] if s1 == 0 else [start, end, s0, s1]


def _stack(keys: KeyMap, src: str, dst: str, count: int, src_stride: int, src_norm: int, dst_norm: Any,
           last_plain: bool) -> None:
    """Conv/Linear stacks: layer ``i`` at ``src{stride*i}`` (+ norm at ``src{stride*i+norm}``) -> ``dst{i}.0`` / ``.{n}``."""
    for i in range(count):
        keys.put_prefix(f"{dst}{i}.0.", f"{src}{src_stride * i}.", ("weight", "bias"))
        if not (last_plain and i == count - 1):
            norm = dst_norm(i) if callable(dst_norm) else dst_norm
            keys.put_prefix(f"{dst}{i}.{norm}.", f"{src}{src_stride * i + src_norm}.", ("weight", "bias"))


def convert_gnm_hhousen(obj: Any) -> Imported:
    """Map the object-discovery ``GNM`` (Lightning) onto :class:`models.gnm.GNM`."""
    from models.gnm import AUX_WHERE_MEAN, AUX_WHERE_STD, CURRICULUM_ALPHA, GNMConfig
    from models.gnm_render import cell_offsets

    state = _lightning(obj, "global_struct_draw.rnn_enc.conv.weight")
    assert state is not None
    hp = _hparams(obj)
    try:
        z, arch, const, train, data = (hp[k] for k in ("z", "arch", "const", "train", "data"))
        conv, mlp_, draw = arch["conv"], arch["mlp"], arch["structdraw"]
    except (KeyError, TypeError):
        raise UserError("the GNM checkpoint has no complete hyper_parameters (z, arch, const, train, data); "
                        "it was not written by the object-discovery repository's train.py") from None
    if not (arch.get("phase_overlap", True) and arch.get("phase_background", True)) or \
            arch.get("p_global_decoder_type", "MLP") != "MLP" or arch.get("phase_graph_net_on_global_decoder") or \
            arch.get("phase_graph_net_on_global_encoder"):
        raise UserError("the GNM checkpoint uses a variant (no overlap/background, graph nets or a conv global "
                        "decoder) this project does not build")
    if float(train.get("bg_alpha_curriculum_value", CURRICULUM_ALPHA)) != CURRICULUM_ALPHA or \
            int(train.get("bg_alpha_curriculum_period", [0, 0])[0]) != 0:
        raise UserError("the GNM checkpoint's background-alpha curriculum (value 0.9 from step 0) differs from "
                        "this project's")
    if float(train.get("aux_p_scale_anneal_start_value", AUX_WHERE_MEAN[0])) != AUX_WHERE_MEAN[0] or \
            float(train.get("aux_p_scale_anneal_end_value", AUX_WHERE_MEAN[0])) != AUX_WHERE_MEAN[0]:
        raise UserError("the GNM checkpoint anneals the prior object scale; this project keeps it at -1.5")
    size = int(data["img_w"])
    if int(data["img_h"]) != size:
        raise UserError("the GNM checkpoint was trained on non-square images; this project builds square ones")
    keys = KeyMap(state, "the GNM checkpoint")
    curriculum = int(train["bg_alpha_curriculum_period"][1]) if train.get("phase_bg_alpha_curriculum", True) else 0
    schedules = {name: _anneal(train, name) for name in (
        "beta_global", "beta_pres", "beta_where", "beta_depth", "beta_what", "beta_bg", "beta_aux_pres",
        "beta_aux_where", "beta_aux_depth", "beta_aux_what", "beta_aux_bg", "tau_pres")}
    schedules["p_pres_prior"] = _anneal(train, "p_pres")
    head_hidden = [int(f) for f in arch["pwdw"]["pwdw_filters"]]
    config = GNMConfig(
        image_size=size, grid_size=int(arch["num_cell"]), enc_dim=int(arch["img_enc_dim"]),
        draw_hidden=int(draw["rnn_decoder_hid_dim"]), draw_steps=int(arch["draw_step"]),
        z_global_dim=int(z["z_global_dim"]), z_what_dim=int(z["z_what_dim"]), z_bg_dim=int(z["z_bg_dim"]),
        mlp_hidden=int(mlp_["q_global_encoder_filters"][0]),
        likelihood_sigma=float(const["likelihood_sigma"]), curriculum_steps=curriculum, **schedules,
        encoder_filters=list(conv["img_encoder_filters"]), encoder_kernels=list(conv["img_encoder_kernel_sizes"]),
        encoder_strides=list(conv["img_encoder_strides"]),
        draw_stat_hidden=list(mlp_["q_global_encoder_filters"][:-1]),
        draw_map_hidden=list(mlp_["p_global_decoder_filters"][:-1]),
        head_hidden=head_hidden,
        glimpse_filters=list(conv["p_what_decoder_filters"]), glimpse_kernels=list(conv["p_what_decoder_kernel_sizes"]),
        glimpse_upscales=list(conv["p_what_decoder_upscales"]),
        bg_filters=list(conv["p_bg_decoder_filters"]), bg_kernels=list(conv["p_bg_decoder_kernel_sizes"]),
        bg_upscales=list(conv["p_bg_decoder_upscales"]),
        bg_posterior_hidden=list(mlp_["q_bg_encoder_filters"][:-1]),
        bg_prior_hidden=list(mlp_["p_bg_generator_filters"][:-1]),
        draw_map_norm=True, paste_premultiplied=True,  # the official StructDRAW and compositing
    )
    if list(mlp_["p_global_encoder_filters"]) != list(mlp_["q_global_encoder_filters"]) or \
            int(draw["rnn_encoder_hid_dim"]) != config.draw_hidden or int(draw["kernel_size"]) != 1 or \
            list(draw["hid_to_dec_filters"]) != [config.enc_dim] or list(draw["hid_to_dec_kernel_sizes"]) != [3] or \
            float(const["pres_logit_scale"]) != 8.8 or any(int(g) != 1 for g in conv["img_encoder_groups"]):
        raise UserError("the GNM checkpoint's StructDRAW / latent-head settings differ from the ones this project "
                        "builds (equal q/p nets, 1x1 ConvLSTMs, one 3x3 canvas conv, pres scale 8.8, no groups)")
    # Constant buffers: checked against what this project rebuilds, then dropped.
    checks = {"aux_p_where_mean": torch.tensor([AUX_WHERE_MEAN]), "aux_p_where_std": torch.tensor([AUX_WHERE_STD]),
              "aux_p_what_mean": torch.zeros(1), "aux_p_what_std": torch.ones(1), "aux_p_bg_mean": torch.zeros(1),
              "aux_p_bg_std": torch.ones(1), "aux_p_depth_mean": torch.zeros(1), "aux_p_depth_std": torch.ones(1),
              "local_latent_sampler.offset": cell_offsets(config.grid_size).T.reshape(1, 2, config.grid_size,
                                                                                       config.grid_size)}
    for key, expected in checks.items():
        if not torch.allclose(keys.take(key).float().reshape(expected.shape), expected.float(), atol=1e-6):
            raise UserError(f"the GNM checkpoint's {key} differs from this project's fixed value; unsupported variant")
    for key in ("aux_p_pres_probs", "background", "global_struct_draw.dec_step_0"):
        keys.drop(key)  # the annealed prior (recomputed from the step) and zero initial canvases

    n_enc = len(config.encoder_filters)
    _stack(keys, "img_encoder.conv.", "encoder.net.", n_enc, 3, 2, 2, last_plain=False)
    for part in ("enc", "dec"):
        d = f"draw.{part}oder."
        keys.put(f"{d}h0", f"global_struct_draw.rnn_{part}.h_0")
        keys.put(f"{d}c0", f"global_struct_draw.rnn_{part}.c_0")
        keys.put_prefix(f"{d}gates.", f"global_struct_draw.rnn_{part}.conv.", ("weight", "bias"))
    for src, dst in (("global_struct_draw.p_global_net.mlp.", "draw.p_net."),
                     ("global_struct_draw.q_global_net.mlp.", "draw.q_net."),
                     # Its z -> map MLP ends with CELU + LayerNorm as this project's (draw_map_norm):
                     # every layer keeps its index.
                     ("global_struct_draw.p_global_decoder_net.mlp.", "draw.z_to_map."),
                     ("p_bg_given_g_net.p_bg_generator.mlp.", "bg_prior."),
                     ("q_bg_given_x_net.p_bg_encoder.mlp.", "bg_posterior.")):
        for key in keys.keys_under(src):
            keys.put(dst + key[len(src):], key)
    # Its q/p nets read the ConvLSTM state flattened channel-last; this project flattens channel-first,
    # so the first layer's input columns are reordered (the same function of the state).
    g, hidden = config.grid_size, config.draw_hidden
    for net in ("draw.p_net.0.weight", "draw.q_net.0.weight"):
        w = keys.out[net]
        keys.out[net] = w.view(w.shape[0], g, g, hidden).permute(0, 3, 1, 2).reshape(w.shape[0], -1).contiguous()
    keys.put_prefix("draw.to_canvas.", "global_struct_draw.hid_to_dec_net.conv.0.", ("weight", "bias"))
    _stack(keys, "p_z_given_x_or_g_net.pwdw_net.conv.", "local_head.body.", len(head_hidden), 3, 2, 2,
           last_plain=False)
    for a, b in (("q_pres_net", "pres"), ("q_where_net", "where"), ("q_depth_net", "depth"), ("q_what_net", "what")):
        keys.put_prefix(f"local_head.{b}.", f"p_z_given_x_or_g_net.{a}.", ("weight", "bias"))
    # Sub-pixel stages take 4 slots upstream (conv, shuffle, CELU, GroupNorm); here the shuffle is
    # left out when the upscale is 1.
    glimpse_up, bg_up = config.glimpse_upscales, config.bg_upscales
    _stack(keys, "local_latent_sampler.z_what_decoder_net.conv.", "glimpse_decoder.net.", len(glimpse_up), 4, 3,
           lambda i: 3 if glimpse_up[i] > 1 else 2, last_plain=True)
    _stack(keys, "p_bg_decoder.p_bg_decoder.conv.", "bg_decoder.net.", len(bg_up), 4, 3,
           lambda i: 3 if bg_up[i] > 1 else 2, last_plain=True)
    step = int(obj.get("global_step", 0) or 0)
    keys.out["step"] = torch.tensor(step, dtype=torch.long)
    args, notes = _dataset_args(hp, int(hp.get("num_slots", 7)))
    notes.append(f"likelihood sigma {config.likelihood_sigma:g}; training step {step}")
    return Imported("gnm_hhousen", "gnm", asdict(config), keys.finish(), args={"image_size": size, **args},
                    notes=notes)


FORMATS: list[ReleasedFormat] = [
    ReleasedFormat("sa_hhousen", "Slot Attention, object-discovery repository (HHousen/object-discovery-pytorch, "
                   "Lightning .ckpt)", _detect_sa, convert_sa_hhousen),
    ReleasedFormat("slate_hhousen", "SLATE, object-discovery repository (HHousen/object-discovery-pytorch, "
                   "Lightning .ckpt)", _detect_slate_hhousen, convert_slate_hhousen),
    ReleasedFormat("slate_official", "SLATE, official code (singhgautam/slate train.py, .pt.tar)",
                   _detect_slate_official, convert_slate_official),
    ReleasedFormat("gnm_hhousen", "GNM, object-discovery repository (HHousen/object-discovery-pytorch, Lightning .ckpt)",
                   _detect_gnm, convert_gnm_hhousen),
]
