"""The one slot attention module of the project (Locatello et al. 2020, as used by SPOT/DINOSAUR).

Behaviour follows the SPOT/OCLF code (docs/methods/spot.md, docs/methods/dinosaur.md):
keys are pre-scaled, the softmax runs over slots (over heads x slots jointly, as SPOT does),
``eps`` is added after that softmax and the weights are renormalised over the inputs
(weighted mean), and the update is a GRU followed by a residual MLP.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from models import noise as keyed_noise

InitMethod = Literal["shared_gaussian", "embedding"]
Truncation = Literal["none", "bi-level", "fixed-point"]
Update = Literal["gru", "residual"]
INIT_METHODS: tuple[str, ...] = ("shared_gaussian", "embedding")
TRUNCATIONS: tuple[str, ...] = ("none", "bi-level", "fixed-point")
UPDATES: tuple[str, ...] = ("gru", "residual")
# How q/k/v, the GRU and the slot MLP are initialised: SPOT's scheme (xavier projections,
# orthogonal recurrent weights, zero biases) or PyTorch's defaults (the AdaSlot and OCLF DINOSAUR
# references). Part of each method's recipe: see docs/methods/adaslot.md.
INIT_SCHEMES: tuple[str, ...] = ("xavier", "torch_default")


class SlotInitializer(nn.Module):
    """Initial slots: a shared learned Gaussian (sampled every call) or K learned embeddings."""

    def __init__(self, num_slots: int, slot_dim: int, method: InitMethod = "shared_gaussian") -> None:
        super().__init__()
        if method not in INIT_METHODS:
            raise ValueError(f"unknown slot init method {method!r}; expected one of {INIT_METHODS}")
        self.num_slots, self.slot_dim, self.method = num_slots, slot_dim, method
        if method == "shared_gaussian":
            self.mu = nn.Parameter(torch.empty(1, 1, slot_dim))
            self.log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
            nn.init.xavier_uniform_(self.mu)
            nn.init.xavier_uniform_(self.log_sigma)
        else:
            self.embedding = nn.Parameter(torch.empty(num_slots, slot_dim))
            nn.init.xavier_uniform_(self.embedding)

    def forward(self, batch_size: int, num_slots: int | None = None) -> torch.Tensor:
        """Return initial slots [B, K, D]. Gaussian samples come from the training batch's keys
        inside a keyed forward (``models/noise.py``), else from the global torch RNG."""
        if self.method == "embedding":
            if num_slots not in (None, self.num_slots):
                raise ValueError("embedding init has a fixed number of slots")
            return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)
        k = num_slots or self.num_slots
        noise = keyed_noise.randn(batch_size, (k, self.slot_dim), "slot_init", self.mu.device, self.mu.dtype)
        if noise is None:
            noise = torch.randn(batch_size, k, self.slot_dim, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.log_sigma.exp() * noise


class SlotAttention(nn.Module):
    """Iterative slot attention over a set of input features.

    Args:
        input_dim: feature dim of the inputs (keys/values are projected from it).
        slot_dim: slot dim D_s.
        num_slots: K.
        num_iterations: attention iterations (3 in SPOT/DINOSAUR).
        num_heads: attention heads; the softmax runs over heads x slots jointly as in SPOT.
        mlp_hidden_dim: hidden width of the residual slot MLP.
        eps: added to the attention after the softmax over slots, before the weighted mean.
        init_method: ``shared_gaussian`` (stochastic) or ``embedding`` (deterministic).
        truncate: gradient truncation applied at the start of the last iteration:
            ``none``, ``fixed-point`` (detach) or ``bi-level`` (detach + straight-through to the init).
            With either truncation the earlier iterations run under ``no_grad`` (their graph
            would be discarded anyway), so backward costs one iteration whatever ``num_iterations``.
            ``fixed-point`` is the first-order implicit gradient of Chang et al. 2022: the slots
            are treated as a fixed point, so nothing reaches the initial slots and the init's
            parameters are frozen (``requires_grad=False``): they keep their random values, and
            DDP's every-parameter-gets-a-gradient check holds.
        update: ``gru`` (Locatello et al.) or ``residual`` (``slots + updates``, no GRU; SMTC).
        init_scheme: ``xavier`` (SPOT's initialisation) or ``torch_default`` (``nn.Linear`` and
            ``nn.GRUCell`` defaults, biases included; AdaSlot and OCLF DINOSAUR), see ``INIT_SCHEMES``.
        qkv_bias: biases on the q/k/v projections (SMTC's official code has them; SPOT, DINOSAUR,
            AdaSlot and Slot Attention do not). They keep ``nn.Linear``'s initialisation.

    ``forward`` also accepts (SMTC's semantic-aware masked slot attention, docs/methods/smtc.md): explicit
    initial slots, ``group_size`` (the softmax competes only within consecutive groups of that many
    slots instead of over all slots) and ``input_mask`` [B, N, K] (attention multiplied by a hard
    mask before the weighted mean, so a slot never reads masked inputs).
    """

    def __init__(
        self,
        input_dim: int,
        slot_dim: int = 256,
        num_slots: int = 7,
        num_iterations: int = 3,
        num_heads: int = 1,
        mlp_hidden_dim: int = 1024,
        eps: float = 1e-8,
        init_method: InitMethod = "shared_gaussian",
        truncate: Truncation = "none",
        update: Update = "gru",
        qkv_bias: bool = False,
        init_scheme: str = "xavier",
    ) -> None:
        super().__init__()
        if init_scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {init_scheme!r}; expected one of {INIT_SCHEMES}")
        if update not in UPDATES:
            raise ValueError(f"unknown slot update {update!r}; expected one of {UPDATES}")
        if slot_dim % num_heads:
            raise ValueError(f"slot_dim {slot_dim} is not divisible by num_heads {num_heads}")
        if truncate not in TRUNCATIONS:
            raise ValueError(f"unknown truncation {truncate!r}; expected one of {TRUNCATIONS}")
        self.num_slots, self.num_iterations, self.num_heads = num_slots, num_iterations, num_heads
        self.slot_dim, self.eps, self.truncate, self.update = slot_dim, eps, truncate, update
        self.scale = (slot_dim // num_heads) ** -0.5

        self.init = SlotInitializer(num_slots, slot_dim, init_method)
        if truncate == "fixed-point":
            # No gradient can reach the init through a fixed point; frozen, so that optimisers
            # and DDP do not expect one.
            self.init.requires_grad_(False)
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=qkv_bias)
        self.to_k = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        self.to_v = nn.Linear(input_dim, slot_dim, bias=qkv_bias)
        # No GRU at all for residual updates: unused parameters would trouble DDP.
        self.gru = nn.GRUCell(slot_dim, slot_dim) if update == "gru" else None
        self.mlp = nn.Sequential(
            nn.Linear(slot_dim, mlp_hidden_dim), nn.ReLU(inplace=True), nn.Linear(mlp_hidden_dim, slot_dim)
        )
        if init_scheme == "xavier":
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        # SPOT's scheme (xavier projections, orthogonal recurrent weights): it breaks slot
        # symmetry much faster than PyTorch defaults.
        for linear in (self.to_q, self.to_k, self.to_v):
            nn.init.xavier_uniform_(linear.weight)
        if self.gru is not None:
            nn.init.xavier_uniform_(self.gru.weight_ih)
            nn.init.orthogonal_(self.gru.weight_hh)
            nn.init.zeros_(self.gru.bias_ih)
            nn.init.zeros_(self.gru.bias_hh)
        nn.init.kaiming_uniform_(self.mlp[0].weight, nonlinearity="relu")
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.xavier_uniform_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def step(
        self,
        slots: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        group_size: int | None = None,
        input_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One iteration. slots [B, K, D], keys/values [B, H, N, D/H], input_mask [B, N, K].

        Returns (new slots [B, K, D], attention normalised over slots [B, N, K],
        attention logits [B, H, N, K]).
        """
        b, k, d = slots.shape
        h = self.num_heads
        # LayerNorms take fp32 input: under CPU autocast a bf16 input would normalise in bf16
        # (CUDA autocast runs layer_norm in fp32 anyway); the slot state itself stays fp32.
        queries = self.to_q(self.norm_slots(slots.float())).view(b, k, h, d // h).transpose(1, 2)  # [B, H, K, d]
        logits = torch.einsum("bhnd,bhkd->bhnk", keys, queries)  # [B, H, N, K]
        n = logits.shape[2]
        # Softmax in fp32: slots compete for every input (over heads x slots, as SPOT).
        if group_size is None:
            attn = logits.float().permute(0, 2, 1, 3).reshape(b, n, h * k).softmax(dim=-1)
        else:  # competition only inside each group of slots (single head)
            attn = logits.float().permute(0, 2, 1, 3).reshape(b, n, h, k // group_size, group_size).softmax(-1)
        attn = attn.reshape(b, n, h, k).permute(0, 2, 1, 3)  # [B, H, N, K]
        attn_vis = attn.sum(dim=1)  # [B, N, K], sums to one over slots (over each group if grouped)
        weights = attn + self.eps
        if input_mask is not None:
            weights = weights * input_mask[:, None].to(weights.dtype)
            # A slot whose mask is empty everywhere gets a zero update instead of 0/0.
            weights = weights / (weights.sum(dim=2, keepdim=True) + self.eps)
        else:
            weights = weights / weights.sum(dim=2, keepdim=True)  # weighted mean over inputs
        updates = torch.einsum("bhnk,bhnd->bhkd", weights.to(values.dtype), values)
        updates = updates.transpose(1, 2).reshape(b * k, d)
        if self.gru is not None:
            # fp32 state between iterations (autocast would hand back the GRU's output in bf16/fp16).
            slots = self.gru(updates, slots.reshape(b * k, d)).view(b, k, d).float()
        else:
            slots = slots.float() + updates.view(b, k, d)
        slots = slots + self.mlp(self.norm_mlp(slots))
        return slots, attn_vis, logits

    def forward(
        self,
        inputs: torch.Tensor,
        num_slots: int | None = None,
        slots_init: torch.Tensor | None = None,
        group_size: int | None = None,
        input_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """inputs [B, N, input_dim] -> dict(slots [B, K, D], attn [B, K, N], attn_logits [B, N, K]).

        ``slots_init`` [B, K, D] replaces the module's own initialiser; ``group_size`` and
        ``input_mask`` [B, N, K] are described in the class docstring.

        ``attn`` is the last iteration's attention (computed with the pre-update slots),
        normalised over slots and taken before ``eps``; ``attn_logits`` are that iteration's raw
        logits (summed over heads when there are several), used as distillation logits.
        """
        b, n, _ = inputs.shape
        h = self.num_heads
        inputs = self.norm_inputs(inputs.float())  # normalisation in fp32 (see step)
        keys = (self.to_k(inputs) * self.scale).view(b, n, h, -1).transpose(1, 2)  # [B, H, N, d]
        values = self.to_v(inputs).view(b, n, h, -1).transpose(1, 2)
        if group_size is not None and (self.num_heads != 1 or (slots_init is not None and slots_init.shape[1] % group_size)):
            raise ValueError("group_size needs one head and a slot count divisible by it")
        if slots_init is None:
            slots_init = self.init(b, num_slots)
        slots = slots_init
        attn = logits = None
        truncated = self.truncate != "none"
        for iteration in range(self.num_iterations):
            last = iteration == self.num_iterations - 1
            if last and truncated:
                slots = slots.detach()
                if self.truncate == "bi-level":
                    # Straight-through: forward value unchanged, gradient reaches the init.
                    slots = slots + slots_init - slots_init.detach()
            # Iterations before a truncation carry no gradient: build no graph for them.
            with torch.set_grad_enabled(torch.is_grad_enabled() and (last or not truncated)):
                slots, attn, logits = self.step(slots, keys, values, group_size, input_mask)
        assert attn is not None and logits is not None
        return {
            "slots": slots,
            "slots_init": slots_init,
            "attn": attn.transpose(1, 2),
            "attn_logits": logits.sum(dim=1),
        }


def input_mlp(dim: int, out_dim: int | None = None, hidden_dim: int | None = None) -> nn.Sequential:
    """The LayerNorm-MLP that DINOSAUR, SPOT and SLATE put between the features and slot attention.

    ``LayerNorm -> Linear -> ReLU -> Linear`` with He-initialised first and Xavier-initialised second
    weights and zero biases (the SPOT/SLATE initialisation; ``state_dict`` keys ``1.*`` and ``3.*``).
    The hidden width is ``hidden_dim`` (default ``dim``; FT-DINOSAUR uses ``2 * dim``).
    """
    hidden = hidden_dim or dim
    mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim or dim))
    nn.init.kaiming_uniform_(mlp[1].weight, nonlinearity="relu")
    nn.init.zeros_(mlp[1].bias)
    nn.init.xavier_uniform_(mlp[3].weight)
    nn.init.zeros_(mlp[3].bias)
    return mlp
