"""Frozen ViT encoders (DINO, DINOv2, MAE, supervised) built through timm.

The features are the patch tokens of the *last* block, without the final LayerNorm unless asked
for, with the CLS and register tokens dropped (docs/methods/spot.md). Images come in as [0, 1] RGB and are
normalised here, so a feature cache and the model see the same inputs.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import timm
import timm.models
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from ground.constants import IMAGENET_MEAN, IMAGENET_STD
from ground.errors import UserError
from ground.safe_io import read_torch_file
from ground.state_dict import describe_key_mismatch


# Short names (SPOT's torch.hub names and the AdaSlot/DINOSAUR seed names) -> timm names.
ENCODER_ALIASES: dict[str, str] = {
    # SPOT (torch.hub names)
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vitl14": "vit_large_patch14_dinov2.lvd142m",
    "dinov2_vitg14": "vit_giant_patch14_dinov2.lvd142m",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitl14_reg": "vit_large_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitg14_reg": "vit_giant_patch14_reg4_dinov2.lvd142m",
    "mae_vitb16": "vit_base_patch16_224.mae",
    "mae_vitl16": "vit_large_patch16_224.mae",
    # AdaSlot / DINOSAUR seeds
    "dino-vits-16": "vit_small_patch16_224.dino",
    "dino-vitb-16": "vit_base_patch16_224.dino",
    "dino-vits-8": "vit_small_patch8_224.dino",
    "dino-vitb-8": "vit_base_patch8_224.dino",
    "dinov2-vits-14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2-vitb-14": "vit_base_patch14_dinov2.lvd142m",
    "sup-vitb-16": "vit_base_patch16_224.augreg_in21k_ft_in1k",
}

# Tiny random-init configs for tests and the CPU quickstart: name -> (timm arch, overrides).
# They have no pretrained weights. ``vit_patch_p2`` has no transformer block: its tokens are a
# frozen random projection of 2x2-pixel patches (local colour), the quickstart's offline
# stand-in for DINO features; random blocks only blur those colours across tokens.
SMALL_ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit_tiny_p4": ("vit_tiny_patch16_224", dict(patch_size=4, embed_dim=96, depth=2, num_heads=3)),
    "vit_micro_p8": ("vit_tiny_patch16_224", dict(patch_size=8, embed_dim=32, depth=1, num_heads=2)),
    "vit_patch_p2": ("vit_tiny_patch16_224", dict(patch_size=2, embed_dim=64, depth=0, num_heads=1)),
    # A ViT-S/16 (6 heads) shrunk to width 48 and one block: the layout of the SMTC import test's file.
    "vit_w48_p16": ("vit_small_patch16_224", dict(patch_size=16, embed_dim=48, depth=1, num_heads=6)),
    # DINOv2-like (patch 14, LayerScale, a 9x9 stored position grid resampled on the fly): FT-DINOSAUR tests.
    "vit_dinov2_tiny_p14": ("vit_small_patch14_dinov2", dict(patch_size=14, img_size=126, embed_dim=64, depth=2,
                                                             num_heads=2)),
}

# How the stored position embedding is resized to another token grid (see FrozenViT):
# ``dino`` as the official DINO/DINOv2 code, ``timm`` (bicubic, antialiased, by target size) as
# timm's dynamic image size and the FT-DINOSAUR code.
POS_EMBED_RESAMPLING: tuple[str, ...] = ("dino", "timm")

# Keys of a classification head (or of pooling in front of it): never used for patch features,
# so they may be missing from, or left over in, a weights file.
_HEAD_KEY = re.compile(r"^(head|fc_norm|pre_logits|head_drop|attn_pool)\.")
# The token stem: everything before the first block.
_STEM_KEY = re.compile(r"^(patch_embed\.|pos_embed$|cls_token$|reg_token$|norm_pre\.)")


def _examples() -> str:
    return ", ".join(["dino_vitb16", "dinov2_vitb14", "dino-vitb-16", "vit_base_patch16_224.dino",
                      *SMALL_ENCODERS])


def resolve_encoder_name(name: str) -> str:
    """Map a short name to its timm name; a valid timm ViT name maps to itself.

    Small test configs map to their timm architecture (their size overrides live in
    :data:`SMALL_ENCODERS`).
    """
    if name in ENCODER_ALIASES:
        return ENCODER_ALIASES[name]
    if name.lower() in ENCODER_ALIASES:
        return ENCODER_ALIASES[name.lower()]
    if name in SMALL_ENCODERS:
        return SMALL_ENCODERS[name][0]
    if timm.models.is_model(name) and timm.models.is_model_in_modules(
        timm.models.split_model_name_tag(name)[0], ["vision_transformer"]
    ):
        try:  # an unknown pretrained tag (".foo") is only caught here
            timm.models.get_pretrained_cfg(name)
        except RuntimeError:
            pass
        else:
            return name
    raise UserError(f"unknown encoder {name!r}; use a short name or a timm ViT name, e.g. {_examples()}")


def _load_file(path: str, trust: bool = False) -> Any:
    """Read a .safetensors or torch weights file onto the CPU without running code stored in it.

    Full DINO training checkpoints pickle an ``argparse.Namespace``, which the safe reader allows;
    a file that needs anything more is refused unless the user passed ``--trust_checkpoint``
    (``trust``).
    """
    if not os.path.isfile(path):
        raise UserError(f"encoder weights file {path} does not exist; check --encoder_weights")
    return read_torch_file(path, trust=trust, what="encoder weights file")


def _short(err: BaseException) -> str:
    """One-line reason for an exception."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def _strip_prefix(sd: dict[str, Any], prefix: str, only_those: bool) -> dict[str, Any]:
    """Remove ``prefix`` from keys; keep only prefixed keys if ``only_those``, else require all."""
    if only_those:
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        return sd
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _unwrap_state_dict(obj: Any, path: str) -> dict[str, Tensor]:
    """Reduce a DINO/DINOv2/MAE/timm checkpoint to a flat ViT state dict (timm or original keys)."""
    sd = obj
    for _ in range(5):  # nested wrappers, e.g. {"model": {"state_dict": ...}}
        if not isinstance(sd, Mapping):
            break
        # DINO evaluates the teacher, hence "teacher" before "student"/"model".
        inner = next((sd[k] for k in ("teacher", "model", "state_dict", "module")
                      if isinstance(sd.get(k), Mapping)), None)
        if inner is None:
            break
        sd = inner
    if not isinstance(sd, Mapping):
        raise UserError(f"encoder weights file {path} holds a {type(sd).__name__}, not a state dict")
    sd = {str(k): v for k, v in sd.items() if isinstance(v, Tensor)}
    if not sd:
        raise UserError(f"encoder weights file {path} contains no tensors")
    sd = _strip_prefix(sd, "module.", only_those=False)  # DDP
    sd = _strip_prefix(sd, "teacher.", only_those=True)  # DINOv2 training checkpoints
    sd = _strip_prefix(sd, "backbone.", only_those=True)  # DINO wrapper; drops the DINO head
    sd = _strip_prefix(sd, "vit.", only_those=False)  # a FrozenViT.state_dict() from this module
    if "decoder_embed.weight" in sd:  # MAE pretraining checkpoint with its decoder
        sd = {k: v for k, v in sd.items() if not (k.startswith("decoder") or k == "mask_token")}
    return sd


class FrozenViT(nn.Module):
    """A timm ViT that returns last-block patch tokens of [0, 1] images, frozen by default.

    Blocks with index >= ``finetune_blocks_after`` are trainable (SPOT stage 2); everything else
    (patch embedding, positional embedding, CLS/register tokens, final norm) is frozen, unless
    ``finetune_stem`` (FT-DINOSAUR trains the whole ViT): then the patch embedding, position
    embedding and prefix tokens train too. The ViT runs in eval mode, as SPOT's ``forward_encoder``
    does (unless ``set_stochastic_depth`` asks otherwise). ``pos_embed_resampling`` picks how the
    stored position embedding is resized to another token grid (:data:`POS_EMBED_RESAMPLING`).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = True,
        weights_path: str | None = None,
        finetune_blocks_after: int = 100,
        final_norm: bool = False,
        model_overrides: dict[str, Any] | None = None,
        trust_weights: bool = False,
        finetune_stem: bool = False,
        pos_embed_resampling: str = "dino",
    ) -> None:
        """``trust_weights``: the user's ``--trust_checkpoint``, for a ``weights_path`` file that
        needs full unpickling (see docs/checkpoints.md)."""
        super().__init__()
        if pos_embed_resampling not in POS_EMBED_RESAMPLING:
            raise ValueError(f"pos_embed_resampling must be one of {POS_EMBED_RESAMPLING}, got {pos_embed_resampling!r}")
        self.name = name
        self.finetune_stem = bool(finetune_stem)
        self.pos_embed_resampling = pos_embed_resampling
        self.timm_name = resolve_encoder_name(name)
        self.final_norm = bool(final_norm)
        self.finetune_blocks_after = int(finetune_blocks_after)
        small = name in SMALL_ENCODERS
        kwargs: dict[str, Any] = dict(SMALL_ENCODERS[name][1]) if small else {}
        kwargs.update(model_overrides or {})
        kwargs.update(num_classes=0, dynamic_img_size=True)

        if weights_path is not None:
            # An explicit file wins over `pretrained`: it is the stronger statement of intent.
            vit = self._create(pretrained=False, kwargs=kwargs)
            self._load_weights(vit, weights_path, trust_weights)
            self.weights_source = str(weights_path)
        elif pretrained:
            if small:
                raise UserError(f"encoder {name} is a small test config without pretrained weights; "
                                "pass --no_pretrained for random weights or --encoder_weights PATH")
            cfg = timm.models.get_pretrained_cfg(self.timm_name)
            if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
                # timm would fall back to random weights with only a log line (pitfall 22).
                raise UserError(f"timm has no pretrained weights for {self.timm_name}; pass "
                                "--encoder_weights PATH, or --no_pretrained for random weights")
            try:
                vit = timm.create_model(self.timm_name, pretrained=True, **kwargs)
            except TypeError:
                raise  # bad model_overrides: a programming error, not a download failure
            except Exception as err:
                raise UserError(
                    f"could not fetch pretrained weights for {name} ({_short(err)}); download them "
                    "elsewhere and pass --encoder_weights PATH, or pass --no_pretrained for random weights"
                ) from err
            self.weights_source = "timm-hub"
        else:
            vit = self._create(pretrained=False, kwargs=kwargs)
            self.weights_source = "random"
        self.is_pretrained = self.weights_source != "random"

        if not isinstance(vit, VisionTransformer):
            raise UserError(f"encoder {name} ({self.timm_name}) is not a plain timm VisionTransformer")
        self.vit = vit
        patch = tuple(vit.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise UserError(f"encoder {name} has a non-square patch {patch}; only square patches work")
        self.patch_size: int = int(patch[0])
        self.embed_dim: int = int(vit.embed_dim)
        self.num_prefix_tokens: int = int(vit.num_prefix_tokens)
        self.depth: int = len(vit.blocks)

        # Random small configs use ImageNet statistics like DINO; named models use their own.
        pcfg = getattr(vit, "pretrained_cfg", None) or {}
        mean = IMAGENET_MEAN if small else tuple(pcfg.get("mean", IMAGENET_MEAN))
        std = IMAGENET_STD if small else tuple(pcfg.get("std", IMAGENET_STD))
        # Non-persistent: the state dict stays a plain timm ViT state dict (loadable as weights).
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

        self.stochastic_depth = 0.0  # drop-path rate of the last block (set_stochastic_depth)
        self.set_finetune_blocks_after(self.finetune_blocks_after)
        self.train(self.training)

    # ------------------------------------------------------------------ construction helpers
    def _create(self, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
        return timm.create_model(self.timm_name, pretrained=pretrained, **kwargs)

    def _load_weights(self, vit: nn.Module, path: str, trust: bool = False) -> None:
        """Load a local weights file strictly (classifier-head keys excepted)."""
        sd = _unwrap_state_dict(_load_file(path, trust), path)
        # timm's filter would silently resample a patch embedding of another patch size:
        # a wrong file for this encoder must fail instead.
        w = sd.get("patch_embed.proj.weight")
        want = vit.patch_embed.proj.weight.shape
        if w is not None and w.ndim == 4 and tuple(w.shape[-2:]) != tuple(want[-2:]):
            raise UserError(f"encoder weights file {path} has patch size {tuple(w.shape[-2:])}, but "
                            f"{self.name} ({self.timm_name}) uses {tuple(want[-2:])}; pick the matching encoder")
        try:
            # Converts original DINOv2 keys (register tokens, mask token) and resamples pos_embed.
            sd = checkpoint_filter_fn(dict(sd), vit)
        except Exception as err:
            raise UserError(f"encoder weights file {path} does not fit {self.timm_name} ({_short(err)})") from err
        own = vit.state_dict()
        problem = describe_key_mismatch(sd, own, ignore=lambda key: bool(_HEAD_KEY.match(key)))
        if problem:
            raise UserError(f"encoder weights file {path} does not match {self.name} ({self.timm_name}): "
                            + problem)
        vit.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)

    # ------------------------------------------------------------------ mode and freezing
    def set_finetune_blocks_after(self, index: int) -> None:
        """Make blocks with index >= ``index`` (and the stem, with ``finetune_stem``) trainable; freeze the rest."""
        self.finetune_blocks_after = int(index)
        for pname, param in self.vit.named_parameters():
            m = re.match(r"blocks\.(\d+)\.", pname)
            stem = self.finetune_stem and _STEM_KEY.match(pname) is not None
            param.requires_grad_(stem or (m is not None and int(m.group(1)) >= self.finetune_blocks_after))

    @property
    def stem_trainable(self) -> bool:
        """Whether the token stem (patch/position embedding, prefix tokens) receives gradients."""
        return any(p.requires_grad for n, p in self.vit.named_parameters() if _STEM_KEY.match(n))

    def train(self, mode: bool = True) -> "FrozenViT":
        """Set the module flag but keep the ViT in eval mode (no dropout/drop-path, as in SPOT),
        unless stochastic depth was switched on (:meth:`set_stochastic_depth`)."""
        super().train(mode)
        self.vit.train(mode and self.stochastic_depth > 0)
        return self

    def set_stochastic_depth(self, rate: float) -> None:
        """Drop-path with rates rising linearly from 0 (first block) to ``rate`` (last block), the
        DINO ViT's rule; with ``rate > 0`` the ViT runs in training mode whenever this module does
        (SMTC's fine-tuned student). Drop-path has no weights: checkpoints are unaffected."""
        from timm.layers import DropPath

        self.stochastic_depth = float(rate)
        rates = torch.linspace(0, self.stochastic_depth, self.depth).tolist()
        for blk, r in zip(self.vit.blocks, rates):
            blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
            blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
        self.train(self.training)

    @property
    def trainable(self) -> bool:
        """Whether any encoder parameter receives gradients."""
        return any(p.requires_grad for p in self.vit.parameters())

    @property
    def cache_tag(self) -> str:
        """Identifies the features this encoder produces (for a precomputed-feature cache)."""
        tag = f"{self.timm_name}|{self.weights_source}|final_norm={int(self.final_norm)}"
        return tag if self.pos_embed_resampling == "dino" else f"{tag}|pos={self.pos_embed_resampling}"

    def first_trainable_block(self) -> int:
        """Blocks before this index (and the token stem) can run without autograd."""
        for pname, param in self.vit.named_parameters():
            if param.requires_grad and not pname.startswith("blocks.") and not pname.startswith("norm.") \
                    and not _HEAD_KEY.match(pname):
                return 0  # e.g. someone unfroze the patch embedding
        for i, blk in enumerate(self.vit.blocks):
            if any(p.requires_grad for p in blk.parameters()):
                return i
        return self.depth

    # ------------------------------------------------------------------ forward
    def token_grid(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Token grid (h, w) for an image size; sides must be multiples of the patch size."""
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        for side in (h, w):
            if side <= 0 or side % self.patch_size:
                good = max(self.patch_size, round(side / self.patch_size) * self.patch_size)
                raise UserError(f"image size {side} is not a multiple of the encoder's patch size "
                                f"{self.patch_size} ({self.name}); use e.g. {good}")
        return h // self.patch_size, w // self.patch_size

    def num_tokens(self, image_size: int | tuple[int, int]) -> int:
        """Number of patch tokens (h * w) the encoder returns for an image size."""
        h, w = self.token_grid(image_size)
        return h * w

    def _interpolated_pos_embed(self, gh: int, gw: int) -> Tensor:
        """Positional embedding for a (gh, gw) token grid, interpolated as DINO/DINOv2 do.

        Official DINO and DINOv2 resize with bicubic, no antialias and a scale factor of
        (g + 0.1) / g0; timm antialiases, which differs when shrinking (DINOv2 518 -> 224 px).
        """
        pos = self.vit.pos_embed
        g0h, g0w = self.vit.patch_embed.grid_size
        n_pre = 0 if self.vit.no_embed_class else self.num_prefix_tokens
        if (gh, gw) == (g0h, g0w):
            return pos
        if self.pos_embed_resampling == "timm":
            from timm.layers import resample_abs_pos_embed

            return resample_abs_pos_embed(pos.float(), new_size=[gh, gw], old_size=[g0h, g0w], num_prefix_tokens=n_pre,
                                          interpolation="bicubic", antialias=True).to(pos.dtype)
        dtype = pos.dtype
        prefix, patches = pos[:, :n_pre].float(), pos[:, n_pre:].float()
        dim = patches.shape[-1]
        patches = F.interpolate(
            patches.reshape(1, g0h, g0w, dim).permute(0, 3, 1, 2),
            scale_factor=((gh + 0.1) / g0h, (gw + 0.1) / g0w),
            mode="bicubic",
            align_corners=False,
        )
        assert patches.shape[-2:] == (gh, gw), (patches.shape, gh, gw)
        patches = patches.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
        return torch.cat([prefix, patches], dim=1).to(dtype)

    def _tokens(self, x: Tensor, gh: int, gw: int) -> Tensor:
        """Patch embedding + prefix tokens + positional embedding (DINO's ``prepare_tokens``)."""
        vit = self.vit
        x = vit.patch_embed(x)  # [B, gh, gw, D] with dynamic_img_size
        x = x.reshape(x.shape[0], gh * gw, x.shape[-1])
        prefix = []
        if vit.cls_token is not None:
            prefix.append(vit.cls_token.expand(x.shape[0], -1, -1))
        if vit.reg_token is not None:
            prefix.append(vit.reg_token.expand(x.shape[0], -1, -1))
        pos = self._interpolated_pos_embed(gh, gw)
        if vit.no_embed_class:  # DINOv2-reg in timm: pos covers the patches only
            x = x + pos
            x = torch.cat(prefix + [x], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        x = vit.pos_drop(x)
        x = vit.patch_drop(x)
        return vit.norm_pre(x)

    def forward(self, images: Tensor) -> Tensor:
        """[B, 3, H, W] images in [0, 1] -> last-block patch tokens [B, h*w, D]."""
        if self.stem_trainable:  # the stem needs autograd too (FT-DINOSAUR)
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
            gh, gw = self.token_grid((images.shape[-2], images.shape[-1]))
            x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
            return self.forward_from(self._tokens(x, gh, gw), 0)
        k = self.first_trainable_block()
        return self.forward_from(self.frozen_prefix(images, k), k)

    def frozen_prefix(self, images: Tensor, num_blocks: int) -> Tensor:
        """Tokens (prefix tokens included) after the stem and the first ``num_blocks`` blocks.

        Runs without autograd, so the blocks must be frozen; two encoders whose stem and first
        ``num_blocks`` blocks hold the same weights can share this output (SPOT stage 2).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        if num_blocks > self.first_trainable_block():
            raise ValueError(f"block {self.first_trainable_block()} is trainable and cannot run without autograd")
        gh, gw = self.token_grid((images.shape[-2], images.shape[-1]))
        if self.vit.training and not self.stochastic_depth:  # someone called .train() on the inner ViT directly
            self.vit.eval()
        with torch.no_grad():  # frozen part: no activations kept for backward
            x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
            x = self._tokens(x, gh, gw)
            for blk in self.vit.blocks[:num_blocks]:
                x = blk(x)
        return x

    def forward_from(self, tokens: Tensor, start_block: int) -> Tensor:
        """Run blocks ``start_block``.. (and the final norm if asked) -> patch tokens [B, h*w, D]."""
        if self.vit.training and not self.stochastic_depth:
            self.vit.eval()
        x = tokens
        for blk in self.vit.blocks[start_block:]:
            x = blk(x)
        if self.final_norm:
            x = self.vit.norm(x)
        return x[:, self.num_prefix_tokens:]

    def forward_with_keys(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 3, H, W] -> (last-block patch tokens [B, h*w, D], last-block attention keys
        [B, h*w, D] with the heads concatenated). SMTC runs slot attention on the keys (docs/methods/smtc.md)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        gh, gw = self.token_grid((images.shape[-2], images.shape[-1]))
        k = self.first_trainable_block()
        grad_wanted = torch.is_grad_enabled()
        # k == 0 may mean a trainable stem (SMTC trains the patch/position embeddings): keep its graph.
        with torch.set_grad_enabled(grad_wanted and k == 0):
            x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
            x = self._tokens(x, gh, gw)
        with torch.no_grad():
            for blk in self.vit.blocks[: min(k, self.depth - 1)]:
                x = blk(x)
        with torch.set_grad_enabled(grad_wanted):
            for blk in self.vit.blocks[min(k, self.depth - 1) : -1]:
                x = blk(x)
            last = self.vit.blocks[-1]
            attn = last.attn
            b, n, d = x.shape
            qkv = attn.qkv(last.norm1(x)).reshape(b, n, 3, attn.num_heads, d // attn.num_heads)
            keys = attn.k_norm(qkv[:, :, 1].transpose(1, 2)).transpose(1, 2).reshape(b, n, d)
            x = last(x)
            if self.final_norm:
                x = self.vit.norm(x)
        p = self.num_prefix_tokens
        return x[:, p:], keys[:, p:]

    def extra_repr(self) -> str:
        return (f"name={self.name}, timm_name={self.timm_name}, weights={self.weights_source}, "
                f"patch_size={self.patch_size}, embed_dim={self.embed_dim}, "
                f"finetune_blocks_after={self.finetune_blocks_after}, final_norm={self.final_norm}")
