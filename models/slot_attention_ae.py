"""Slot Attention autoencoder on pixels (Locatello et al. 2020; docs/methods/slot_attention.md).

CNN encoder with soft position embedding -> LayerNorm + MLP -> slot attention (the shared
:class:`models.slot_attention.SlotAttention`) -> spatial-broadcast CNN decoder with alpha
compositing -> mean MSE on images scaled to [-1, 1].

Choices where the official TF code and the HHousen port differ (docs/methods/slot_attention.md): the encoder
follows the official code (ReLU, LayerNorm before the MLP), and so does the initialisation
(Keras defaults: glorot-uniform kernels, zero biases; ``--conv_init kaiming`` is He init, see
:func:`models.decoders.init_weights`). ``implicit_grad`` is the first-order
fixed-point gradient as the seed repository runs it: ``num_iterations`` ordinary iterations, then
one more from the detached slots, the only one differentiated (T + 1 in all; see
docs/methods/slot_attention.md). ``implicit_extra_iteration=False`` (checkpoints written before
the field existed) counts the detached iteration within ``num_iterations``.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from models import noise
from models.decoders import ACTIVATIONS, CONV_INITS, SpatialBroadcastDecoder, activation_layer, broadcast_size, init_weights
from models.position import SoftPositionEmbed
from models.slot_attention import SlotAttention


@dataclass
class SlotAttentionAEConfig:
    """Everything needed to rebuild a Slot Attention autoencoder (stored in every checkpoint)."""

    image_size: int = 128
    num_slots: int = 7
    num_iterations: int = 3
    slot_size: int = 64
    mlp_hidden_size: int = 128
    encoder_channels: int = 64
    decoder_channels: int = 64
    decoder_upsamples: int = 4
    kernel_size: int = 5
    implicit_grad: bool = False
    implicit_extra_iteration: bool = True  # implicit_grad: T ordinary + 1 detached iteration (seed), else T in all
    init_method: str = "shared_gaussian"
    conv_init: str = "glorot"
    # Variants of released models (docs/released_models.md): the seed's object-discovery
    # port uses LeakyReLU convolutions and no LayerNorm before the encoder MLP.
    activation: str = "relu"
    encoder_norm: bool = True

    @classmethod
    def from_args(cls, args: Any) -> "SlotAttentionAEConfig":
        """Pick the model fields out of an argparse namespace (or any object with attributes)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(config: SlotAttentionAEConfig) -> None:
    """Flag values that cannot work, reported before anything is built."""
    from ground.errors import UserError

    try:
        broadcast_size(config.image_size, config.decoder_upsamples)
    except ValueError:
        factor = 2**config.decoder_upsamples
        raise UserError(
            f"--image_size {config.image_size} is not divisible by 2**--decoder_upsamples = {factor}; "
            f"use an image size divisible by {factor} or fewer --decoder_upsamples"
        ) from None
    if config.conv_init not in CONV_INITS:
        raise UserError(f"--conv_init {config.conv_init} is not one of {', '.join(CONV_INITS)}")
    if config.activation not in ACTIVATIONS:
        raise UserError(f"activation {config.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if config.kernel_size % 2 == 0 or config.kernel_size < 1:
        raise UserError(f"--kernel_size {config.kernel_size} must be odd (same-size padding)")
    for name in ("num_slots", "num_iterations", "slot_size", "mlp_hidden_size", "encoder_channels", "decoder_channels"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(config, name)}")


class CNNEncoder(nn.Module):
    """Four same-size ``Conv2d(k)`` + ReLU layers, soft position embedding, LayerNorm and an MLP.

    images [B, 3, H, W] in [-1, 1] -> features [B, H*W, C]. ``activation="leaky_relu"`` and
    ``norm=False`` give the seed's object-discovery variant (LeakyReLU everywhere, no LayerNorm).
    """

    def __init__(
        self, image_size: int, channels: int = 64, kernel_size: int = 5, num_layers: int = 4, init: str = "glorot",
        activation: str = "relu", norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for _ in range(num_layers):
            layers += [nn.Conv2d(in_channels, channels, kernel_size, padding=kernel_size // 2), activation_layer(activation)]
            in_channels = channels
        self.convs = nn.Sequential(*layers)
        self.pos_embed = SoftPositionEmbed(channels, image_size, image_size)
        self.norm = nn.LayerNorm(channels) if norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), activation_layer(activation), nn.Linear(channels, channels))
        init_weights(self, init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(self.convs(images))  # [B, C, H, W]
        x = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
        return self.mlp(self.norm(x))


class SlotAttentionAE(nn.Module):
    """Slot Attention object-discovery autoencoder. ``forward(batch)`` returns a dict.

    Outputs: ``loss`` (= ``mse`` on [-1, 1] images), ``losses``, ``slots`` [B, K, D],
    ``reconstruction`` [B, 3, H, W] in [0, 1] scale (not clamped),
    ``masks``: {``decoder``: alpha masks [B, K, H, W], ``slots``: last-iteration slot-attention
    weights [B, K, H, W]}, both normalised over slots, and ``visuals`` (reconstruction, per-slot
    colours and alpha masks, in [0, 1]) for the prediction pictures.
    """

    def __init__(self, config: SlotAttentionAEConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        self.encoder = CNNEncoder(config.image_size, config.encoder_channels, config.kernel_size, init=config.conv_init,
                                  activation=config.activation, norm=config.encoder_norm)
        self.slot_attention = SlotAttention(
            input_dim=config.encoder_channels,
            slot_dim=config.slot_size,
            num_slots=config.num_slots,
            # The fixed-point truncation detaches before the last iteration: one more keeps T ordinary ones.
            num_iterations=config.num_iterations + int(config.implicit_grad and config.implicit_extra_iteration),
            mlp_hidden_dim=config.mlp_hidden_size,
            init_method=config.init_method,  # type: ignore[arg-type]
            truncate="fixed-point" if config.implicit_grad else "none",
        )
        self.decoder = SpatialBroadcastDecoder(
            config.slot_size,
            config.image_size,
            hidden_channels=config.decoder_channels,
            num_upsamples=config.decoder_upsamples,
            kernel_size=config.kernel_size,
            init=config.conv_init,
            activation=config.activation,
        )

    @noise.keyed_forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batch["image"]
        if tuple(images.shape[-2:]) != (self.config.image_size,) * 2:
            raise ValueError(f"images are {tuple(images.shape[-2:])}, the model was built for {self.config.image_size} px")
        target = images * 2 - 1  # the official [-1, 1] scaling
        sa = self.slot_attention(self.encoder(target))
        dec = self.decoder(sa["slots"])
        mse = ((dec["reconstruction"] - target.float()) ** 2).mean()
        b, k = sa["slots"].shape[:2]
        h, w = images.shape[-2:]
        reconstruction = (dec["reconstruction"] + 1) / 2
        return {
            "loss": mse,
            "losses": {"mse": mse.detach()},
            "slots": sa["slots"],
            "reconstruction": reconstruction,
            "masks": {"decoder": dec["masks"], "slots": sa["attn"].reshape(b, k, h, w)},
            "visuals": {
                "reconstruction": reconstruction.detach(),
                "slot_rgb": ((dec["slot_reconstructions"].detach().float() + 1) / 2),
                "slot_masks": dec["masks"].detach(),
            },
        }


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Slot Attention model flags (names and defaults of the seed's params file)."""
    from models.slot_attention import INIT_METHODS
    from utils.run import str2bool

    group = parser.add_argument_group("model")
    group.add_argument("--num_slots", type=int, default=7)
    group.add_argument("--num_iterations", type=int, default=3)
    group.add_argument("--slot_size", type=int, default=64)
    group.add_argument("--mlp_hidden_size", type=int, default=128, help="slot-attention MLP width")
    group.add_argument("--encoder_channels", type=int, default=64, help="width of the 4 encoder convs")
    group.add_argument("--decoder_channels", type=int, default=64, help="width of the decoder's hidden layers")
    group.add_argument("--decoder_upsamples", type=int, default=4,
                       help="stride-2 decoder layers; slots are broadcast to image_size / 2**N (8x8 at 128 px)")
    group.add_argument("--kernel_size", type=int, default=5, help="kernel of the encoder convs and hidden decoder layers")
    group.add_argument("--implicit_grad", type=str2bool, default=False,
                       help="first-order fixed-point gradient, as the seed repository: --num_iterations ordinary "
                            "iterations, then one more from the detached slots, the only one differentiated")
    group.add_argument("--conv_init", default="glorot", choices=CONV_INITS,
                       help="encoder/decoder weights: glorot (Keras defaults, the official code) or kaiming (He)")
    group.add_argument("--init_method", default="shared_gaussian", choices=INIT_METHODS,
                       help="initial slots: one learned Gaussian sampled per slot (paper) or K learned embeddings")
