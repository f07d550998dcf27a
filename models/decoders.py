"""Slot decoders: feature decoders for DINOSAUR / SPOT (docs/methods/dinosaur.md), SLATE's token decoder
(docs/methods/slate.md) and Slot Attention's pixel decoder.

* :class:`MLPDecoder` -- DINOSAUR's spatial-broadcast MLP decoder with alpha masks.
* :class:`AutoregressiveDecoder` -- the SLATE transformer decoder with teacher forcing, used by
  SPOT over features (one BOS token per patch ordering) and by SLATE over dVAE tokens (with a
  vocabulary head); masks come from the last block's cross-attention.
* :class:`SpatialBroadcastDecoder` -- Slot Attention's spatial-broadcast CNN decoder of pixels
  with alpha compositing (docs/methods/slot_attention.md).

Shape legend: ``B`` batch, ``K`` slots, ``N`` patch tokens, ``D`` feature dim, ``Ds`` slot dim.
Both decoders return float32 ``reconstruction`` / ``masks`` (softmaxes and mixing are done in
fp32, the final LayerNorm runs in fp32 under autocast), so the MSE can be taken directly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models import noise
from models.noise import KeyedDropout
from models.permutations import inverse_ordering
from models.position import SoftPositionEmbed

__all__ = ["MLPDecoder", "AutoregressiveDecoder", "SpatialBroadcastDecoder", "mask_normalized"]

# AdaSlot's epsilon in the renormalisation over kept slots (docs/methods/adaslot.md).
KEEP_RENORM_EPS: float = 1e-5


def mask_normalized(alpha: torch.Tensor, keep: torch.Tensor, eps: float = KEEP_RENORM_EPS) -> torch.Tensor:
    """AdaSlot's ``mask_normalized`` alphas: ``a_k z_k / (sum_j a_j z_j + eps)``.

    ``alpha`` [B, K, ...] is already normalised over slots (softmax over *all* K slots first),
    ``keep`` [B, K] is the 0/1 keep decision (straight-through: its gradient reaches the
    selector through numerator and denominator). Dropped slots get exactly 0. If every slot
    of an image is dropped, every alpha is 0 (no NaN, thanks to ``eps``).
    """
    keep = keep.to(alpha.dtype).view(*keep.shape, *([1] * (alpha.dim() - keep.dim())))
    kept = alpha * keep
    return kept / (kept.sum(dim=1, keepdim=True) + eps)


# ---------------------------------------------------------------------------------------------
# MLP decoder (DINOSAUR)
# ---------------------------------------------------------------------------------------------


class MLPDecoder(nn.Module):
    """DINOSAUR's feature MLP decoder.

    Every slot is broadcast to ``num_tokens`` positions, a learned positional embedding is added
    and a shared MLP maps each (slot, position) to ``feature_dim`` features plus one alpha logit.
    Alphas are softmaxed over slots; the reconstruction is ``sum_k alpha_k * x_k``.

    Args:
        slot_dim: ``Ds``.
        feature_dim: ``D`` (encoder feature dim, e.g. 768).
        num_tokens: ``N`` (e.g. 196 for 14x14); fixed by the positional embedding.
        hidden_dim: MLP hidden width (2048).
        num_hidden_layers: number of hidden ReLU layers (3).
        use_slot_proj: project slots with ``Linear(Ds -> D, no bias) + LayerNorm(D)`` first
            (SPOT's default ``--use_slot_proj True``; DINOSAUR/OCLF parity needs ``False``).
    """

    def __init__(
        self,
        slot_dim: int,
        feature_dim: int,
        num_tokens: int,
        hidden_dim: int = 2048,
        num_hidden_layers: int = 3,
        use_slot_proj: bool = False,
    ) -> None:
        super().__init__()
        if num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers must be >= 1, got {num_hidden_layers}")
        self.slot_dim = slot_dim
        self.feature_dim = feature_dim
        self.num_tokens = num_tokens
        self.use_slot_proj = use_slot_proj

        if use_slot_proj:
            self.slot_proj: nn.Module = nn.Sequential(
                nn.Linear(slot_dim, feature_dim, bias=False), nn.LayerNorm(feature_dim)
            )
            nn.init.xavier_uniform_(self.slot_proj[0].weight)  # as SPOT's code (DINOSAUR with --dec_type mlp)
            in_dim = feature_dim
        else:
            self.slot_proj = nn.Identity()
            in_dim = slot_dim
        self.input_dim = in_dim

        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, in_dim) * 0.02)

        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
            d = hidden_dim
        layers.append(nn.Linear(d, feature_dim + 1))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):  # PyTorch default weights, zero biases
                nn.init.zeros_(m.bias)

    def forward(
        self,
        slots: torch.Tensor,
        slot_keep: torch.Tensor | None = None,
        top_k: int = 0,
        select_by: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode slots into patch features.

        Args:
            slots: ``[B, K, Ds]``.
            slot_keep: optional ``[B, K]`` 0/1 keep decisions (AdaSlot): alphas are then
                renormalised over the kept slots with :func:`mask_normalized`, so dropped slots
                contribute nothing to the reconstruction and have all-zero masks.
            top_k: FT-DINOSAUR's top-k decoding (0: off). At each position only the ``top_k``
                slots with the largest ``select_by`` value are decoded (see :func:`top_k_slots`),
                the alpha softmax runs over them alone and every other slot gets mask exactly 0.
                ``top_k >= K`` decodes every slot (the same result as 0).
            select_by: ``[B, K, N]`` scores that choose the slots (FT-DINOSAUR: the last
                slot-attention iteration's attention); no gradient flows through the choice.

        Returns:
            dict with
              * ``reconstruction``: ``[B, N, D]`` (float32),
              * ``masks``: ``[B, K, N]`` alpha weights, summing to 1 over ``K`` (float32; with
                ``slot_keep``: to ``S / (S + 1e-5)`` over the kept slots, S their softmax mass),
              * ``slot_reconstructions``: ``[B, K, N, D]`` per-slot features ``x_k``.
        """
        B, K, _ = slots.shape
        x = self.slot_proj(slots)  # [B, K, Din]
        if 0 < top_k < K:
            if select_by is None:
                raise ValueError("top-k decoding needs select_by [B, K, N]")
            if slot_keep is not None:
                raise ValueError("top-k decoding and slot_keep cannot be combined")
            return self._forward_top_k(x, top_k, select_by)
        x = x.unsqueeze(2) + self.pos_embed.unsqueeze(0)  # [B, K, N, Din]
        out = self.mlp(x)  # [B, K, N, D + 1]
        feats, logits = out.split([self.feature_dim, 1], dim=-1)
        alpha = torch.softmax(logits.float(), dim=1)  # [B, K, N, 1], over slots
        if slot_keep is not None:
            alpha = mask_normalized(alpha, slot_keep.float())
        recon = (alpha * feats.float()).sum(dim=1)  # [B, N, D]
        return {
            "reconstruction": recon,
            "masks": alpha.squeeze(-1),
            "slot_reconstructions": feats,
        }

    def _forward_top_k(self, x: torch.Tensor, k: int, select_by: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode only the ``k`` chosen slots per position: the MLP runs on ``[B, k, N]`` inputs."""
        B, K, D_in = x.shape
        N = self.pos_embed.shape[1]
        if select_by.shape != (B, K, N):
            raise ValueError(f"select_by must be [B, K, N] = {(B, K, N)}, got {tuple(select_by.shape)}")
        index = top_k_slots(select_by, k)  # [B, k, N]
        chosen = torch.gather(x.unsqueeze(2).expand(B, K, N, D_in), 1, index.unsqueeze(-1).expand(B, k, N, D_in))
        out = self.mlp(chosen + self.pos_embed.unsqueeze(0))  # [B, k, N, D + 1]
        feats, logits = out.split([self.feature_dim, 1], dim=-1)
        alpha = torch.softmax(logits.float(), dim=1)  # over the chosen slots only
        recon = (alpha * feats.float()).sum(dim=1)
        masks = alpha.new_zeros(B, K, N).scatter(1, index, alpha.squeeze(-1))
        return {"reconstruction": recon, "masks": masks, "top_k_index": index}


@torch.no_grad()
def top_k_slots(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[B, k, N]`` of the ``k`` largest of ``scores`` ``[B, K, N]`` over slots, per position.

    A hard choice without gradient. Ties go to the lower slot index (a stable sort), so the choice
    is the same on every device and run; without ties it is the set ``torch.topk`` picks.
    """
    return torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices[:, :k]


# ---------------------------------------------------------------------------------------------
# Autoregressive transformer decoder (SPOT / SLATE)
# ---------------------------------------------------------------------------------------------


def _xavier_linear(in_dim: int, out_dim: int, bias: bool, gain: float = 1.0) -> nn.Linear:
    lin = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.xavier_uniform_(lin.weight, gain=gain)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class _MultiHeadAttention(nn.Module):
    """Multi-head attention with bias-free xavier projections.

    ``proj_o`` uses xavier gain ``out_gain``. Dropout is applied to the attention weights and to
    the output. With ``return_weights=True`` the softmax is computed explicitly in fp32 and the
    pre-dropout weights averaged over heads (``[B, Lq, Lk]``) are returned too; otherwise
    :func:`F.scaled_dot_product_attention` is used (fused flash / memory-efficient kernels), unless
    ``sdpa`` is False: then the same explicit fp32 path runs (reference and benchmark baseline).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, out_gain: float) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.sdpa = True  # see AutoregressiveDecoder.use_sdpa
        self.proj_q = _xavier_linear(dim, dim, bias=False)
        self.proj_k = _xavier_linear(dim, dim, bias=False)
        self.proj_v = _xavier_linear(dim, dim, bias=False)
        self.proj_o = _xavier_linear(dim, dim, bias=False, gain=out_gain)
        self.attn_dropout = KeyedDropout(dropout)
        self.output_dropout = KeyedDropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, L, hd]

    def forward(
        self,
        q: torch.Tensor,
        kv: torch.Tensor,
        causal: bool = False,
        return_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``q`` ``[B, Lq, D]``, ``kv`` ``[B, Lk, D]`` -> (``[B, Lq, D]``, weights or None)."""
        B, Lq, _ = q.shape
        qh = self._heads(self.proj_q(q))
        kh = self._heads(self.proj_k(kv))
        vh = self._heads(self.proj_v(kv))
        weights_mean: torch.Tensor | None = None
        # Training dropout inside a keyed forward takes the explicit path: SDPA draws its dropout
        # mask from the device RNG, which would differ between processes (models/noise.py).
        keyed_dropout = self.training and self.dropout > 0 and noise.current() is not None
        if return_weights or not self.sdpa or keyed_dropout:
            # fp32 logits and softmax even under autocast (autocast would recast matmul inputs).
            with torch.autocast(device_type=q.device.type, enabled=False):
                logits = torch.matmul(qh.float(), kh.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
                if causal:
                    Lk = kh.shape[2]
                    mask = torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).triu(1)
                    logits = logits.masked_fill(mask, float("-inf"))
                attn = torch.softmax(logits, dim=-1)  # [B, H, Lq, Lk], fp32
                if return_weights:
                    weights_mean = attn.mean(dim=1)  # pre-dropout, averaged over heads
            out = torch.matmul(self.attn_dropout(attn).to(vh.dtype), vh)
        else:
            out = F.scaled_dot_product_attention(
                qh, kh, vh, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
            )
        out = out.transpose(1, 2).reshape(B, Lq, self.dim)
        out = self.output_dropout(self.proj_o(out))
        return out, weights_mean


class _DecoderBlock(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention to slots, ReLU FFN.

    With ``is_first`` the input is normalised first and the residual is added to the
    *normalised* input (a SLATE quirk).
    """

    def __init__(
        self, dim: int, num_heads: int, num_cross_heads: int, dropout: float, gain: float, is_first: bool
    ) -> None:
        super().__init__()
        self.is_first = is_first
        self.self_attn_norm = nn.LayerNorm(dim)
        self.self_attn = _MultiHeadAttention(dim, num_heads, dropout, gain)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = _MultiHeadAttention(dim, num_cross_heads, dropout, gain)
        self.ffn_norm = nn.LayerNorm(dim)
        fc1 = nn.Linear(dim, 4 * dim)
        nn.init.kaiming_uniform_(fc1.weight, nonlinearity="relu")
        nn.init.zeros_(fc1.bias)
        self.ffn = nn.Sequential(
            fc1, nn.ReLU(inplace=True), _xavier_linear(4 * dim, dim, bias=True, gain=gain), KeyedDropout(dropout)
        )

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``[B, N, D]``, ``memory`` ``[B, K, D]`` -> (``[B, N, D]``, ``[B, N, K]`` or None)."""
        if self.is_first:
            x = self.self_attn_norm(x)
            x = x + self.self_attn(x, x, causal=True)[0]
        else:
            h = self.self_attn_norm(x)
            x = x + self.self_attn(h, h, causal=True)[0]
        h, weights = self.cross_attn(self.cross_attn_norm(x), memory, return_weights=return_weights)
        x = x + h
        x = x + self.ffn(self.ffn_norm(x))
        return x, weights


class AutoregressiveDecoder(nn.Module):
    """SPOT's autoregressive (SLATE-style) transformer decoder over patch features.

    Teacher forcing: for an ordering ``pi`` the input sequence is
    ``[BOS_i, t[pi[0]], ..., t[pi[N-2]]]`` -> ``input_proj`` -> blocks (causal self-attention,
    cross-attention to projected slots) -> final LayerNorm, whose output *is* the prediction
    (no output projection). Sequence position ``j`` predicts token ``pi[j]``; outputs are
    un-permuted back to raster order. No positional embedding is added (features carry position).
    The causal mask is built on the fly, so nothing mask-related is in the state_dict and any
    ``N`` works (``num_tokens`` is informational).

    Args:
        feature_dim: ``D`` (decoder width = encoder feature dim).
        slot_dim: ``Ds``.
        num_tokens: nominal ``N`` (e.g. 196).
        num_blocks: number of decoder blocks ``L`` (4).
        num_heads: self-attention heads (6); also cross-attention heads of the first block.
        num_cross_heads: cross-attention heads of blocks 2..L (``None`` -> ``num_heads``).
        dropout: dropout on attention weights, attention outputs and FFN output.
        num_orderings: number of BOS tokens (1 for standard order only, 9 with permutations).
        input_proj: project the teacher-forcing inputs with ``Linear + LayerNorm`` (SPOT). SLATE
            passes token embeddings that are already in the decoder width: ``False``.
        slot_proj_norm: LayerNorm after the slot projection (SPOT); SLATE projects slots with
            a bias-free Linear only.
        output_dim: ``None`` (SPOT): the final LayerNorm output is the prediction, of width
            ``feature_dim``. An int (SLATE: the dVAE vocabulary size) adds a bias-free head
            ``Linear(feature_dim -> output_dim)`` after the final LayerNorm; the prediction then
            holds logits for a cross-entropy.
        learned_bos: hold the BOS tokens here (``bos_tokens``). ``False``: the caller passes the
            BOS vectors to ``forward`` (SLATE's official BOS: a vocabulary row plus position 0,
            after the embedding dropout).
    """

    def __init__(
        self,
        feature_dim: int,
        slot_dim: int,
        num_tokens: int,
        num_blocks: int = 4,
        num_heads: int = 6,
        num_cross_heads: int | None = None,
        dropout: float = 0.0,
        num_orderings: int = 1,
        input_proj: bool = True,
        slot_proj_norm: bool = True,
        output_dim: int | None = None,
        learned_bos: bool = True,
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if num_orderings < 1:
            raise ValueError(f"num_orderings must be >= 1, got {num_orderings}")
        self.feature_dim = feature_dim
        self.slot_dim = slot_dim
        self.num_tokens = num_tokens
        self.num_orderings = num_orderings
        cross_heads = num_heads if num_cross_heads is None else num_cross_heads

        self.input_proj: nn.Module = (
            nn.Sequential(_xavier_linear(feature_dim, feature_dim, bias=False), nn.LayerNorm(feature_dim))
            if input_proj
            else nn.Identity()
        )
        self.slot_proj = nn.Sequential(
            _xavier_linear(slot_dim, feature_dim, bias=False),
            nn.LayerNorm(feature_dim) if slot_proj_norm else nn.Identity(),
        )
        self.bos_tokens: nn.Parameter | None = None
        if learned_bos:
            self.bos_tokens = nn.Parameter(torch.empty(num_orderings, feature_dim))
            nn.init.normal_(self.bos_tokens, std=0.02)

        gain = (3 * num_blocks) ** -0.5
        self.blocks = nn.ModuleList(
            [
                _DecoderBlock(
                    feature_dim,
                    num_heads,
                    num_heads if i == 0 else cross_heads,  # first block ignores num_cross_heads
                    dropout,
                    gain,
                    is_first=(i == 0),
                )
                for i in range(num_blocks)
            ]
        )
        self.final_norm = nn.LayerNorm(feature_dim)
        self.output_dim = feature_dim if output_dim is None else output_dim
        self.head: nn.Module = (
            nn.Identity() if output_dim is None else _xavier_linear(feature_dim, output_dim, bias=False)
        )

    def use_sdpa(self, enabled: bool = True) -> None:
        """Attention kernel of every block: ``F.scaled_dot_product_attention`` (default) or the
        explicit fp32 softmax. The last block's cross-attention always runs explicitly, since its
        weights are the masks. Changes no parameter, so checkpoints do not depend on it."""
        for module in self.modules():
            if isinstance(module, _MultiHeadAttention):
                module.sdpa = enabled

    def forward(
        self,
        slots: torch.Tensor,
        targets: torch.Tensor,
        ordering: torch.Tensor | None = None,
        ordering_index: int | torch.Tensor | Sequence[int] = 0,
        bos: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced decoding under one patch ordering, or under several at once.

        Args:
            slots: ``[B, K, Ds]``.
            targets: ``[B, N, D]`` target features in raster order (also the teacher-forcing input).
            ordering: LongTensor ``[N]``; sequence position ``j`` predicts token ``ordering[j]``.
                ``None`` = raster order. ``[M, N]`` decodes ``M`` orderings in one pass: they are
                stacked along the batch dimension (``M * B`` sequences), which is faster than ``M``
                calls when the per-call work is small (SPOT's ``--eval_permutations all``).
            ordering_index: which BOS token to use (``< num_orderings``); one per ordering (a
                sequence of ``M``) with an ``[M, N]`` ordering. With one ordering a 0-d tensor is
                accepted too, so that a randomly drawn index never leaves the device (no graph
                break under ``torch.compile``, no host sync; its range is then not checked).
            bos: ``[B, D]`` BOS vectors, one per sequence (one ordering only); required without
                ``learned_bos``, which then ignores ``ordering_index``.

        Returns:
            dict with (both in raster token order, float32)
              * ``reconstruction``: ``[B, N, D]`` (``[B, N, output_dim]`` logits with a head),
              * ``masks``: ``[B, K, N]`` last block's cross-attention (pre-dropout, mean over heads),
                summing to 1 over ``K``;
            with an ``[M, N]`` ordering each gets a leading ``M`` dimension (``[M, B, N, D]``, ``[M, B, K, N]``).
        """
        B, N, D = targets.shape
        if D != self.feature_dim:
            raise ValueError(f"targets have dim {D}, decoder expects {self.feature_dim}")
        several = ordering is not None and ordering.dim() == 2
        if isinstance(ordering_index, torch.Tensor):
            if ordering_index.numel() != 1:
                raise ValueError("a tensor ordering_index must hold one index (0-d)")
            indices: list[int] = []  # not read on the host
        else:
            indices = ([int(i) for i in ordering_index] if isinstance(ordering_index, Sequence)
                       else [int(ordering_index)])
        for index in indices:
            if not 0 <= index < self.num_orderings:
                raise ValueError(f"ordering_index {index} out of range for {self.num_orderings} BOS token(s)")
        M = len(indices) or 1
        if several != isinstance(ordering_index, Sequence) or (several and ordering.shape[0] != M):
            raise ValueError("pass one ordering_index per ordering: an int with an [N] ordering, "
                             "a sequence of M with an [M, N] ordering")
        if ordering is not None:
            if ordering.shape[-1:] != (N,) or ordering.dim() > 2:
                raise ValueError(f"ordering must have shape [{N}] or [M, {N}], got {tuple(ordering.shape)}")
            ordering = ordering.to(device=targets.device, dtype=torch.long).reshape(M, N)
            # [B, M * N] -> [M, B, N, D]: ordering m's sequences are rows m*B .. (m+1)*B - 1.
            seq = targets.index_select(1, ordering.reshape(-1)).view(B, M, N, D).transpose(0, 1)
        else:
            seq = targets.unsqueeze(0)

        if bos is not None or self.bos_tokens is None:
            if bos is None or tuple(bos.shape) != (B, D) or M != 1:
                raise ValueError(f"pass bos [{B}, {D}] with one ordering (the decoder holds no BOS tokens)")
            bos = bos.to(targets.dtype).view(1, B, 1, D)
        else:
            if isinstance(ordering_index, torch.Tensor):  # index_select: traceable without reading the value
                bos_index = ordering_index.reshape(1).to(device=targets.device, dtype=torch.long)
            else:
                bos_index = torch.as_tensor(indices, device=targets.device)
            bos = self.bos_tokens.index_select(0, bos_index).to(targets.dtype).view(M, 1, 1, D).expand(M, B, 1, D)
        x = torch.cat([bos, seq[:, :, :-1]], dim=2).reshape(M * B, N, D)
        x = self.input_proj(x)
        memory = self.slot_proj(slots)  # [B, K, D], the same for every ordering
        if M > 1:
            memory = memory.unsqueeze(0).expand(M, *memory.shape).reshape(M * B, *memory.shape[1:])

        weights: torch.Tensor | None = None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, w = block(x, memory, return_weights=(i == last))
            if w is not None:
                weights = w
        recon = self.head(self.final_norm(x)).float()  # [M * B, N, D or output_dim], sequence order
        assert weights is not None
        masks = weights / weights.sum(dim=-1, keepdim=True)  # [M * B, N, K]; already ~1, renormalise
        recon, masks = recon.view(M, B, N, -1), masks.view(M, B, N, -1)

        if ordering is not None:
            inv = inverse_ordering(ordering)  # [M, N]
            recon = recon.gather(2, inv.view(M, 1, N, 1).expand_as(recon))
            masks = masks.gather(2, inv.view(M, 1, N, 1).expand_as(masks))
        masks = masks.transpose(2, 3).contiguous()  # [M, B, K, N]
        if not several:
            return {"reconstruction": recon[0], "masks": masks[0]}
        return {"reconstruction": recon, "masks": masks}


# ---------------------------------------------------------------------------------------------
# Spatial-broadcast CNN decoder (Slot Attention)
# ---------------------------------------------------------------------------------------------


CONV_INITS: tuple[str, ...] = ("glorot", "kaiming")
ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu")


def activation_layer(name: str) -> nn.Module:
    """``relu`` (the official Slot Attention) or ``leaky_relu`` (slope 0.01, the seed's object-discovery port)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def init_weights(module: nn.Module, method: str = "glorot") -> None:
    """Initialise every conv / linear layer of ``module``; biases are zeroed.

    ``glorot``: Keras defaults, as in the official Slot Attention code (glorot-uniform kernels).
    ``kaiming``: He-uniform for ReLU layers, which keeps the signal's variance through the ReLU
    stacks (glorot halves it per layer, PyTorch's default divides it by about six, so after the
    four encoder convs the colour signal is small next to the position embedding).
    """
    if method not in CONV_INITS:
        raise ValueError(f"unknown init {method!r}; expected one of {CONV_INITS}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if method == "glorot":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def broadcast_size(image_size: int, num_upsamples: int) -> int:
    """Side of the grid each slot is tiled to: ``image_size / 2**num_upsamples`` (8 for 128 px and 4)."""
    factor = 2**num_upsamples
    if num_upsamples < 0 or image_size % factor:
        raise ValueError(
            f"image size {image_size} is not divisible by 2**{num_upsamples} = {factor} "
            "(the decoder doubles the broadcast grid that many times)"
        )
    return image_size // factor


class SpatialBroadcastDecoder(nn.Module):
    """Slot Attention's pixel decoder: each slot is decoded alone into RGB + an alpha logit.

    Every slot is tiled to a ``S x S`` grid with ``S = image_size / 2**num_upsamples`` (8 for
    the paper's 128 px CLEVR decoder), gets its own soft position embedding, then
    ``num_upsamples`` ``ConvTranspose2d(k, stride 2)`` + ReLU layers double the grid, one
    stride-1 ``ConvTranspose2d(k)`` + ReLU follows and a ``ConvTranspose2d(3x3)`` gives 3 colour
    channels and 1 alpha logit. Alphas are softmaxed over slots (fp32); the reconstruction is
    ``sum_k alpha_k * rgb_k``. ``num_upsamples=0`` broadcasts at full resolution (the paper's
    decoder for the sprite datasets has that shape).

    Args:
        slot_dim: ``Ds``.
        image_size: output side ``H = W``.
        hidden_channels: width of every hidden layer (64).
        num_upsamples: stride-2 layers (4).
        kernel_size: kernel of the hidden layers (5).
        out_channels: colour channels (3).
        init: weight initialisation, see :func:`init_weights`.
        activation: of the hidden layers, see :func:`activation_layer`.
    """

    def __init__(
        self,
        slot_dim: int,
        image_size: int,
        hidden_channels: int = 64,
        num_upsamples: int = 4,
        kernel_size: int = 5,
        out_channels: int = 3,
        init: str = "glorot",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.image_size, self.out_channels = image_size, out_channels
        self.broadcast = broadcast_size(image_size, num_upsamples)
        self.pos_embed = SoftPositionEmbed(slot_dim, self.broadcast, self.broadcast)
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        channels = slot_dim
        for _ in range(num_upsamples):
            layers += [
                nn.ConvTranspose2d(channels, hidden_channels, kernel_size, stride=2, padding=pad, output_padding=1),
                activation_layer(activation),
            ]
            channels = hidden_channels
        layers += [
            nn.ConvTranspose2d(channels, hidden_channels, kernel_size, stride=1, padding=pad),
            activation_layer(activation),
            nn.ConvTranspose2d(hidden_channels, out_channels + 1, 3, stride=1, padding=1),
        ]
        self.layers = nn.Sequential(*layers)
        init_weights(self, init)

    def forward(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode slots ``[B, K, Ds]`` into pixels.

        Returns:
            dict with
              * ``reconstruction``: ``[B, C, H, W]`` (float32),
              * ``masks``: ``[B, K, H, W]`` alpha masks, summing to 1 over ``K`` (float32),
              * ``slot_reconstructions``: ``[B, K, C, H, W]`` per-slot colours ``rgb_k``.
        """
        B, K, D = slots.shape
        s = self.broadcast
        x = slots.reshape(B * K, D, 1, 1).expand(-1, -1, s, s)
        out = self.layers(self.pos_embed(x))  # [B*K, C+1, H, W]
        out = out.view(B, K, self.out_channels + 1, *out.shape[-2:])
        rgb, logits = out.split([self.out_channels, 1], dim=2)
        alpha = torch.softmax(logits.float(), dim=1)  # [B, K, 1, H, W], over slots
        recon = (alpha * rgb.float()).sum(dim=1)
        return {"reconstruction": recon, "masks": alpha.squeeze(2), "slot_reconstructions": rgb}
