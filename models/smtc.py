"""SMTC: semantic-aware masked slot attention on video with temporal correspondence (docs/methods/smtc.md).

Written from the official code's behaviour, not its code (which carries no licence); docs/methods/smtc.md. Pieces:

- ViT keys of the last block (``FrozenViT.forward_with_keys``) plus a temporal-correspondence term:
  raw dot products between the previous frame's keys resized to a fixed anchor grid (cyclic in
  time: frame 0 pairs with the last frame) and every key of the current frame, projected by a
  linear layer (a 1x1 Conv1d) and added to the keys.
- Two-stage slot attention with shared weights (the project's ``SlotAttention`` with
  ``update="residual"``): stage 1 = S semantic slots initialised at the learned means ``mu``,
  softmax over slots; stage 2 = P instance slots per semantic slot sampled from
  N(mu_s, exp(log_sigma_s)), softmax over the P instances of each semantic slot, attention
  multiplied by the hard mask ``semantic_logits > 0.3`` (raw scaled logits). Both use the
  bi-level gradient trick (last round + straight-through to the init).
- Teacher = EMA copy (momentum 0.999) of every parameter whose name lacks "encoder"; the
  teacher's ViT stays at its initial weights. Losses: diversity of semantic masks, bidirectional
  Sinkhorn semantic consistency, Hungarian instance consistency with the validity filter.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from ground.collectives import all_reduce_sum, world_size
from ground.schedules import cosine
from models import noise as keyed_noise
from models.slot_attention import SlotAttention


@dataclass
class SMTCConfig:
    """Model hyper-parameters (defaults: the published recipe)."""

    num_slots: int = 16
    num_instances: int = 4
    num_iterations: int = 3
    anchor_grid: int = 16  # correlation anchors: keys resized to this square grid (train size // 16)
    entro_cons: bool = True
    bi_cons: bool = True
    ent_scale: float = 1.0
    cons_scale: float = 1.0
    ema_momentum: float = 0.999
    mask_threshold: float = 0.3  # stage-2 hard mask on raw semantic logits
    valid_prob: float = 0.3  # validity (a): softmax-over-slots probability ...
    valid_area: float = 0.2  # ... above valid_prob on more than this fraction of tokens
    valid_cos: float = 0.5  # validity (b): cos(semantic slot, instance slot)
    negative_margin: float = 0.5
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    augment: bool = True
    # Official behaviour (docs/methods/smtc.md). Checkpoints written before these fields existed lack
    # them and get the old values (models.FIELDS_ADDED_IN_FORMAT_2): no q/k/v biases, a frozen stem,
    # no drop-path and reparameterised instance slots.
    qkv_bias: bool = True  # biases on slot attention's q/k/v projections
    encoder_drop_path: float = 0.1  # the student ViT trains with stochastic depth (DINO's default)
    train_encoder_stem: bool = True  # patch/position embeddings and CLS token train with the blocks
    reparam_instances: bool = False  # True: instance slots are a reparameterised sample (mu, log_sigma learn)


# ----------------------------------------------------------------------------- loss pieces


def sinkhorn(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Entropic OT plan [..., N, M] for cost [..., N, M] and marginals a [..., N], b [..., M].

    Plain Sinkhorn scaling, ending with the column update: columns match ``b`` exactly, rows
    only approximately after few iterations (SMTC uses 3).
    """
    kernel = torch.exp(-cost / eps)
    v = torch.ones_like(b)
    u = torch.ones_like(a)
    for _ in range(iters):
        u = a / (kernel @ v.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30)
        v = b / (kernel.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1).clamp_min(1e-30)
    return u.unsqueeze(-1) * kernel * v.unsqueeze(-2)


def key_marginals(keys: torch.Tensor) -> torch.Tensor:
    """OT marginals: L1 norm of the L2-normalised keys [..., N, D], normalised to sum 1 over N."""
    w = F.normalize(keys, dim=-1).abs().sum(-1)
    return w / w.sum(-1, keepdim=True)


def diversity_loss(semantic_logits: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the soft semantic masks of different slots.

    semantic_logits [..., S, N]; masks = softmax over slots (+1e-8), L2-normalised over N.
    """
    s = semantic_logits.shape[-2]
    masks = F.normalize(semantic_logits.softmax(-2) + 1e-8, dim=-1)
    sim = masks @ masks.transpose(-1, -2)  # [..., S, S]
    off = sim.sum((-1, -2)) - sim.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (off / (s * (s - 1))).mean()


def validity(semantic_logits: torch.Tensor, semantic_slots: torch.Tensor, instance_slots: torch.Tensor,
             cfg: SMTCConfig) -> torch.Tensor:
    """Valid instances [..., S, P] (float 0/1), docs/methods/smtc.md: the semantic slot covers more than
    ``valid_area`` of the tokens with probability > ``valid_prob`` and cos(semantic, instance) > ``valid_cos``.

    semantic_logits [..., S, N], semantic_slots [..., S, D], instance_slots [..., S, P, D].
    """
    prob = semantic_logits.softmax(-2)
    area = (prob > cfg.valid_prob).float().mean(-1)  # [..., S]
    cos = F.cosine_similarity(semantic_slots.unsqueeze(-2), instance_slots, dim=-1)  # [..., S, P]
    return ((area > cfg.valid_area).unsqueeze(-1) & (cos > cfg.valid_cos)).float()


def hungarian_order(similarity: np.ndarray) -> np.ndarray:
    """For a [P, P] similarity (student rows, teacher columns): an index array [P, P] whose row p
    lists the teacher instance matched to p (maximum total similarity) first, the others after."""
    rows, cols = linear_sum_assignment(-similarity)
    p = similarity.shape[0]
    match = np.empty(p, dtype=np.int64)
    match[rows] = cols
    return np.stack([np.concatenate([[match[r]], [c for c in range(p) if c != match[r]]]) for r in range(p)])


MAX_BRUTE_FORCE_INSTANCES = 6  # up to 6! = 720 assignments are scored at once on the device


def match_order(cos: torch.Tensor) -> torch.Tensor:
    """Batched :func:`hungarian_order`: cos [..., P, P] -> index [..., P, P] (matched first).

    For P <= 6 every assignment is scored on the tensor's device (exact, no host round trip;
    the original runs scipy per matrix); larger P falls back to scipy.
    """
    p = cos.shape[-1]
    if p > MAX_BRUTE_FORCE_INSTANCES:
        flat = cos.detach().cpu().numpy().reshape(-1, p, p)
        return torch.from_numpy(np.stack([hungarian_order(c) for c in flat])).to(cos.device).view(cos.shape)
    perms = torch.tensor(list(itertools.permutations(range(p))), device=cos.device)  # [P!, P]
    scores = cos.detach()[..., torch.arange(p, device=cos.device), perms].sum(-1)  # [..., P!]
    match = perms[scores.argmax(-1)]  # [..., P]: teacher index per student row
    cols = torch.arange(p, device=cos.device)
    key = (cols != match.unsqueeze(-1)).long() * p + cols  # matched column sorts first
    return key.argsort(-1)


def instance_loss(student: torch.Tensor, teacher: torch.Tensor, valid_s: torch.Tensor, valid_t: torch.Tensor,
                  margin: float = 0.5, global_count: bool = False) -> torch.Tensor:
    """Hungarian instance consistency over all ordered frame pairs, i = j included.

    student/teacher: L2-normalised projections [B, T, S, P, D]; valid_*: [B, T, S, P].
    Per student instance: valid_s * (mean_neg ReLU(cos - margin) - valid_t(match) * cos(match)),
    summed and divided by the number of valid student instances. ``global_count`` (training under
    DDP): divided by the mean count per process over all processes instead of this process's, so
    that DDP's gradient average equals one process's loss on the global batch.
    """
    b, t, s, p, _ = student.shape
    total = student.new_zeros(())
    count = student.new_zeros(())
    for i in range(t):
        for j in range(t):
            cos = torch.einsum("bspd,bsqd->bspq", student[:, i], teacher[:, j])  # [B, S, P, P]
            order = match_order(cos)
            ranked = cos.gather(-1, order)  # [B, S, P, P]: matched first
            vt = valid_t[:, j].unsqueeze(-2).expand(b, s, p, p).gather(-1, order)[..., 0]
            neg = F.relu(ranked[..., 1:] - margin).mean(-1) if p > 1 else torch.zeros_like(vt)
            term = valid_s[:, i] * (neg - vt * ranked[..., 0])
            total = total + term.sum()
            count = count + valid_s[:, i].sum()
    if global_count and world_size() > 1:
        count = all_reduce_sum(count.detach()) / world_size()
    return total / (count + 1e-10)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, teacher_keys: torch.Tensor,
                     eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Bidirectional semantic consistency through an OT plan between frames (i != j).

    student_logits/teacher_logits [B, T, S, N]; teacher_keys [B, T, N, D] (original keys).
    Loss per pair = -sum_nm Plan[n, m] sum_s p_teacher_j(s, m) log p_student_i(s, n).
    """
    _, t, _, _ = student_logits.shape
    log_ps = torch.log(student_logits.softmax(-2) + 1e-8)
    pt = teacher_logits.softmax(-2)
    keys = F.normalize(teacher_keys, dim=-1)
    marg = key_marginals(teacher_keys)
    losses = []
    for i in range(t):
        for j in range(t):
            if i == j:
                continue
            with torch.no_grad():
                cost = 1 - keys[:, i] @ keys[:, j].transpose(-1, -2)  # [B, N, M]
                plan = sinkhorn(cost, marg[:, i], marg[:, j], eps, iters)
            cross = torch.einsum("bsm,bsn->bnm", pt[:, j], log_ps[:, i])  # [B, N, M]
            losses.append(-(plan * cross).sum((-1, -2)).mean())
    return torch.stack(losses).mean() if losses else student_logits.new_zeros(())


# ----------------------------------------------------------------------------- augmentation


GRAY_WEIGHTS = (0.299, 0.587, 0.114)
JITTER = 0.4  # brightness, contrast and saturation factors in U(1 - 0.4, 1 + 0.4)
HUE = 0.1  # hue shift in U(-0.1, 0.1) of the colour circle


def shift_hue(video: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of [B, ..., 3, H, W] RGB in [0, 1] by ``shift`` [B] (fraction of the circle)."""
    r, g, b = video.unbind(-3)
    high, low = video.max(-3).values, video.min(-3).values
    delta = high - low
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift.view(-1, *[1] * (hue.ndim - 1))) % 1.0
    saturation = torch.where(high > 0, delta / torch.where(high > 0, high, torch.ones_like(high)), torch.zeros_like(high))
    # HSV -> RGB: channel n takes v - v s max(0, min(k, 4 - k, 1)) with k = (n + 6 h) mod 6.
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6) % 6
        out.append(high - high * saturation * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(out, dim=-3)


def colour_params(batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random draws of :func:`colour_augment` for ``batch`` clips (one set per clip; the jitter's
    order of brightness, contrast, saturation, hue is one permutation for the whole batch).

    Inside a keyed training forward (models/noise.py, no ``generator``) each clip's set comes from
    its sample key and the order from the step key, so they do not depend on the process count."""
    generators = keyed_noise.sample_generators(batch, "smtc_colour") if generator is None else None
    if generators is not None:
        draws = [torch.rand(7, generator=g) for g in generators]  # gray, jitter, 3 factors, hue, blur
        per_clip = torch.stack(draws)
        order = keyed_noise.step_randperm(4, "smtc_jitter_order")
        return {
            "gray": per_clip[:, 0] < 0.2,
            "jitter": per_clip[:, 1] < 0.8,
            "factors": 1 + (per_clip[:, 2:5] * 2 - 1) * JITTER,
            "hue": (per_clip[:, 5] * 2 - 1) * HUE,
            "order": order if order is not None else torch.randperm(4),
            "blur": per_clip[:, 6] < 0.5,
        }
    return {
        "gray": torch.rand(batch, generator=generator) < 0.2,
        "jitter": torch.rand(batch, generator=generator) < 0.8,
        "factors": 1 + (torch.rand(batch, 3, generator=generator) * 2 - 1) * JITTER,
        "hue": (torch.rand(batch, generator=generator) * 2 - 1) * HUE,
        "order": torch.randperm(4, generator=generator),
        "blur": torch.rand(batch, generator=generator) < 0.5,
    }


def apply_colour(video: torch.Tensor, params: dict[str, torch.Tensor], blur_sigma: float) -> torch.Tensor:
    """Apply drawn :func:`colour_params` to [B, T, 3, H, W] in [0, 1], the same to every frame of a
    clip, in the official order: grayscale, then colour jitter, then Gaussian blur."""
    b = video.shape[0]
    dev = video.device

    def per_clip(x: torch.Tensor) -> torch.Tensor:
        return x.to(dev).view(b, 1, 1, 1, 1)

    gray_w = torch.tensor(GRAY_WEIGHTS, device=dev, dtype=video.dtype).view(1, 1, 3, 1, 1)

    def gray(x: torch.Tensor) -> torch.Tensor:
        return (x * gray_w).sum(2, keepdim=True)

    out = torch.where(per_clip(params["gray"]), gray(video).expand_as(video), video)
    factors = params["factors"].to(dev, video.dtype)

    def brightness(x: torch.Tensor) -> torch.Tensor:
        return x * factors[:, 0].view(b, 1, 1, 1, 1)

    def contrast(x: torch.Tensor) -> torch.Tensor:
        mean = gray(x).mean((1, 3, 4), keepdim=True)
        return (x - mean) * factors[:, 1].view(b, 1, 1, 1, 1) + mean

    def saturation(x: torch.Tensor) -> torch.Tensor:
        g = gray(x)
        return (x - g) * factors[:, 2].view(b, 1, 1, 1, 1) + g

    def hue(x: torch.Tensor) -> torch.Tensor:
        return shift_hue(x, params["hue"].to(dev, video.dtype))

    jittered = out
    for index in params["order"].tolist():
        jittered = (brightness, contrast, saturation, hue)[index](jittered).clamp(0, 1)
    out = torch.where(per_clip(params["jitter"]), jittered, out)
    size = min(25, (min(video.shape[-2:]) // 2) * 2 - 1)
    if size >= 3:
        x = torch.arange(size, device=dev, dtype=video.dtype) - size // 2
        k1 = torch.exp(-(x**2) / (2 * blur_sigma**2))
        k1 = k1 / k1.sum()
        flat = out.flatten(0, 2).unsqueeze(1)
        flat = F.conv2d(F.pad(flat, (size // 2, size // 2, 0, 0), mode="reflect"), k1.view(1, 1, 1, -1))
        flat = F.conv2d(F.pad(flat, (0, 0, size // 2, size // 2), mode="reflect"), k1.view(1, 1, -1, 1))
        out = torch.where(per_clip(params["blur"]), flat.view_as(out), out)
    return out


def colour_augment(video: torch.Tensor, blur_sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-clip colour augmentation of [B, T, 3, H, W] in [0, 1], same parameters for every frame, as
    the official pipeline: grayscale p 0.2, then colour jitter p 0.8 (brightness, contrast,
    saturation 0.4 and hue 0.1, in a random order), then Gaussian blur p 0.5 with a fixed sigma
    (drawn once per process, as the original)."""
    return apply_colour(video, colour_params(video.shape[0], generator), blur_sigma)


# ----------------------------------------------------------------------------- network


class SMTCNet(nn.Module):
    """One branch (student or teacher): encoder, correlation fusion, two-stage slot attention."""

    def __init__(self, encoder: nn.Module, cfg: SMTCConfig) -> None:
        super().__init__()
        self.encoder, self.cfg = encoder, cfg
        dim = encoder.embed_dim
        self.correlation_proj = nn.Linear(cfg.anchor_grid**2, dim)  # = Conv1d(A, D, 1)
        self.slot_attention = SlotAttention(dim, dim, cfg.num_slots, cfg.num_iterations, mlp_hidden_dim=dim,
                                            init_method="embedding", truncate="bi-level", update="residual",
                                            qkv_bias=cfg.qkv_bias)
        # The stage-1 query slots are the slot attention's own embeddings: they are the means ``mu``
        # of the stage-2 Gaussians too (N(0, 1) init as the original).
        nn.init.normal_(self.slot_attention.init.embedding)
        self.log_sigma = nn.Parameter(torch.empty(1, cfg.num_slots, 1, dim))
        nn.init.xavier_uniform_(self.log_sigma)
        self.projector = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, dim))

    def correlation(self, keys: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """keys [B, T, N, D] -> keys + projected correlation with the previous frame's anchors."""
        b, t, n, d = keys.shape
        a = self.cfg.anchor_grid
        prev = torch.roll(keys, shifts=1, dims=1)  # frame 0 pairs with the last frame
        prev = prev.reshape(b * t, *grid, d).permute(0, 3, 1, 2)
        anchors = F.interpolate(prev, size=(a, a), mode="bilinear", align_corners=False)
        anchors = anchors.flatten(2).view(b, t, d, a * a)
        corr = torch.einsum("btnd,btda->btna", keys, anchors)  # raw dot products [B, T, N, A]
        return keys + self.correlation_proj(corr)

    def forward(self, video: torch.Tensor, num_iterations: int | None = None) -> dict[str, torch.Tensor]:
        """video [B, T, 3, H, W] in [0, 1] -> semantic/instance slots and logits, tokens, keys."""
        b, t = video.shape[:2]
        cfg = self.cfg
        s, p = cfg.num_slots, cfg.num_instances
        frames = video.flatten(0, 1)
        grid = self.encoder.token_grid(tuple(frames.shape[-2:]))
        tokens, keys = self.encoder.forward_with_keys(frames)  # [BT, N, D]
        n, d = keys.shape[1:]
        keys = keys.view(b, t, n, d)
        inputs = self.correlation(keys, grid).flatten(0, 1)
        sa = self.slot_attention
        if num_iterations is not None:
            sa.num_iterations = num_iterations
        try:
            stage1 = sa(inputs)  # embedding init: the S means mu
            semantic_logits = stage1["attn_logits"]  # [BT, N, S], raw scaled dot products
            mu = sa.init.embedding.view(1, s, 1, d)
            noise = keyed_noise.randn(b, (t, s, p, d), "smtc_instances", video.device, mu.dtype)  # training: keyed
            noise = torch.randn(b * t, s, p, d, device=video.device, dtype=mu.dtype) if noise is None \
                else noise.view(b * t, s, p, d)
            init2 = mu + self.log_sigma.exp() * noise
            if not cfg.reparam_instances:
                # The official draw (torch.normal(mu, sigma)) passes no gradient to mu or sigma, only
                # zeros: weight decay still acts on them, as in its optimiser (docs/methods/smtc.md).
                init2 = init2.detach() + 0.0 * init2
            init2 = init2.view(b * t, s * p, d)
            hard = (semantic_logits > cfg.mask_threshold).repeat_interleave(p, dim=-1)  # [BT, N, S*P]
            stage2 = sa(inputs, slots_init=init2, group_size=p, input_mask=hard)
        finally:
            sa.num_iterations = cfg.num_iterations
        instance_slots = stage2["slots"].view(b, t, s, p, d)
        return {
            "semantic_logits": semantic_logits.transpose(1, 2).reshape(b, t, s, n),
            "instance_logits": stage2["attn_logits"].transpose(1, 2).reshape(b, t, s, p, n),
            "semantic_slots": stage1["slots"].view(b, t, s, d),
            "instance_slots": instance_slots,
            "projections": F.normalize(self.projector(instance_slots), dim=-1),
            "keys": keys,
            "tokens": tokens.view(b, t, n, d),
            "grid": torch.tensor(grid),
        }


def instance_masks(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval outputs (docs/methods/smtc.md): instance masks [B, T, S, P, N] = softmax_slots(semantic) x
    softmax_instances(instance), and cos(semantic slot, its instances) [B, T, S, P]."""
    sem = out["semantic_logits"].softmax(2)
    inst = out["instance_logits"].softmax(3)
    cos = F.cosine_similarity(out["semantic_slots"].unsqueeze(3), out["instance_slots"], dim=-1)
    return sem.unsqueeze(3) * inst, cos


class SMTC(nn.Module):
    """Student + EMA teacher. ``forward(batch)`` with ``video`` [B, T, 3, H, W] returns the losses."""

    def __init__(self, encoder: nn.Module, cfg: SMTCConfig, teacher_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.student = SMTCNet(encoder, cfg)
        if cfg.train_encoder_stem:
            # The official optimiser holds every encoder parameter: after --grad_iter the patch and
            # position embeddings and the CLS token train at the encoder's 1 % LR as well.
            for name, param in encoder.vit.named_parameters():
                if name.split(".")[0] in ("patch_embed", "pos_embed", "cls_token", "reg_token"):
                    param.requires_grad_(True)
        if cfg.encoder_drop_path:
            encoder.set_stochastic_depth(cfg.encoder_drop_path)  # the teacher copy runs in eval mode
        # Training reads only the last block's keys: the rest of that block never gets a gradient
        # (the original needs DDP's find_unused_parameters for this); freeze it explicitly.
        last = encoder.vit.blocks[-1]
        for name, param in last.named_parameters():
            if not (name.startswith("norm1.") or name.startswith("attn.qkv.") or name.startswith("attn.k_norm.")):
                param.requires_grad_(False)
        self.teacher = copy.deepcopy(self.student)
        if teacher_encoder is not None:
            self.teacher.encoder = teacher_encoder
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        # The original draws one blur sigma per process at construction (pitfall 9); a buffer keeps
        # it in the checkpoint, so a resumed run blurs as the uninterrupted one.
        self.register_buffer("blur_sigma", torch.tensor(float(np.random.uniform(0.1, 2.0))))

    def train(self, mode: bool = True) -> "SMTC":
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA update of the teacher from the student, skipping every "encoder" parameter."""
        m = self.cfg.ema_momentum
        teacher = dict(self.teacher.named_parameters())
        for name, param in self.student.named_parameters():
            if "encoder" in name:
                continue
            teacher[name].mul_(m).add_(param.detach(), alpha=1 - m)

    @keyed_noise.keyed_forward
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch["video"]`` [B, T, 3, H, W] in [0, 1]; an ``image`` batch [B, 3, H, W] is read as
        one-frame clips (so image tools such as predict.py get semantic masks)."""
        video = batch["video"] if "video" in batch else batch["image"][:, None]
        cfg = self.cfg
        if cfg.augment and self.training:
            video_s = colour_augment(video, float(self.blur_sigma))
            video_t = colour_augment(video, float(self.blur_sigma))
        else:
            video_s = video_t = video
        student = self.student(video_s)
        with torch.no_grad():
            teacher = self.teacher(video_t)
        valid_s = validity(student["semantic_logits"], student["semantic_slots"], student["instance_slots"], cfg)
        valid_t = validity(teacher["semantic_logits"], teacher["semantic_slots"], teacher["instance_slots"], cfg)
        losses = {"instance": instance_loss(student["projections"], teacher["projections"], valid_s, valid_t,
                                            cfg.negative_margin, global_count=self.training)}
        loss = losses["instance"]
        if cfg.entro_cons:
            losses["differ"] = diversity_loss(student["semantic_logits"])
            loss = loss + cfg.ent_scale * losses["differ"]
        if cfg.bi_cons:
            losses["consistency"] = consistency_loss(student["semantic_logits"], teacher["semantic_logits"],
                                                     teacher["keys"], cfg.sinkhorn_eps, cfg.sinkhorn_iters)
            loss = loss + cfg.cons_scale * losses["consistency"]
        losses = {k: v.detach() for k, v in losses.items()}
        losses["valid_fraction"] = valid_s.mean().detach()
        b, t = video.shape[:2]
        gh, gw = (int(x) for x in student["grid"])
        sem = student["semantic_logits"].softmax(2)[:, 0].reshape(b, cfg.num_slots, gh, gw)
        return {"loss": loss, "losses": losses, "masks": {"semantic": sem.detach()},
                "slots": student["semantic_slots"].detach()}


# ----------------------------------------------------------------------------- optimisation


def parameter_groups(model: SMTC, weight_decay: float = 0.1) -> list[dict]:
    """AdamW groups (docs/methods/smtc.md): encoder weights, encoder biases/1-D, other weights, other
    biases/1-D; weight decay only on the two weight groups."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(e, r): [] for e in (True, False) for r in (True, False)}
    for name, param in model.student.named_parameters():
        if not param.requires_grad:
            continue
        groups[(name.startswith("encoder."), not (param.ndim <= 1 or name.endswith(".bias")))].append(param)
    out = []
    for (enc, reg), params in groups.items():
        out.append({"params": params, "weight_decay": weight_decay if reg else 0.0, "is_encoder": enc})
    return out


def lr_at(step: int, total_steps: int, lr: float, is_encoder: bool, grad_iter: int) -> float:
    """Cosine from ``lr`` to ``0.1 lr`` over ``total_steps`` (no warm-up); the encoder's LR is
    0 before ``grad_iter`` and 1% afterwards. Steps past the end keep the final value (the
    original indexes past its schedule and crashes)."""
    progress = min(step, total_steps) / max(total_steps, 1)
    value = cosine(lr, 0.1 * lr, progress)
    if is_encoder:
        value *= 0.0 if step < grad_iter else 0.01
    return value
