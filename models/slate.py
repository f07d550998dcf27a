"""SLATE (Singh, Deng, Ahn, ICLR 2022): slot attention over dVAE tokens, autoregressive token decoder.

See docs/methods/slate.md. Pipeline per image (in [0, 1]):
dVAE encoder -> code log-probabilities [B, V, h, w] -> a hard Gumbel sample gives the tokens
[B, N] (also at evaluation, unless --eval_tokens argmax) -> token + learned position embedding [B, N, d] -> input MLP ->
slot attention (the shared module) -> slots [B, K, Ds] -> the shared autoregressive transformer
decoder (BOS + tokens shifted by one, cross-attention to slots, vocabulary head) -> logits
[B, N, V]. Loss = dVAE reconstruction (per-image sum of squared errors) + cross-entropy of the
tokens (per-image sum over tokens); the slot path gets no gradient from the pixels and the
dVAE none from the tokens (docs/methods/slate.md#recipe).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ground.errors import UserError
from ground.schedules import cosine_anneal
from models import noise
from models.decoders import AutoregressiveDecoder
from models.dvae import DOWNSAMPLING, DVAE
from models.slot_attention import TRUNCATIONS, SlotAttention, input_mlp


EVAL_TOKENS: tuple[str, ...] = ("sample", "argmax")


@dataclass
class SLATEConfig:
    """Everything needed to rebuild a SLATE model (stored in every checkpoint).

    Defaults are the seed's CLEVR6 settings (HHousen ``slate_params``, 128x128 images).
    """

    image_size: int = 128
    num_slots: int = 7
    num_iterations: int = 3
    slot_size: int = 192
    mlp_hidden_size: int = 192
    slot_attention_heads: int = 1
    truncate: str = "none"
    vocab_size: int = 4096
    d_model: int = 192
    num_dec_blocks: int = 8
    num_heads: int = 8
    dropout: float = 0.1
    dvae_hidden_size: int = 64
    tau_start: float = 1.0
    tau_final: float = 0.1
    tau_steps: int = 30000
    hard: bool = False
    # Official behaviour (docs/methods/slate.md); checkpoints written before these fields existed
    # lack them and get the old values (models.FIELDS_ADDED_IN_FORMAT_2): argmax evaluation tokens and
    # the decoder's own BOS vector.
    eval_tokens: str = "sample"  # evaluation tokens: "sample" (hard Gumbel, as training) or "argmax"
    official_bos: bool = True  # BOS = a vocabulary row + position 0, through the embedding dropout

    @classmethod
    def from_args(cls, args: Any) -> "SLATEConfig":
        """Pick the model fields out of an argparse namespace (or any object with attributes)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_config(config: SLATEConfig) -> None:
    """Flag values that cannot work, reported before anything is built."""
    if config.image_size % DOWNSAMPLING:
        raise UserError(f"--image_size {config.image_size} is not a multiple of {DOWNSAMPLING} (the dVAE's patch size)")
    if config.d_model % config.num_heads:
        raise UserError(f"--num_heads {config.num_heads} does not divide --d_model {config.d_model}")
    if config.slot_size % config.slot_attention_heads:
        raise UserError(
            f"--slot_attention_heads {config.slot_attention_heads} does not divide --slot_size {config.slot_size}"
        )
    if config.vocab_size < 2:
        raise UserError(f"--vocab_size must be at least 2, got {config.vocab_size}")
    if not (config.tau_start > 0 and config.tau_final > 0):
        raise UserError("--tau_start and --tau_final must be positive (Gumbel-softmax temperatures)")
    if config.eval_tokens not in EVAL_TOKENS:
        raise UserError(f"--eval_tokens must be one of {', '.join(EVAL_TOKENS)}, got {config.eval_tokens!r}")
    if config.truncate not in TRUNCATIONS:
        raise UserError(f"--truncate must be one of {', '.join(TRUNCATIONS)}")


class SLATE(nn.Module):
    """SLATE model. ``forward(batch)`` returns the project's output dict.

    Outputs: ``loss`` (= ``mse + cross_entropy``), ``losses`` (``mse``, ``cross_entropy``, ``tau``),
    ``reconstruction`` (dVAE reconstruction [B, 3, H, W]), ``logits`` [B, N, V], ``tokens`` [B, N],
    ``slots`` [B, K, Ds], ``masks``: {``slots``: last slot-attention iteration, ``decoder``:
    last decoder block's cross-attention}, each [B, K, h, w] normalised over slots.

    The Gumbel temperature is a buffer set from the training step by :meth:`set_step`, so a
    checkpointed model keeps the temperature it was trained with.
    """

    def __init__(self, config: SLATEConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        self.dvae = DVAE(config.vocab_size, config.dvae_hidden_size)
        self.grid = self.dvae.token_grid(config.image_size)
        num_tokens = self.grid[0] * self.grid[1]
        d = config.d_model
        # The table holds only the codes. Official BOS: one more vocabulary row (N(0, 1) like the
        # others) plus its own position (position 0 of the official table, whose positions 1..N
        # are ``position_embedding``). Legacy BOS: the decoder's own learned vector.
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = nn.Parameter(torch.empty(1, num_tokens, d))
        nn.init.trunc_normal_(self.position_embedding)  # std 1, cut at +-2 (SLATE)
        if config.official_bos:
            self.bos_embedding = nn.Parameter(torch.randn(1, d))
            self.bos_position = nn.Parameter(torch.empty(1, d))
            nn.init.trunc_normal_(self.bos_position)
        self.embedding_dropout = noise.KeyedDropout(config.dropout)
        self.input_mlp = input_mlp(d)
        self.slot_attention = SlotAttention(
            input_dim=d,
            slot_dim=config.slot_size,
            num_slots=config.num_slots,
            num_iterations=config.num_iterations,
            num_heads=config.slot_attention_heads,
            mlp_hidden_dim=config.mlp_hidden_size,
            truncate=config.truncate,  # type: ignore[arg-type]
        )
        self.decoder = AutoregressiveDecoder(
            feature_dim=d,
            slot_dim=config.slot_size,
            num_tokens=num_tokens,
            num_blocks=config.num_dec_blocks,
            num_heads=config.num_heads,
            dropout=config.dropout,
            input_proj=False,  # token embeddings are already in the decoder width
            slot_proj_norm=False,  # SLATE: bias-free Linear only
            output_dim=config.vocab_size,
            learned_bos=not config.official_bos,
        )
        self.register_buffer("tau", torch.tensor(float(config.tau_start)))

    # --- schedule ------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Set the Gumbel temperature for training step ``step`` (cosine anneal, docs/methods/slate.md#flags)."""
        c = self.config
        self.tau.fill_(cosine_anneal(step, c.tau_start, c.tau_final, c.tau_steps))

    # --- parts ---------------------------------------------------------------------------------
    def tokens_from(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Code log-probabilities [B, V, h, w] -> raster-order tokens [B, N].

        Training draws a hard Gumbel sample independent of the relaxed one fed to the dVAE
        decoder, as in the official code. Evaluation samples the same way, as the official validation
        (whose cross-entropy drives the plateau LR halving), unless ``eval_tokens="argmax"``.
        """
        if self.training or self.config.eval_tokens == "sample":
            tokens = noise.gumbel_softmax(log_probs, float(self.tau), True, 1, "slate_tokens").argmax(dim=1)
        else:
            tokens = log_probs.argmax(dim=1)
        return tokens.flatten(1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, L] (the first L raster positions, L <= N) -> embeddings [B, L, d]."""
        length = tokens.shape[1]
        return self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding[:, :length])

    def bos(self, batch_size: int) -> torch.Tensor | None:
        """Official BOS vectors [B, d] (vocabulary row + position 0, dropout per sample), or None
        when the decoder holds its own (legacy)."""
        if not self.config.official_bos:
            return None
        return self.embedding_dropout((self.bos_embedding + self.bos_position).expand(batch_size, -1))

    def infer_slots(self, tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Tokens [B, N] -> (embeddings [B, N, d], slot-attention outputs)."""
        embeddings = self.embed(tokens)
        return embeddings, self.slot_attention(self.input_mlp(embeddings))

    @noise.keyed_forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batch["image"]
        b = images.shape[0]
        dvae = self.dvae(images, tau=float(self.tau), hard=self.config.hard)
        tokens = self.tokens_from(dvae["log_probs"])
        embeddings, sa = self.infer_slots(tokens)
        dec = self.decoder(sa["slots"], embeddings, bos=self.bos(b))
        logits = dec["reconstruction"]  # [B, N, V]
        cross_entropy = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="sum") / b
        mse = ((images - dvae["reconstruction"].float()) ** 2).sum() / b
        loss = mse + cross_entropy
        k = sa["slots"].shape[1]
        h, w = self.grid
        return {
            "loss": loss,
            "losses": {"mse": mse.detach(), "cross_entropy": cross_entropy.detach(), "tau": self.tau.detach().clone()},
            "reconstruction": dvae["reconstruction"],
            "logits": logits,
            "tokens": tokens,
            "slots": sa["slots"],
            "masks": {
                "slots": sa["attn"].reshape(b, k, h, w),
                "decoder": dec["masks"].reshape(b, k, h, w),
            },
        }

    # --- generation and pictures ---------------------------------------------------------------
    @torch.no_grad()
    def generate_tokens(self, slots: torch.Tensor) -> torch.Tensor:
        """Greedy autoregressive decoding of all N tokens from slots [B, K, Ds] -> tokens [B, N].

        The decoder is causal, so step t only needs the first t tokens (plus one unused
        placeholder position); no key/value cache, as in SLATE.
        """
        b = slots.shape[0]
        n = self.position_embedding.shape[1]
        tokens = torch.zeros(b, 0, dtype=torch.long, device=slots.device)
        for t in range(n):
            placeholder = torch.zeros(b, 1, dtype=torch.long, device=slots.device)
            logits = self.decoder(slots, self.embed(torch.cat([tokens, placeholder], dim=1)), bos=self.bos(b))["reconstruction"]
            tokens = torch.cat([tokens, logits[:, t].argmax(dim=-1, keepdim=True)], dim=1)
        return tokens

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raster tokens [B, N] -> dVAE image [B, 3, H, W] clamped to [0, 1]."""
        h, w = self.grid
        one_hot = F.one_hot(tokens, self.config.vocab_size).float().transpose(1, 2).reshape(-1, self.config.vocab_size, h, w)
        return self.dvae.decode(one_hot).clamp(0, 1)

    @torch.no_grad()
    def visual_outputs(self, images: torch.Tensor) -> dict[str, Any]:
        """What SLATE's picture shows (docs/methods/slate.md#evaluation), in eval mode.

        Returns ``reconstructions`` ({"dVAE": ..., "autoregressive": ...}, each [B, 3, H, W] in
        [0, 1]) and ``attention`` [B, K, h, w] (last slot-attention iteration).
        """
        was_training = self.training
        self.eval()
        try:
            dvae = self.dvae(images, tau=float(self.tau), hard=self.config.hard)
            _, sa = self.infer_slots(self.tokens_from(dvae["log_probs"]))
            generated = self.decode_tokens(self.generate_tokens(sa["slots"]))
            b, k = sa["slots"].shape[:2]
            return {
                "reconstructions": {"dVAE": dvae["reconstruction"].clamp(0, 1), "autoregressive": generated},
                "attention": sa["attn"].reshape(b, k, *self.grid),
            }
        finally:
            self.train(was_training)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """SLATE model flags, with the seed's names and defaults (HHousen ``slate_params``)."""
    from utils.run import str2bool

    defaults = SLATEConfig()
    group = parser.add_argument_group("model")
    group.add_argument("--num_slots", type=int, default=defaults.num_slots)
    group.add_argument("--num_iterations", type=int, default=defaults.num_iterations)
    group.add_argument("--slot_size", type=int, default=defaults.slot_size)
    group.add_argument("--mlp_hidden_size", type=int, default=defaults.mlp_hidden_size, help="slot-attention MLP width")
    group.add_argument("--slot_attention_heads", type=int, default=defaults.slot_attention_heads,
                       help="slot-attention heads (SLATE's num_slot_heads)")
    group.add_argument("--truncate", default=defaults.truncate, choices=TRUNCATIONS,
                       help="gradient truncation of the last slot-attention iteration")
    group.add_argument("--vocab_size", type=int, default=defaults.vocab_size, help="dVAE codebook size")
    group.add_argument("--d_model", type=int, default=defaults.d_model, help="token embedding / decoder width")
    group.add_argument("--num_dec_blocks", type=int, default=defaults.num_dec_blocks)
    group.add_argument("--num_heads", type=int, default=defaults.num_heads, help="decoder attention heads")
    group.add_argument("--dropout", type=float, default=defaults.dropout)
    group.add_argument("--dvae_hidden_size", type=int, default=defaults.dvae_hidden_size, help="dVAE CNN width")
    group.add_argument("--tau_start", type=float, default=defaults.tau_start, help="initial Gumbel-softmax temperature")
    group.add_argument("--tau_final", type=float, default=defaults.tau_final, help="final Gumbel-softmax temperature")
    group.add_argument("--tau_steps", type=int, default=defaults.tau_steps, help="steps of the cosine temperature anneal")
    group.add_argument("--eval_tokens", default=defaults.eval_tokens, choices=EVAL_TOKENS,
                       help="evaluation tokens: sample (hard Gumbel sample, as training and the official validation) "
                            "or argmax (the most likely code, deterministic)")
    group.add_argument("--hard", type=str2bool, default=defaults.hard,
                       help="feed the dVAE decoder straight-through one-hot samples instead of relaxed ones")
