"""SLATE's discrete VAE (docs/methods/slate.md).

The encoder maps an image in [0, 1] to one categorical distribution over ``vocab_size`` codes
per 4x4 patch; a Gumbel-softmax sample of it is decoded back to pixels by a PixelShuffle CNN.
Shape legend: ``B`` batch, ``V`` vocabulary, ``h, w = H/4, W/4`` token grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import noise

DOWNSAMPLING = 4  # one token per 4x4 pixels


def _conv_block(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv (no bias, kaiming-uniform) -> GroupNorm with one group -> ReLU."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
    nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
    return nn.Sequential(conv, nn.GroupNorm(1, out_ch), nn.ReLU(inplace=True))


class DVAE(nn.Module):
    """Discrete VAE with a relaxed (Gumbel-softmax) bottleneck.

    Args:
        vocab_size: number of codes ``V``.
        hidden_dim: CNN width (64 in SLATE).
    """

    def __init__(self, vocab_size: int = 4096, hidden_dim: int = 64) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        c = hidden_dim
        head = nn.Conv2d(c, vocab_size, 1)
        nn.init.xavier_uniform_(head.weight)
        nn.init.zeros_(head.bias)
        self.encoder = nn.Sequential(
            _conv_block(3, c, DOWNSAMPLING, DOWNSAMPLING), *[_conv_block(c, c, 1) for _ in range(6)], head
        )
        out = nn.Conv2d(c, 3, 1)
        self.decoder = nn.Sequential(
            _conv_block(vocab_size, c, 1),
            _conv_block(c, c, 3, padding=1),
            _conv_block(c, c, 1),
            _conv_block(c, c, 1),
            _conv_block(c, 4 * c, 1),
            nn.PixelShuffle(2),
            _conv_block(c, c, 3, padding=1),
            _conv_block(c, c, 1),
            _conv_block(c, c, 1),
            _conv_block(c, 4 * c, 1),
            nn.PixelShuffle(2),
            out,
        )

    def token_grid(self, image_size: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` of a square image of side ``image_size``."""
        return image_size // DOWNSAMPLING, image_size // DOWNSAMPLING

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> code log-probabilities [B, V, h, w]."""
        return F.log_softmax(self.encoder(images), dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(Relaxed) one-hot codes [B, V, h, w] -> image [B, 3, H, W] (unbounded; clamp for display)."""
        return self.decoder(codes)

    def forward(self, images: torch.Tensor, tau: float, hard: bool = False) -> dict[str, torch.Tensor]:
        """Encode, sample and decode.

        Returns ``log_probs`` [B, V, h, w], ``sample`` (the Gumbel-softmax sample that is decoded,
        straight-through one-hot when ``hard``) and ``reconstruction`` [B, 3, H, W].
        """
        log_probs = self.log_probs(images)
        sample = noise.gumbel_softmax(log_probs, tau, hard, 1, "dvae_sample")  # keyed in training (models/noise.py)
        return {"log_probs": log_probs, "sample": sample, "reconstruction": self.decode(sample)}
