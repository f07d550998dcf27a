"""FT-DINOSAUR: DINOSAUR with a fine-tuned DINOv2 encoder, frozen pretrained targets and top-k decoding.

Didolkar et al., "On the Transfer of Object-Centric Representation Learning" (ICLR 2025); the method,
recipe and our decisions are described in docs/methods/ftdinosaur.md.

* The encoder (a DINOv2 ViT without registers) is trained whole: patch embedding, position
  embedding, CLS token and every block, with layer-wise learning rates (:func:`parameter_groups`).
  Its position embedding is resampled on the fly to the input grid (bicubic, antialiased).
* The reconstruction targets come from a second, frozen copy of the pretrained encoder; each
  target token is standardised over its channels before the MSE.
* Patch features go through ``LayerNorm -> Linear(D, 2D) -> ReLU -> Linear(2D, Ds)`` into slot
  attention (K = 7 slots of 256, 3 iterations, shared-Gaussian init).
* The MLP decoder decodes, at each patch, only the ``top_k`` slots with the largest last-iteration
  slot-attention weight (hard choice, no gradient through it), in training and evaluation; the
  other slots get mask 0 there.
"""
from __future__ import annotations

import argparse
import copy
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from models import noise
from models.decoders import MLPDecoder
from models.encoders import FrozenViT
from models.slot_attention import SlotAttention, input_mlp

# Variance epsilon of the per-token target standardisation.
TARGET_NORM_EPS: float = 1e-5
# Parameters of the encoder that never get weight decay besides biases and 1-D tensors.
_NO_DECAY_NAMES = re.compile(r"(^|\.)(pos_embed|cls_token|reg_token)$")


@dataclass
class FTDINOSAURConfig:
    """Everything needed to rebuild an FT-DINOSAUR model (stored in every checkpoint).

    ``target_encoder`` False: no frozen copy for the targets (imported released models, which do
    not carry one); the reported MSE is then taken against the model's own encoder features.
    """

    image_size: int = 224
    num_slots: int = 7
    slot_size: int = 256
    mlp_hidden_size: int = 1024
    num_iterations: int = 3
    feature_mlp_hidden: int = 0  # 0: twice the encoder width
    mlp_dec_hidden: int = 2048
    num_dec_layers: int = 3
    top_k: int = 3
    normalize_target: bool = True
    target_encoder: bool = True
    init_method: str = "shared_gaussian"

    @classmethod
    def from_args(cls, args: Any) -> "FTDINOSAURConfig":
        """Pick the model fields out of an argparse namespace (or any object with attributes)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def standardize_tokens(tokens: torch.Tensor, eps: float = TARGET_NORM_EPS) -> torch.Tensor:
    """Each token [..., D] minus its channel mean, divided by ``sqrt(biased variance + eps)`` (float32)."""
    tokens = tokens.float()
    mean = tokens.mean(dim=-1, keepdim=True)
    var = tokens.var(dim=-1, unbiased=False, keepdim=True)
    return (tokens - mean) / torch.sqrt(var + eps)


class FTDINOSAUR(nn.Module):
    """FT-DINOSAUR. ``forward(batch)`` follows the image-model contract of the shared loop.

    Outputs: ``loss`` (= ``mse``), ``losses``, ``reconstruction`` [B, N, D], ``slots`` [B, K, Ds],
    ``masks``: {``decoder``: top-k alpha masks [B, K, h, w] (the reported masks), ``slots``: the
    last slot-attention iteration's attention [B, K, h, w]}.

    Args:
        encoder: the trained ViT (every parameter trainable in the recipe).
        config: the model settings.
        target_encoder: the frozen copy that gives the targets; by default a copy of ``encoder`` made
            now (so build the model before loading trained weights into the encoder).
    """

    def __init__(self, encoder: FrozenViT, config: FTDINOSAURConfig, target_encoder: FrozenViT | None = None) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        self.encoder = encoder
        if config.target_encoder and target_encoder is None:
            target_encoder = copy.deepcopy(encoder)
            target_encoder.finetune_stem = False
            target_encoder.set_finetune_blocks_after(target_encoder.depth)
        if target_encoder is not None and not config.target_encoder:
            raise ValueError("a target encoder was given but config.target_encoder is False")
        if target_encoder is not None:
            target_encoder.requires_grad_(False)
        self.target_encoder = target_encoder
        self.grid = encoder.token_grid(config.image_size)
        dim = encoder.embed_dim
        self.input_mlp = input_mlp(dim, config.slot_size, hidden_dim=config.feature_mlp_hidden or 2 * dim)
        self.slot_attention = SlotAttention(
            input_dim=config.slot_size,
            slot_dim=config.slot_size,
            num_slots=config.num_slots,
            num_iterations=config.num_iterations,
            mlp_hidden_dim=config.mlp_hidden_size,
            init_method=config.init_method,  # type: ignore[arg-type]
        )
        self.decoder = MLPDecoder(config.slot_size, dim, self.grid[0] * self.grid[1], hidden_dim=config.mlp_dec_hidden,
                                  num_hidden_layers=config.num_dec_layers, use_slot_proj=False)

    @torch.no_grad()
    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen target encoder's tokens [B, N, D] (before standardisation): the cacheable part."""
        if self.target_encoder is None:
            raise ValueError("this model has no target encoder")
        return self.target_encoder(images)

    @noise.keyed_forward
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = batch["image"]
        features = self.encoder(images)
        if features.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"images of size {tuple(images.shape[-2:])} give {features.shape[1]} tokens; this model "
                             f"decodes {self.grid[0]}x{self.grid[1]} (image size {self.config.image_size})")
        if "target_features" in batch:  # precomputed by the frozen target encoder (feature cache)
            targets = batch["target_features"]
        elif self.target_encoder is not None:
            targets = self.targets(images)
        else:
            targets = features.detach()
        return self.forward_features(features, targets)

    def forward_features(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Slot attention on encoder ``features`` [B, N, D]; the decoder reconstructs ``targets`` [B, N, D]."""
        sa = self.slot_attention(self.input_mlp(features))
        dec = self.decoder(sa["slots"], top_k=self.config.top_k, select_by=sa["attn"])
        targets = standardize_tokens(targets) if self.config.normalize_target else targets.float()
        mse = ((dec["reconstruction"] - targets) ** 2).mean()
        b, k = sa["slots"].shape[:2]
        h, w = self.grid
        return {
            "loss": mse,
            "losses": {"mse": mse.detach()},
            "reconstruction": dec["reconstruction"],
            "slots": sa["slots"],
            "masks": {"decoder": dec["masks"].reshape(b, k, h, w), "slots": sa["attn"].reshape(b, k, h, w)},
        }


def encoder_group(name: str, depth: int) -> int:
    """The layer-wise LR group (0 .. depth-1) of an encoder parameter (name inside the ViT).

    The stem (patch and position embedding, prefix tokens) shares block 0's group; the final norm
    (used only when asked for) shares the last block's.
    """
    match = re.match(r"blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1))
    if name.startswith("norm.") or name.startswith("fc_norm."):
        return depth - 1
    return 0


def parameter_groups(
    model: FTDINOSAUR,
    base_lr: float,
    encoder_lr_factor: float = 0.125,
    layer_decay: float = 0.85,
    weight_decay: float = 0.01,
) -> list[dict[str, Any]]:
    """AdamW groups of the recipe, the head first.

    * ``head``: slot attention, slot init, feature MLP and decoder at ``base_lr``, no weight decay;
    * ``enc{i}`` / ``enc{i}_no_wd`` for encoder group i: LR ``base_lr * encoder_lr_factor *
      layer_decay ** (depth - 1 - i)``; weight decay ``weight_decay`` on matrices, none on biases,
      1-D tensors (norms, LayerScale), the position embedding and the prefix tokens.

    Every group carries ``name``, ``lr`` and ``weight_decay``; empty groups are left out.
    """
    depth = model.encoder.depth
    encoder_lr = base_lr * encoder_lr_factor
    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(("encoder.", "target_encoder."))]
    groups: list[dict[str, Any]] = [{"name": "head", "params": head, "lr": base_lr, "weight_decay": 0.0}]
    per_group: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.encoder.vit.named_parameters():
        if not param.requires_grad:
            continue
        decays = param.ndim > 1 and not name.endswith(".bias") and not _NO_DECAY_NAMES.search(name)
        per_group.setdefault((encoder_group(name, depth), decays), []).append(param)
    for (index, decays), params in sorted(per_group.items(), key=lambda item: (item[0][0], not item[0][1])):
        groups.append({
            "name": f"enc{index}" if decays else f"enc{index}_no_wd",
            "params": params,
            "lr": encoder_lr * layer_decay ** (depth - 1 - index),
            "weight_decay": weight_decay if decays else 0.0,
        })
    return [g for g in groups if g["params"]]


def encoder_record(spec: dict[str, Any]) -> dict[str, Any]:
    """An encoder record (``utils.cli.encoder_spec``) turned into FT-DINOSAUR's: the stem trains with
    the blocks when every block trains, and the position embedding is resampled as timm does."""
    finetune_all = int(spec.get("finetune_blocks_after", 0)) <= 0
    return {**spec, "finetune_stem": finetune_all, "pos_embed_resampling": "timm"}


def build(config: FTDINOSAURConfig, spec: dict[str, Any]) -> FTDINOSAUR:
    """The model described by a checkpoint's config and encoder record (the registry's builder)."""
    from models import build_encoder_from_spec

    return FTDINOSAUR(build_encoder_from_spec(encoder_record(spec)), config)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """FT-DINOSAUR model flags; defaults are the COCO recipe."""
    from models.slot_attention import INIT_METHODS
    from utils.run import str2bool

    group = parser.add_argument_group("model")
    group.add_argument("--num_slots", type=int, default=7)
    group.add_argument("--slot_size", type=int, default=256)
    group.add_argument("--mlp_hidden_size", type=int, default=1024, help="slot-attention MLP width")
    group.add_argument("--num_iterations", type=int, default=3)
    group.add_argument("--feature_mlp_hidden", type=int, default=0,
                       help="hidden width of the MLP between the encoder and slot attention (0: twice the encoder width)")
    group.add_argument("--mlp_dec_hidden", type=int, default=2048, help="MLP decoder hidden width")
    group.add_argument("--num_dec_layers", type=int, default=3, help="hidden layers of the MLP decoder")
    group.add_argument("--top_k", type=int, default=3,
                       help="decode only the k slots with the highest slot-attention weight at each patch, in "
                            "training and evaluation (0: decode every slot)")
    group.add_argument("--normalize_target", type=str2bool, default=True,
                       help="standardise each target token over its channels before the MSE")
    group.add_argument("--init_method", default="shared_gaussian", choices=INIT_METHODS,
                       help="initial slots: shared_gaussian (the method's: one learned Gaussian, any slot count at "
                            "evaluation) or embedding (K learned vectors, deterministic)")


def check_config(config: FTDINOSAURConfig) -> None:
    """Flag values that cannot work, reported before anything is built."""
    from ground.errors import UserError

    if config.top_k < 0:
        raise UserError(f"--top_k {config.top_k} must be 0 (off) or positive")
    for name in ("num_slots", "slot_size", "num_iterations", "mlp_dec_hidden", "num_dec_layers", "mlp_hidden_size"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name} {getattr(config, name)} must be at least 1")
    from models.slot_attention import INIT_METHODS

    if config.init_method not in INIT_METHODS:
        raise UserError(f"--init_method {config.init_method} is not one of {', '.join(INIT_METHODS)}")
    if config.feature_mlp_hidden < 0:
        raise UserError(f"--feature_mlp_hidden {config.feature_mlp_hidden} must be 0 (twice the width) or positive")
