"""SPOT stage 1 and DINOSAUR: frozen ViT features -> slot attention -> feature reconstruction.

``train_permutations=standard`` with ``dec_type=mlp`` is DINOSAUR (MLP decoder); with the
autoregressive transformer decoder it is the SPOT paper's "DINOSAUR re-implementation";
``train_permutations=random`` is SPOT stage 1 (docs/methods/spot.md, docs/methods/dinosaur.md).
"""
from __future__ import annotations

import argparse

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from models import noise
from models.decoders import AutoregressiveDecoder, MLPDecoder
from models.encoders import FrozenViT
from models.permutations import patch_orderings
from models.slot_attention import SlotAttention, input_mlp

PERMUTATION_MODES: tuple[str, ...] = ("standard", "random", "all")
DECODER_TYPES: tuple[str, ...] = ("transformer", "mlp")


@dataclass
class SPOTConfig:
    """Everything needed to rebuild a SPOT/DINOSAUR model (stored in every checkpoint)."""

    image_size: int = 224
    num_slots: int = 7
    slot_size: int = 256
    mlp_hidden_size: int = 1024
    num_iterations: int = 3
    slot_attention_heads: int = 1
    truncate: str = "none"
    init_method: str = "shared_gaussian"
    dec_type: str = "transformer"
    num_dec_blocks: int = 4
    num_heads: int = 6
    num_cross_heads: int | None = None
    dropout: float = 0.0
    mlp_dec_hidden: int = 2048
    use_slot_proj: bool = True
    train_permutations: str = "random"
    eval_permutations: str = "standard"
    use_second_encoder: bool = False
    init_scheme: str = "xavier"  # slot attention's initialisation (SPOT's code, DINOSAUR included)

    @classmethod
    def from_args(cls, args: Any) -> "SPOTConfig":
        """Pick the model fields out of an argparse namespace (or any object with attributes)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_orderings(self) -> int:
        """BOS tokens of the AR decoder: one for raster order only, nine otherwise."""
        return 1 if self.train_permutations == "standard" else 9


class SPOT(nn.Module):
    """SPOT / DINOSAUR model. ``forward(batch)`` returns a dict of named outputs.

    Outputs: ``loss`` (= ``mse``), ``reconstruction`` [B, N, D], ``slots`` [B, K, Ds],
    ``masks``: {``decoder``: [B, K, h, w], ``slots``: [B, K, h, w]} (token-grid masks,
    normalised over slots), and ``attn_logits`` [B, N, K] of the last slot-attention iteration.
    """

    # "all" orderings: at most this many (image, ordering) sequences per decoder pass; bounds the
    # memory of decoding the nine orderings together (a ViT-B decoder needs ~5 MB per sequence).
    decode_chunk_rows: int = 512

    def __init__(self, encoder: FrozenViT, config: SPOTConfig, target_encoder: FrozenViT | None = None) -> None:
        super().__init__()
        if config.dec_type not in DECODER_TYPES:
            raise ValueError(f"unknown decoder type {config.dec_type!r}")
        for flag in ("train_permutations", "eval_permutations"):
            if getattr(config, flag) not in PERMUTATION_MODES:
                raise ValueError(f"--{flag} must be one of {PERMUTATION_MODES}")
        check_config(config)
        self.config = config
        self.encoder = encoder
        # A frozen copy for targets only matters when some encoder blocks are fine-tuned. Stage 2
        # passes the frozen original (shared with its teacher) instead of a fresh copy.
        if target_encoder is not None and not config.use_second_encoder:
            raise ValueError("a target encoder was given but config.use_second_encoder is False")
        if config.use_second_encoder and target_encoder is None:
            target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_encoder = target_encoder
        from ground.errors import UserError

        head_checks = [("slot_attention_heads", config.slot_attention_heads, config.slot_size)]
        if config.dec_type == "transformer":
            head_checks += [("num_heads", config.num_heads, encoder.embed_dim),
                            ("num_cross_heads", config.num_cross_heads or config.num_heads, encoder.embed_dim)]
        for flag, heads, width in head_checks:
            if width % heads:
                raise UserError(f"--{flag} {heads} does not divide the width {width}; pick a divisor of {width}")
        self.grid = encoder.token_grid(config.image_size)
        num_tokens = self.grid[0] * self.grid[1]
        dim = encoder.embed_dim
        self.register_buffer("orderings", patch_orderings(*self.grid), persistent=False)

        self.input_mlp = input_mlp(dim)
        self.slot_attention = SlotAttention(
            input_dim=dim,
            slot_dim=config.slot_size,
            num_slots=config.num_slots,
            num_iterations=config.num_iterations,
            num_heads=config.slot_attention_heads,
            mlp_hidden_dim=config.mlp_hidden_size,
            init_method=config.init_method,  # type: ignore[arg-type]
            truncate=config.truncate,  # type: ignore[arg-type]
            init_scheme=config.init_scheme,
        )
        if config.dec_type == "mlp":
            self.decoder: nn.Module = MLPDecoder(
                config.slot_size, dim, num_tokens, hidden_dim=config.mlp_dec_hidden, use_slot_proj=config.use_slot_proj
            )
        else:
            self.decoder = AutoregressiveDecoder(
                feature_dim=dim,
                slot_dim=config.slot_size,
                num_tokens=num_tokens,
                num_blocks=config.num_dec_blocks,
                num_heads=config.num_heads,
                num_cross_heads=config.num_cross_heads,
                dropout=config.dropout,
                num_orderings=config.num_orderings,
            )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen features [B, N, D] of images [B, 3, H, W] in [0, 1] (the cacheable stage)."""
        return self.encoder(images)

    def _ordering_indices(self) -> list[int] | list[torch.Tensor]:
        mode = self.config.train_permutations if self.training else self.config.eval_permutations
        if self.config.num_orderings == 1 or mode == "standard":
            return [0]
        if mode == "all":
            return list(range(self.config.num_orderings))
        # One ordering per batch. In training, from the step's key (models/noise.py): the same on
        # every process, so the whole global batch shares it as with one process. Otherwise from
        # the torch RNG (--seed covers it). A 0-d tensor on the model's device: no .item() host sync.
        index = noise.step_randint(self.config.num_orderings, "spot_ordering", self.orderings.device)
        if index is None:
            index = torch.randint(self.config.num_orderings, (), device=self.orderings.device)
        return [index]

    def decode(self, slots: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstruction [B, N, D] and decoder masks [B, K, N], averaged over orderings."""
        if self.config.dec_type == "mlp":
            out = self.decoder(slots)
            return {"reconstruction": out["reconstruction"], "masks": out["masks"]}
        indices = self._ordering_indices()
        if len(indices) == 1:
            index = indices[0]
            ordering = (self.orderings.index_select(0, index.view(1))[0] if isinstance(index, torch.Tensor)
                        else self.orderings[index])
            out = self.decoder(slots, targets, ordering=ordering, ordering_index=index)
            return {"reconstruction": out["reconstruction"], "masks": out["masks"]}
        # Several orderings ("all"): decoded together, stacked along the batch dimension (one
        # decoder pass instead of nine), in chunks of at most decode_chunk_rows sequences.
        per_chunk = max(1, self.decode_chunk_rows // slots.shape[0])
        recons, masks = [], []
        for start in range(0, len(indices), per_chunk):
            chunk = indices[start : start + per_chunk]
            out = self.decoder(slots, targets, ordering=self.orderings[chunk], ordering_index=chunk)
            recons.append(out["reconstruction"])
            masks.append(out["masks"])
        # In "all" mode outputs (not losses) are averaged, as in SPOT.
        return {"reconstruction": torch.cat(recons).mean(0), "masks": torch.cat(masks).mean(0)}

    def shared_prefix_blocks(self) -> int:
        """Leading blocks whose output the encoder and the frozen target encoder can share.

        A fine-tuned encoder (SPOT stage 2) keeps its stem and first blocks frozen, with the
        weights of the target encoder it was copied from; those run once per batch for both.
        The weights are compared again only after one of them changed (tensor version counters).
        """
        if self.target_encoder is None:  # stage 1: one encoder, nothing to share (no parameter scan)
            return 0
        k = self.encoder.first_trainable_block()
        if k == 0:
            return 0
        ours = [(n, p) for n, p in self.encoder.vit.named_parameters()
                if not (n.startswith("blocks.") and int(n.split(".")[1]) >= k)]
        theirs = dict(self.target_encoder.vit.named_parameters())
        versions = (k, tuple(p._version for _, p in ours), tuple(p._version for p in theirs.values()))
        cached = getattr(self, "_prefix_check", None)
        if cached is None or cached[0] != versions:
            same = (self.encoder.cache_tag == self.target_encoder.cache_tag
                    and all(n in theirs and torch.equal(p, theirs[n]) for n, p in ours)
                    and torch.equal(self.encoder.mean, self.target_encoder.mean)
                    and torch.equal(self.encoder.std, self.target_encoder.std))
            cached = self._prefix_check = (versions, k if same else 0)
        return cached[1]

    @noise.keyed_forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "features" in batch:  # precomputed by the frozen encoder (datasets/feature_cache.py)
            features = batch["features"].float()
            return self.forward_features(features, features)
        images = batch["image"]
        shared = self.shared_prefix_blocks()
        if shared:  # stage 2: the frozen stem and first blocks once, for both encoders
            hidden = self.target_encoder.frozen_prefix(images, shared)
            features = self.encoder.forward_from(hidden, shared)
            with torch.no_grad():
                targets = self.target_encoder.forward_from(hidden, shared)
            return self.forward_features(features, targets)
        features = self.encoder(images) if self.encoder.trainable else self.encode(images)
        if self.target_encoder is not None:
            with torch.no_grad():
                targets = self.target_encoder(images)
        else:
            targets = features.detach()
        return self.forward_features(features, targets)

    def forward_features(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Slot attention on encoder ``features`` [B, N, D], decoding of ``targets`` [B, N, D].

        ``targets`` are both the reconstruction targets and the decoder's teacher-forcing input.
        """
        sa = self.slot_attention(self.input_mlp(features))
        dec = self.decode(sa["slots"], targets)
        mse = ((targets - dec["reconstruction"]) ** 2).mean()
        b, k = sa["slots"].shape[:2]
        h, w = self.grid
        return {
            "loss": mse,
            "losses": {"mse": mse.detach()},
            "reconstruction": dec["reconstruction"],
            "slots": sa["slots"],
            "attn_logits": sa["attn_logits"],
            "masks": {
                "decoder": dec["masks"].reshape(b, k, h, w),
                "slots": sa["attn"].reshape(b, k, h, w),
            },
        }


def add_model_args(parser: argparse.ArgumentParser, init_method: str = "shared_gaussian", truncate: str = "none") -> None:
    """SPOT/DINOSAUR model flags, with SPOT's names and defaults (docs/methods/spot.md)."""
    from models.slot_attention import INIT_METHODS, INIT_SCHEMES, TRUNCATIONS
    from utils.run import str2bool

    group = parser.add_argument_group("model")
    group.add_argument("--num_slots", type=int, default=7)
    group.add_argument("--slot_size", type=int, default=256)
    group.add_argument("--mlp_hidden_size", type=int, default=1024, help="slot-attention MLP width")
    group.add_argument("--num_iterations", type=int, default=3)
    group.add_argument("--slot_attention_heads", type=int, default=1)
    group.add_argument("--truncate", default=truncate, choices=TRUNCATIONS)
    group.add_argument("--init_method", default=init_method, choices=INIT_METHODS)
    group.add_argument("--init_scheme", default="xavier", choices=INIT_SCHEMES,
                       help="slot-attention initialisation: xavier (SPOT's code, which DINOSAUR here follows) or "
                            "torch_default (PyTorch defaults, as the OCLF DINOSAUR and AdaSlot)")
    group.add_argument("--dec_type", default="transformer", choices=DECODER_TYPES)
    group.add_argument("--num_dec_blocks", type=int, default=4)
    group.add_argument("--num_heads", type=int, default=6, help="decoder attention heads")
    group.add_argument("--num_cross_heads", type=int, default=None, help="cross-attention heads of decoder blocks 2..L")
    group.add_argument("--dropout", type=float, default=0.0)
    group.add_argument("--mlp_dec_hidden", type=int, default=2048, help="MLP decoder hidden width")
    group.add_argument("--use_slot_proj", type=str2bool, default=True, help="MLP decoder: project slots first (False = DINOSAUR)")
    group.add_argument("--train_permutations", default="random", choices=PERMUTATION_MODES)
    group.add_argument("--eval_permutations", default="standard", choices=PERMUTATION_MODES)
    group.add_argument("--use_second_encoder", type=str2bool, default=False, help="frozen encoder copy for targets")


def check_config(config: SPOTConfig) -> None:
    """Flag combinations that cannot work, reported before anything is built."""
    from ground.errors import UserError

    if config.dec_type == "mlp" and config.train_permutations != "standard":
        raise UserError("--dec_type mlp has no token order: add --train_permutations standard")
    if config.train_permutations == "standard" and config.eval_permutations != "standard":
        raise UserError(
            f"--eval_permutations {config.eval_permutations} needs a model trained with several orderings; "
            "this one has --train_permutations standard (one BOS token): use --eval_permutations standard"
        )
