"""SlotCon (NeurIPS 2022) and SlotFA: slot-contrastive pretraining of a ResNet (docs/methods/slotfa.md).

A student (``encoder_q``, ``projector_q``, ``grouping_q``, ``predictor_slot``) and a momentum
teacher (``encoder_k``, ``projector_k``, ``grouping_k``) see two overlapping crops. Each
branch scores every pixel of its projected map against K learnable prototypes ("dots", cosine
similarities) and pools one slot per prototype. Losses:

- group loss: DINO-style self-distillation per aligned pixel between the student's dots of one
  view and the centred teacher dots of the other view (alignment crops the crops' intersection
  out of both maps with ``roi_align`` and undoes flips);
- slot contrastive loss (SlotCon only): student slots present in both views, through the
  predictor, against every teacher slot present in the (all-gathered) global batch;
- SlotFA's augmentation loss: the student's projected map is perturbed slot-wise
  (x' = alpha_k * x + beta_k for pixels hard-assigned to prototype k, alpha ~ N(1, s1),
  beta ~ N(0, s2)), re-grouped by the *locked* student prototypes and distilled against the same
  teacher targets. ``fa_grad="none"`` (default) reproduces the released code, where the loss
  carries no gradient and is only logged; ``fa_grad="backbone"`` (the paper's figure) lets it
  train the projector and encoder (docs/methods/slotfa.md). As released, SlotFA drops the slot contrastive loss.

Names of submodules equal upstream's (without DDP's ``module.``), so checkpoints map 1:1.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from ground.collectives import all_gather_cat, rank, world_size
from ground.constants import IMAGENET_MEAN, IMAGENET_STD
from ground.schedules import cosine
from models import noise as keyed_noise
from models.resnet import ResNet, load_torchvision_weights

METHOD_NAMES: tuple[str, ...] = ("slotcon", "slotfa")
FA_GRAD_MODES: tuple[str, ...] = ("backbone", "none")
CONTRAST_TEMP = 0.2  # tau of the slot contrastive loss (fixed upstream)
ASSIGN_EPS = 1e-6  # added to the soft assignment before pooling (upstream)


@dataclass
class SlotConConfig:
    """Everything needed to rebuild the model (stored in checkpoints as ``model_config``)."""

    method: str = "slotcon"
    arch: str = "resnet50"
    dim_hidden: int = 4096
    dim_out: int = 256
    num_prototypes: int = 256
    teacher_momentum: float = 0.99
    teacher_temp: float = 0.07
    student_temp: float = 0.1
    center_momentum: float = 0.9
    group_loss_weight: float = 0.5
    total_steps: int = 1  # K_total of the teacher momentum schedule (training iterations per rank)
    fa_sigma1: float = 1.0  # std of alpha around 1
    fa_sigma2: float = 1.0  # std of beta around 0
    fa_grad: str = "none"  # the released code; "backbone": the paper's figure
    fa_weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- building blocks ------------------------------------------------------------------------------
class Projector(nn.Module):
    """Pixel-wise MLP as 1x1 convs: conv-BN-GELU-conv-BN-GELU-conv (keys mlp.{0,1,3,4,6})."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(dim_in, dim_hidden, 1), nn.BatchNorm2d(dim_hidden), nn.GELU(),
            nn.Conv2d(dim_hidden, dim_hidden, 1), nn.BatchNorm2d(dim_hidden), nn.GELU(),
            nn.Conv2d(dim_hidden, dim_out, 1),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class Predictor(nn.Module):
    """Slot predictor of the student: Linear-BN-GELU-Linear-BN-GELU-Linear."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim_in, dim_hidden), nn.BatchNorm1d(dim_hidden), nn.GELU(),
            nn.Linear(dim_hidden, dim_hidden), nn.BatchNorm1d(dim_hidden), nn.GELU(),
            nn.Linear(dim_hidden, dim_out),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class SemanticGrouping(nn.Module):
    """K prototypes; returns (slots [B,K,D], dots [B,K,h,w] = cosine(prototype, pixel))."""

    def __init__(self, num_prototypes: int, dim: int, temp: float) -> None:
        super().__init__()
        self.slot_embed = nn.Embedding(num_prototypes, dim)
        self.temp = temp

    def forward(self, x: torch.Tensor, lock_prototypes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        protos = self.slot_embed.weight
        if lock_prototypes:  # SlotFA's augmented branch must not move the prototypes
            protos = protos.detach()
        dots = torch.einsum("kd,bdhw->bkhw", F.normalize(protos, dim=1), F.normalize(x, dim=1))
        attn = (dots / self.temp).softmax(dim=1) + ASSIGN_EPS
        slots = torch.einsum("bdhw,bkhw->bkd", x, attn / attn.sum(dim=(2, 3), keepdim=True))
        return slots, dots


# --- loss pieces (pure functions, tested one by one) ----------------------------------------------
def align_maps(maps: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Crop each map to its view's intersection box and undo the view's flip (SlotCon's invaug).

    ``boxes`` [B,4] are (x1, y1, x2, y2) in [0, 1] of the (possibly flipped) view; the output has
    the map's own size and is in unflipped orientation, so both views' outputs cover the same
    image region pixel by pixel.
    """
    b, _, h, w = maps.shape
    scale = boxes.new_tensor([w, h, w, h])
    rois = torch.cat([torch.arange(b, device=maps.device, dtype=boxes.dtype)[:, None], boxes * scale], dim=1)
    aligned = roi_align(maps.float(), rois.float(), output_size=(h, w), spatial_scale=1.0, aligned=True)
    flipped = aligned.flip(-1)
    return torch.where(flips.view(b, 1, 1, 1).bool(), flipped, aligned)


def self_distillation(student_dots: torch.Tensor, teacher_dots: torch.Tensor, center: torch.Tensor,
                      student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Cross-entropy between centred, sharpened teacher and student distributions over K, per pixel."""
    k = center.shape[-1]
    target = F.softmax((teacher_dots.float() - center.view(1, k, 1, 1)) / teacher_temp, dim=1)
    log_pred = F.log_softmax(student_dots.float() / student_temp, dim=1)
    return -(target * log_pred).sum(dim=1).mean()


@torch.no_grad()
def updated_center(center: torch.Tensor, teacher_dots: list[torch.Tensor], momentum: float) -> torch.Tensor:
    """EMA of the (all-reduced) mean teacher score per prototype over both unaligned views."""
    batch_center = torch.cat(teacher_dots).float().mean(dim=(0, 2, 3))[None]
    if world_size() > 1:
        dist.all_reduce(batch_center)
        batch_center = batch_center / world_size()
    return center * momentum + batch_center * (1 - momentum)


def slot_presence(dots: torch.Tensor) -> torch.Tensor:
    """[B,K] bool: prototype k is the argmax of at least one pixel of the (unaligned) map."""
    b, k = dots.shape[:2]
    winners = dots.flatten(2).argmax(dim=1)  # [B, hw]
    present = torch.zeros(b, k, dtype=torch.bool, device=dots.device)
    present.scatter_(1, winners, True)
    return present


def contrastive_targets(query_mask: torch.Tensor, key_mask_global: torch.Tensor, rank_index: int) -> torch.Tensor:
    """Index of each query's positive among the kept keys of the gathered batch.

    ``query_mask`` [B,K] (this rank), ``key_mask_global`` [W*B*K] (gathered, in rank order).
    Keys are kept where the gathered mask is set; a query (b, k) of rank r is positive with the
    gathered key r*B*K + b*K + k, whose position among the kept keys is the cumulative count - 1.
    """
    position = torch.cumsum(key_mask_global.long(), dim=0) - 1
    offset = rank_index * query_mask.numel()
    flat = torch.nonzero(query_mask.flatten(), as_tuple=False).squeeze(1) + offset
    return position[flat]


def slot_contrastive_loss(query_slots: torch.Tensor, key_slots: torch.Tensor, query_dots: torch.Tensor,
                          key_dots: torch.Tensor, predictor: nn.Module, tau: float = CONTRAST_TEMP) -> torch.Tensor:
    """SlotCon's filtered slot InfoNCE (student slots of one view vs. teacher slots of the other)."""
    b, k, d = query_slots.shape
    key_mask = slot_presence(key_dots)
    query_mask = slot_presence(query_dots) & key_mask
    keys = F.normalize(key_slots.float(), dim=-1).reshape(b * k, d)
    keys_global = all_gather_cat(keys)
    key_mask_global = all_gather_cat(key_mask.flatten().to(torch.uint8)).bool()
    queries = query_slots[query_mask]
    if queries.shape[0] < 2:  # BatchNorm1d needs two samples; keep every parameter in the graph for DDP
        return sum(p.sum() for p in predictor.parameters()) * 0.0 + query_slots.sum() * 0.0
    queries = F.normalize(predictor(queries).float(), dim=-1)
    labels = contrastive_targets(query_mask, key_mask_global, rank())
    logits = queries @ keys_global[key_mask_global].t() / tau
    return F.cross_entropy(logits, labels) * (2 * tau)


def draw_fa_noise(num_prototypes: int, dim: int, sigma1: float, sigma2: float,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-prototype, per-channel alpha ~ N(1, sigma1), beta ~ N(0, sigma2); the same on every rank.

    In a keyed training forward (models/noise.py) they come from the step key, identical on every
    rank by construction; otherwise rank 0 draws them and broadcasts."""
    noise = keyed_noise.step_randn((2, num_prototypes, dim), "slotfa_alpha_beta", device)
    if noise is None:
        noise = torch.randn(2, num_prototypes, dim, device=device)
        if world_size() > 1:
            dist.broadcast(noise, src=0)  # one broadcast instead of upstream's 512
    return 1.0 + sigma1 * noise[0], sigma2 * noise[1]


def slot_feature_augment(x: torch.Tensor, assignment: torch.Tensor, alpha: torch.Tensor,
                         beta: torch.Tensor) -> torch.Tensor:
    """SlotFA: x'[b,:,i,j] = alpha[a] * x[b,:,i,j] + beta[a] with a = assignment[b,i,j] (vectorised)."""
    a = alpha[assignment].permute(0, 3, 1, 2).to(x.dtype)
    c = beta[assignment].permute(0, 3, 1, 2).to(x.dtype)
    return a * x + c


def momentum_at(step: int, total_steps: int, base: float) -> float:
    """Teacher momentum: cosine from ``base`` at step 0 to 1 at ``total_steps``."""
    return cosine(base, 1.0, step, max(total_steps, 1))


# --- the model -----------------------------------------------------------------------------------------
class SlotCon(nn.Module):
    """SlotCon / SlotFA student-teacher pair. ``forward`` trains on two views or predicts on ``image``."""

    def __init__(self, config: SlotConConfig, pretrained_weights: str | None = None,
                 trust_weights: bool = False) -> None:
        """``pretrained_weights``: a torchvision ResNet file to start from (``trust_weights``: the
        user's ``--trust_checkpoint``, for a file that needs full unpickling)."""
        super().__init__()
        if config.method not in METHOD_NAMES:
            raise ValueError(f"method must be one of {METHOD_NAMES}")
        if config.fa_grad not in FA_GRAD_MODES:
            raise ValueError(f"fa_grad must be one of {FA_GRAD_MODES}")
        self.config = config
        c = config
        self.encoder_q = ResNet(c.arch)
        if pretrained_weights:
            load_torchvision_weights(self.encoder_q, pretrained_weights, trust_weights)
        self.encoder_k = ResNet(c.arch)
        dim_in = self.encoder_q.out_channels
        self.projector_q = Projector(dim_in, c.dim_hidden, c.dim_out)
        self.projector_k = Projector(dim_in, c.dim_hidden, c.dim_out)
        self.grouping_q = SemanticGrouping(c.num_prototypes, c.dim_out, c.teacher_temp)
        self.grouping_k = SemanticGrouping(c.num_prototypes, c.dim_out, c.teacher_temp)
        # SlotFA (as released) has no slot contrast: no predictor, so DDP needs no unused-parameter search.
        self.predictor_slot = Predictor(c.dim_out, c.dim_hidden, c.dim_out) if c.method == "slotcon" else None
        for student, teacher in self._pairs():
            teacher.load_state_dict(student.state_dict())
            for p in teacher.parameters():
                p.requires_grad = False
        self.register_buffer("center", torch.zeros(1, c.num_prototypes))
        self.register_buffer("momentum_step", torch.zeros((), dtype=torch.long))  # k of the schedule

    def _pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder_q, self.encoder_k), (self.projector_q, self.projector_k),
                (self.grouping_q, self.grouping_k)]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher = m * teacher + (1 - m) * student, parameters only (BN statistics are the teacher's own)."""
        for student, teacher in self._pairs():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)

    def _student(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.projector_q(self.encoder_q(x))
        slots, dots = self.grouping_q(feats)
        return feats, slots, dots

    @torch.no_grad()
    def _teacher(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grouping_k(self.projector_k(self.encoder_k(x)))

    @keyed_noise.keyed_forward
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "view1" not in batch:
            return self.predict(batch["image"])
        c = self.config
        if self.training:  # the schedule advances once per training forward, before the teacher pass
            momentum = momentum_at(int(self.momentum_step), c.total_steps, c.teacher_momentum)
            self.update_teacher(momentum)
            self.momentum_step += 1
        else:
            momentum = float("nan")
        views, boxes, flips = (batch["view1"], batch["view2"]), (batch["box1"], batch["box2"]), (batch["flip1"], batch["flip2"])
        feats, s_slots, s_dots = zip(*(self._student(v) for v in views))
        t_slots, t_dots = zip(*(self._teacher(v) for v in views))
        s_al = [align_maps(d, b, f) for d, b, f in zip(s_dots, boxes, flips)]
        t_al = [align_maps(d, b, f) for d, b, f in zip(t_dots, boxes, flips)]
        distill = lambda s, t: self_distillation(s, t, self.center, c.student_temp, c.teacher_temp)  # noqa: E731
        group = distill(s_al[0], t_al[1]) + distill(s_al[1], t_al[0])
        losses: dict[str, torch.Tensor] = {"group": group.detach()}
        if c.method == "slotcon":
            contrast = (slot_contrastive_loss(s_slots[0], t_slots[1], s_dots[0], t_dots[1], self.predictor_slot)
                        + slot_contrastive_loss(s_slots[1], t_slots[0], s_dots[1], t_dots[0], self.predictor_slot))
            loss = c.group_loss_weight * group + (1 - c.group_loss_weight) * contrast
            losses["contrast"] = contrast.detach()
        else:
            loss = c.group_loss_weight * group
            aug = self._augmentation_loss(feats, s_dots, boxes, flips, t_al)
            loss = loss + c.fa_weight * aug
            losses["group_aug"] = aug.detach()
        if self.training:
            self.center.copy_(updated_center(self.center, list(t_dots), c.center_momentum))
        losses["teacher_momentum"] = torch.tensor(momentum)
        probs = F.softmax(t_dots[0].float() / c.teacher_temp, dim=1)
        return {"loss": loss, "losses": losses, "masks": {"prototypes": probs}}

    def _augmentation_loss(self, feats, s_dots, boxes, flips, t_al) -> torch.Tensor:
        """SlotFA's L_group-aug: distil the teacher targets from slot-wise perturbed student features."""
        c = self.config
        with torch.set_grad_enabled(torch.is_grad_enabled() and c.fa_grad == "backbone"):
            aligned = []
            for x, dots, box, flip in zip(feats, s_dots, boxes, flips):
                alpha, beta = draw_fa_noise(c.num_prototypes, c.dim_out, c.fa_sigma1, c.fa_sigma2, x.device)
                x_aug = slot_feature_augment(x, dots.argmax(dim=1), alpha, beta)
                _, aug_dots = self.grouping_q(x_aug, lock_prototypes=True)
                aligned.append(align_maps(aug_dots, box, flip))
            return (self_distillation(aligned[0], t_al[1], self.center, c.student_temp, c.teacher_temp)
                    + self_distillation(aligned[1], t_al[0], self.center, c.student_temp, c.teacher_temp))

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, Any]:
        """Teacher inference on [0, 1] images (the project's contract; normalised here like the training views):
        prototype assignment masks, dots, normalised pixel features and the average-pooled C5 features."""
        mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        trunk = self.encoder_k((image - mean) / std)
        feats = self.projector_k(trunk)
        _, dots = self.grouping_k(feats)
        probs = F.softmax(dots.float() / self.config.teacher_temp, dim=1)
        return {"masks": {"prototypes": probs}, "dots": dots.float(), "features": F.normalize(feats.float(), dim=1),
                "pooled": trunk.float().mean(dim=(2, 3))}
