"""AdaSlot (Fan et al., CVPR 2024): DINOSAUR with an adaptive number of slots (docs/methods/adaslot.md).

Stage 1 (``adaptive=False``) is a fixed-K DINOSAUR with AdaSlot's recipe: frozen ViT tokens ->
input MLP -> slot attention (shared Gaussian init, zero biases, no dropout) -> MLP feature
decoder with alpha masks, feature-reconstruction MSE.

Stage 2 (``adaptive=True``) adds the per-slot selection network: after slot attention, each of
the K_max final slots is scored independently (LN -> D->4D -> ReLU -> 4D->2; index 1 = keep) and
a hard keep decision is drawn with the straight-through Gumbel-softmax (tau = 1, no annealing).
All K_max slots take part in slot attention and are decoded; the decoder alphas are multiplied
by the decisions and renormalised (``mask_normalized``). The loss adds a linear penalty on the
fraction of kept slots. Gumbel noise is also drawn at evaluation, as in the original code;
``keep_rule="threshold"`` keeps a slot when ``p_keep > 0.5`` instead (evaluation only).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ground.errors import UserError
from ground.state_dict import describe_key_mismatch, model_state
from models import noise
from models.decoders import MLPDecoder, mask_normalized
from models.encoders import FrozenViT
from models.slot_attention import INIT_SCHEMES, SlotAttention

KEEP_RULES: tuple[str, ...] = ("gumbel", "threshold")
# Model fields a stage-2 model must share with its stage-1 checkpoint (K may change).
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "image_size", "slot_size", "mlp_hidden_size", "num_iterations", "mlp_dec_hidden", "mlp_dec_layers",
)


@dataclass
class AdaSlotConfig:
    """Everything needed to rebuild an AdaSlot model (stored in every checkpoint)."""

    image_size: int = 224
    num_slots: int = 7  # K in stage 1, K_max in stage 2
    slot_size: int = 256
    mlp_hidden_size: int = 1024  # slot-attention MLP width (4 D)
    num_iterations: int = 3
    mlp_dec_hidden: int = 2048
    mlp_dec_layers: int = 3
    adaptive: bool = False
    use_sparsity_loss: bool = False
    sparsity_weight: float = 0.1
    keep_rule: str = "gumbel"
    # Hidden width of the input MLP (LN -> Linear(D, h) -> ReLU -> Linear(h, Ds)); None: the
    # feature width D, as in DINOSAUR/AdaSlot. Imports of resized released files set it.
    input_mlp_hidden: int | None = None
    # Both AdaSlot references keep PyTorch's default initialisation in slot attention; checkpoints
    # written before the field existed were xavier-initialised (models.FIELDS_ADDED_IN_FORMAT_2).
    init_scheme: str = "torch_default"

    @classmethod
    def from_args(cls, args: Any) -> "AdaSlotConfig":
        """Pick the model fields out of an argparse namespace (flag names differ for two fields)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values["adaptive"] = bool(getattr(args, "use_adaptive_slot_attention", values.get("adaptive", False)))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(config: AdaSlotConfig) -> None:
    """Flag combinations that cannot work, reported before anything is built."""
    if config.use_sparsity_loss and not config.adaptive:
        raise UserError("--use_sparsity_loss needs --use_adaptive_slot_attention (stage 2): a fixed-K model keeps every slot")
    if config.keep_rule not in KEEP_RULES:
        raise UserError(f"--keep_rule must be one of {', '.join(KEEP_RULES)}, got {config.keep_rule!r}")
    if config.num_slots < 1:
        raise UserError(f"--num_slots must be at least 1, got {config.num_slots}")


def gumbel_keep(logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Hard keep decisions [B, K] from selector logits [B, K, 2] (index 1 = keep).

    Straight-through Gumbel-softmax: the forward value is exactly 0 or 1 (the argmax of
    ``logits + g``, g ~ Gumbel(0, 1) from the training batch's keys in a keyed forward, see
    ``models/noise.py``, else from the global torch RNG), the backward pass is the
    gradient of the noisy soft sample ``softmax((logits + g) / tau)[..., 1]``. Adding
    ``soft - soft.detach()`` (exactly 0) keeps the forward value exact, unlike ``hard - soft.detach() + soft``.
    """
    exponentials = noise.exponential(logits.shape[0], logits.shape[1:], "adaslot_keep", logits.device, torch.float32)
    if exponentials is None:
        exponentials = torch.empty_like(logits, dtype=torch.float32).exponential_()
    gumbels = -exponentials.log()
    soft = ((logits.float() + gumbels) / tau).softmax(dim=-1)[..., 1]
    hard = (soft > 0.5).to(soft.dtype)  # argmax over two classes; ties have probability 0
    return hard + (soft - soft.detach())


def threshold_keep(logits: torch.Tensor) -> torch.Tensor:
    """Deterministic keep decisions [B, K]: keep where ``p_keep = softmax(logits)[..., 1] > 0.5``."""
    return (logits[..., 1] > logits[..., 0]).float()


class SlotSelector(nn.Module):
    """Per-slot keep/drop scores: LN(D) -> Linear(D, 4D) -> ReLU -> Linear(4D, 2), zero biases.

    Weights keep the PyTorch default init (docs/methods/adaslot.md). Applied to every slot independently.
    """

    def __init__(self, slot_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(slot_dim), nn.Linear(slot_dim, 4 * slot_dim), nn.ReLU(inplace=True), nn.Linear(4 * slot_dim, 2)
        )
        for layer in (self.net[1], self.net[3]):
            nn.init.zeros_(layer.bias)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """slots [B, K, D] -> logits [B, K, 2]."""
        return self.net(slots)


class AdaSlot(nn.Module):
    """AdaSlot stage 1 / stage 2. ``forward(batch)`` returns the project's output dict.

    Outputs: ``loss`` (MSE [+ sparsity penalty]), ``losses`` (``mse``, ``sparsity``,
    ``kept_slots`` per image, ``keep_prob``), ``reconstruction`` [B, N, D], ``slots`` [B, K, Ds],
    ``slot_keep`` [B, K] (1 kept, 0 dropped; all ones in stage 1), ``slot_keep_prob`` [B, K],
    ``keep_rule`` (which rule made ``slot_keep``), and ``masks``: ``decoder`` (renormalised
    alphas, zero on dropped slots) and ``slots`` (slot-attention maps of kept slots,
    renormalised the same way), each [B, K, h, w].
    """

    def __init__(self, encoder: FrozenViT, config: AdaSlotConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        self.encoder = encoder
        self.grid = encoder.token_grid(config.image_size)
        dim, d = encoder.embed_dim, config.slot_size
        # DINOSAUR's input MLP: LN(768) -> 768 -> ReLU -> D (default weights, zero biases).
        hidden = config.input_mlp_hidden or dim
        self.input_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, d))
        for layer in (self.input_mlp[1], self.input_mlp[3]):
            nn.init.zeros_(layer.bias)
        self.slot_attention = SlotAttention(
            input_dim=d, slot_dim=d, num_slots=config.num_slots, num_iterations=config.num_iterations,
            num_heads=1, mlp_hidden_dim=config.mlp_hidden_size, init_method="shared_gaussian",
            init_scheme=config.init_scheme,
        )
        self.decoder = MLPDecoder(d, dim, self.grid[0] * self.grid[1], hidden_dim=config.mlp_dec_hidden,
                                  num_hidden_layers=config.mlp_dec_layers, use_slot_proj=False)
        self.selector = SlotSelector(d) if config.adaptive else None

    @property
    def keep_rule(self) -> str:
        """The rule that makes keep decisions now: training always samples (Gumbel)."""
        return "gumbel" if self.training else self.config.keep_rule

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen features [B, N, D] of images [B, 3, H, W] in [0, 1] (the cacheable stage)."""
        return self.encoder(images)

    @noise.keyed_forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "features" in batch:  # precomputed by the frozen encoder (datasets/feature_cache.py)
            return self.forward_features(batch["features"].float())
        features = self.encoder(batch["image"]) if self.encoder.trainable else self.encode(batch["image"])
        return self.forward_features(features)

    def forward_features(self, features: torch.Tensor) -> dict[str, Any]:
        """Everything after the encoder, on its ``features`` [B, N, D] (also the reconstruction target)."""
        targets = features.detach()
        sa = self.slot_attention(self.input_mlp(features))
        slots = sa["slots"]
        b, k = slots.shape[:2]
        if self.selector is None:
            keep = torch.ones(b, k, device=slots.device)
            keep_prob = keep
        else:
            logits = self.selector(slots)
            keep_prob = logits.float().softmax(dim=-1)[..., 1]
            keep = gumbel_keep(logits) if self.keep_rule == "gumbel" else threshold_keep(logits)
        dec = self.decoder(slots, keep if self.selector is not None else None)
        mse = ((targets - dec["reconstruction"]) ** 2).mean()
        kept_fraction = keep.mean()  # over batch and slots, on the hard straight-through sample
        sparsity = self.config.sparsity_weight * kept_fraction if self.config.use_sparsity_loss else mse.new_zeros(())
        h, w = self.grid
        attn = sa["attn"] if self.selector is None else mask_normalized(sa["attn"], keep.detach())
        return {
            "loss": mse + sparsity,
            "losses": {
                "mse": mse.detach(),
                "sparsity": sparsity.detach(),
                "kept_slots": keep.detach().sum(dim=1).mean(),
                "keep_prob": keep_prob.detach().mean(),
            },
            "reconstruction": dec["reconstruction"],
            "slots": slots,
            "slot_keep": keep.detach(),
            "slot_keep_prob": keep_prob.detach(),
            "keep_rule": self.keep_rule if self.selector is not None else "all",
            "masks": {"decoder": dec["masks"].reshape(b, k, h, w), "slots": attn.reshape(b, k, h, w)},
        }


def check_warm_start_source(checkpoint: dict[str, Any], source: str, adaptive: bool) -> None:
    """Refuse a warm start that cannot be AdaSlot's stage 1 -> stage 2 (before anything is built)."""
    method = checkpoint.get("method")
    if method != "adaslot":
        raise UserError(f"{source} is a {method} checkpoint; --warmstart_checkpoint needs a stage-1 checkpoint "
                        "written by train_adaslot.py (without --use_adaptive_slot_attention)")
    if checkpoint["model_config"].get("adaptive"):
        raise UserError(f"{source} is already an adaptive (stage-2) model; continue it with --resume instead")
    if not adaptive:
        raise UserError("--warmstart_checkpoint starts stage 2: add --use_adaptive_slot_attention")


def warm_start(model: AdaSlot, checkpoint: dict[str, Any], source: str) -> list[str]:
    """Load a stage-1 checkpoint into a stage-2 model; returns the new (selector) keys.

    Every stored weight must fit, and the keys the checkpoint lacks must be exactly the
    selection network's: anything else means the checkpoint is of another model, which is
    refused instead of loaded partially. Optimizer, schedule and step start afresh (docs/methods/adaslot.md).
    """
    check_warm_start_source(checkpoint, source, model.selector is not None)
    expected = model_state(model)
    stored = checkpoint["model"]
    new_keys = sorted(k for k in expected if k not in stored)
    others = {k: v for k, v in expected.items() if not k.startswith("selector.")}
    problem = describe_key_mismatch(stored, others, loaded_name="checkpoint")
    if problem:
        raise UserError(f"{source} does not fit this stage-2 model ({problem})")
    assert new_keys == sorted(k for k in expected if k.startswith("selector.")), new_keys
    full = model.state_dict()  # frozen pretrained encoder weights are not in checkpoints
    full.update(stored)
    model.load_state_dict(full)
    return new_keys


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """AdaSlot model flags; names follow the unofficial AdaSlot port's commands."""
    group = parser.add_argument_group("model")
    group.add_argument("--num_slots", type=int, default=7, help="K (stage 1) or K_max (stage 2)")
    group.add_argument("--slot_size", type=int, default=256)
    group.add_argument("--mlp_hidden_size", type=int, default=1024, help="slot-attention MLP width")
    group.add_argument("--num_iterations", type=int, default=3)
    group.add_argument("--mlp_dec_hidden", type=int, default=2048, help="MLP decoder hidden width")
    group.add_argument("--mlp_dec_layers", type=int, default=3, help="MLP decoder hidden layers")
    group.add_argument("--use_adaptive_slot_attention", action="store_true", help="stage 2: per-slot keep/drop selector")
    group.add_argument("--use_sparsity_loss", action="store_true", help="stage 2: linear penalty on the kept fraction")
    group.add_argument("--sparsity_weight", "--sparsity_loss_weight", dest="sparsity_weight", type=float, default=0.1,
                       help="weight of the sparsity penalty; default 0.1 as the official COCO/MOVi configs. The seed "
                            "repository (DINOSAUR-and-Adaptive-Slot-Attention) defaults to 0.5, so its stage-2 command "
                            "penalises 5x more there: pass --sparsity_weight 0.5 to reproduce that")
    group.add_argument("--init_scheme", default="torch_default", choices=INIT_SCHEMES,
                       help="slot-attention initialisation: torch_default (PyTorch defaults, both AdaSlot "
                            "references) or xavier (SPOT's scheme)")
    group.add_argument("--keep_rule", default="gumbel", choices=KEEP_RULES,
                       help="keep decisions at evaluation: gumbel (sampled, as the original) or threshold (p_keep > 0.5)")
