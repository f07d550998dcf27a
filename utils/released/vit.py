"""The frozen ViT stored inside released checkpoints: its architecture, read from tensor shapes.

SPOT's files hold the whole DINO ViT (``encoder.``), OCLF's Lightning files the timm ViT up to the
feature level (``models.feature_extractor.model.``). Both use timm's key names. This module finds
the encoder record that rebuilds the same architecture in :class:`models.encoders.FrozenViT`:

1. The short name of the DINO model with the same patch size and width (``dino_vitb16`` for a
   768-wide ViT with 16-pixel patches; released files are these exactly).
2. Every size that differs from that model's timm architecture becomes an entry of the record's
   ``model_overrides``: ``embed_dim`` (rows of the patch embedding), ``depth`` (number of
   ``blocks.N``), ``mlp_ratio`` (``mlp.fc1`` rows / width) and ``img_size`` (side of the
   positional-embedding grid times the patch size).
3. The number of attention heads is not visible in any shape. Known widths use their model's
   count (384: 6, 768: 12, ...); other widths are assumed to have 64-wide heads, and the
   setting ``encoder.num_heads`` replaces the assumption.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from ground.errors import UserError

# (patch size, width) -> (short name, depth, mlp ratio, heads, pos-embed grid side) of its timm model.
KNOWN_VITS: dict[tuple[int, int], tuple[str, int, float, int, int]] = {
    (16, 384): ("dino_vits16", 12, 4.0, 6, 14),
    (16, 768): ("dino_vitb16", 12, 4.0, 12, 14),
    (8, 384): ("dino_vits8", 12, 4.0, 6, 28),
    (8, 768): ("dino_vitb8", 12, 4.0, 12, 28),
}
# Heads of the usual ViT widths (head width 64).
HEADS_BY_WIDTH: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
# Keys of the ViT that features never use; dropped when the file has them.
_UNUSED = re.compile(r"^(head|fc_norm|pre_logits)\.")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def vit_record(vit_state: dict[str, torch.Tensor], source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                                         list[str], dict[str, Any]]:
    """(encoder record, weights for ``FrozenViT``, notes, assumed settings) of a timm-keyed ViT state.

    A missing final ``norm`` (OCLF keeps blocks up to the feature level only) is filled with the
    identity LayerNorm: features are taken before it, so it never affects them.
    """
    need = ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.attn.qkv.weight")
    missing = [k for k in need if k not in vit_state]
    if missing:
        raise UserError(f"{source}: the stored ViT lacks {', '.join(missing)}; the file is incomplete")
    state = {k: v for k, v in vit_state.items() if not _UNUSED.match(k)}
    notes: list[str] = []
    patch_w = state["patch_embed.proj.weight"]
    width, patch = int(patch_w.shape[0]), int(patch_w.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / width
    num_pos = state["pos_embed"].shape[1] - 1  # one CLS token
    grid = math.isqrt(num_pos)
    if grid * grid != num_pos:
        raise UserError(f"{source}: the ViT's positional embedding covers {num_pos} patches, not a square grid")
    if patch not in (8, 16):
        raise UserError(f"{source}: a ViT with {patch}-pixel patches is not a DINO model this importer knows")
    standard = (patch, width) in KNOWN_VITS
    # A non-standard width is built on the ViT-B of the same patch size, resized.
    name, k_depth, k_ratio, _, k_grid = KNOWN_VITS[(patch, width) if standard else (patch, 768)]
    overrides: dict[str, Any] = {}
    if not standard:
        overrides["embed_dim"] = width
    if depth != k_depth:
        overrides["depth"] = depth
    if not math.isclose(mlp_ratio, k_ratio):
        overrides["mlp_ratio"] = mlp_ratio
    if grid != k_grid:
        overrides["img_size"] = grid * patch
    assumed: dict[str, Any] = {}
    if not standard:
        heads = HEADS_BY_WIDTH.get(width, max(1, width // 64))
        overrides["num_heads"] = heads
        assumed["encoder.num_heads"] = heads
        notes.append(f"the ViT ({width} wide, {depth} blocks, patch {patch}) is no standard DINO size: built as "
                     f"{name} with {overrides}; its {heads} attention head(s) are assumed (--set encoder.num_heads=N)")
    elif overrides:
        notes.append(f"the ViT differs from {name}'s architecture: built with {overrides}")
    if "norm.weight" not in state:
        state["norm.weight"] = torch.ones(width)
        state["norm.bias"] = torch.zeros(width)
        notes.append("the stored ViT has no final LayerNorm (features are taken before it); an identity one was added")
    record: dict[str, Any] = {"name": name, "pretrained": True, "weights_path": None, "finetune_blocks_after": 100,
                              "final_norm": False}
    if overrides:
        record["model_overrides"] = overrides
    return record, state, notes, assumed
