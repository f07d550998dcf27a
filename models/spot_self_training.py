"""SPOT stage 2: self-training with attention distillation (docs/methods/spot.md#stage-2-train_spot_2py).

A frozen stage-1 *teacher* decodes every training batch under one random patch ordering; its
hard decoder masks are the targets of a cross-entropy on the *student's* last-iteration
slot-attention logits, after Hungarian matching of student slots to teacher slots. The student
is a fresh SPOT model whose encoder blocks after ``finetune_blocks_after`` train, with the
original frozen encoder giving the reconstruction targets (and the teacher's inputs).

The frozen encoder runs once per batch: its output is the student's target, the teacher's
input and target, and its first ``finetune_blocks_after`` blocks are also the student's frozen
prefix (the student encoder is a copy whose early blocks never change). The official code runs
the frozen ViT twice and the student's ViT in full.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ground.schedules import cosine
from models import noise
from models.encoders import FrozenViT
from models.spot import SPOT, SPOTConfig, check_config

# Cost of assigning an empty teacher slot: larger than any 1 - IoU, so empty teacher slots only
# take the student slots that no non-empty teacher slot wants (docs/methods/spot.md#stage-2-train_spot_2py).
EMPTY_TEACHER_COST = 1e3


def match_student_to_teacher(teacher_labels: torch.Tensor, student_labels: torch.Tensor, num_slots: int) -> torch.Tensor:
    """For each teacher slot ``k`` of each image, the student slot matched to it.

    teacher_labels, student_labels: [B, N] hard slot index per token. The cost of the pair
    (teacher k, student j) is 1 - IoU of their token sets; rows of empty teacher slots cost
    ``EMPTY_TEACHER_COST``. Returns a LongTensor [B, K] (a permutation of 0..K-1 per image).
    """
    teacher = F.one_hot(teacher_labels, num_slots).float()  # [B, N, K]
    student = F.one_hot(student_labels, num_slots).float()
    intersection = torch.einsum("bnt,bns->bts", teacher, student)  # [B, K_teacher, K_student]
    teacher_area, student_area = teacher.sum(1), student.sum(1)  # [B, K]
    union = teacher_area[:, :, None] + student_area[:, None, :] - intersection
    cost = 1 - intersection / union.clamp_min(1)  # union 0 only when both are empty
    cost = torch.where((teacher_area == 0)[:, :, None], torch.full_like(cost, EMPTY_TEACHER_COST), cost)
    matching = np.empty((cost.shape[0], num_slots), dtype=np.int64)
    for b, image_cost in enumerate(cost.cpu().numpy()):
        rows, cols = linear_sum_assignment(image_cost)
        matching[b, rows] = cols
    return torch.from_numpy(matching).to(teacher_labels.device)


def distillation_loss(
    student_logits: torch.Tensor, student_masks: torch.Tensor, teacher_masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of matched student slot-attention logits against the teacher's hard masks.

    student_logits: [B, N, K] last-iteration slot-attention logits; student_masks: [B, K, ...]
    slot-attention maps (their argmax is matched); teacher_masks: [B, K, ...] teacher decoder
    masks. Returns (mean CE over all B*N tokens, matching [B, K]).
    """
    b, n, k = student_logits.shape
    teacher_labels = teacher_masks.reshape(b, k, n).argmax(1)  # [B, N]
    student_labels = student_masks.reshape(b, k, n).argmax(1)
    matching = match_student_to_teacher(teacher_labels, student_labels, k)
    # Channel k of the matched logits is the student slot matched to teacher slot k.
    matched = torch.gather(student_logits, 2, matching[:, None, :].expand(b, n, k))
    ce = F.cross_entropy(matched.reshape(b * n, k).float(), teacher_labels.reshape(b * n))
    return ce, matching


def cosine_weight(start: float, end: float, step: int, total_steps: int) -> float:
    """Cosine from ``start`` (step 0) towards ``end`` over ``total_steps``, without warm-up."""
    i = min(max(step, 0), max(total_steps - 1, 0))
    return cosine(start, end, i, max(total_steps, 1))


class SelfTrainingSPOT(SPOT):
    """The stage-2 student; its state_dict is a plain SPOT state_dict (the teacher is not in it).

    ``forward`` in training mode adds ``ce_weight * ce`` to the MSE; in eval mode it is the plain
    student (what ``eval_spot.py`` rebuilds from the checkpoint). The CE weight follows a cosine
    from ``ce_weight`` to ``final_ce_weight`` over ``batch["total_steps"]``, at ``batch["step"]``
    (set by the Trainer; constant when the two weights are equal).

    Args:
        encoder: the student's encoder, a copy of ``teacher.encoder`` with trainable late blocks.
        config: the student's config (``use_second_encoder`` must be True).
        teacher: a loaded stage-1 model with a fully frozen encoder (becomes frozen, eval mode).
        share_frozen_forward: run the frozen encoder once per batch (False: as the official code,
            once for the student's targets and once more for the teacher; benchmarks only).
    """

    def __init__(
        self,
        encoder: FrozenViT,
        config: SPOTConfig,
        teacher: SPOT,
        ce_weight: float = 5e-3,
        final_ce_weight: float | None = None,
        share_frozen_forward: bool = True,
    ) -> None:
        if not config.use_second_encoder:
            raise ValueError("the stage-2 student always has a frozen second encoder for its targets")
        if teacher.target_encoder is not None or teacher.encoder.trainable:
            raise ValueError("the teacher must read the frozen encoder directly")
        if teacher.config.num_slots != config.num_slots:
            raise ValueError(f"teacher has {teacher.config.num_slots} slots, student {config.num_slots}")
        super().__init__(encoder, config, target_encoder=teacher.encoder)
        if teacher.grid != self.grid:
            raise ValueError(f"teacher token grid {teacher.grid} differs from the student's {self.grid}")
        self._check_shared_prefix()
        teacher.requires_grad_(False).eval()
        # Not a submodule: the teacher is rebuilt from its own checkpoint, stays out of this
        # model's state_dict, parameters (optimizer, clipping) and train()/eval() switches.
        object.__setattr__(self, "teacher", teacher)
        self.ce_weight = ce_weight
        self.final_ce_weight = ce_weight if final_ce_weight is None else final_ce_weight
        self.share_frozen_forward = share_frozen_forward

    def _check_shared_prefix(self) -> None:
        """The student encoder's frozen stem and early blocks must equal the frozen encoder's."""
        k = self.encoder.first_trainable_block()
        frozen = dict(self.target_encoder.vit.named_parameters())
        for name, param in self.encoder.vit.named_parameters():
            if name.startswith("blocks.") and int(name.split(".")[1]) >= k:
                continue
            if not torch.equal(param, frozen[name]):
                raise ValueError(f"student encoder parameter {name} differs from the frozen encoder's")

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001 - nn.Module internal signature
        """``.to()``/``.cuda()``/``.float()`` also move the (unregistered) teacher."""
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def current_ce_weight(self, batch: dict[str, Any]) -> float:
        if self.final_ce_weight == self.ce_weight:
            return self.ce_weight
        return cosine_weight(self.ce_weight, self.final_ce_weight, int(batch.get("step", 0)),
                             int(batch.get("total_steps", 1)))

    @noise.keyed_forward
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = batch["image"]
        k = self.encoder.first_trainable_block()
        with torch.no_grad():
            hidden = self.target_encoder.frozen_prefix(images, k)  # shared by both encoders
            targets = self.target_encoder.forward_from(hidden, k)
        if self.share_frozen_forward:
            features = self.encoder.forward_from(hidden, k)
        else:
            features = self.encoder(images)
        out = self.forward_features(features, targets)
        if not self.training:
            return out
        with torch.no_grad():
            # The teacher reads the frozen encoder: its features are the student's targets.
            teacher_features = targets if self.share_frozen_forward else self.teacher.encode(images)
            teacher_out = self.teacher.forward_features(teacher_features, teacher_features)
        ce, _ = distillation_loss(out["attn_logits"], out["masks"]["slots"], teacher_out["masks"]["decoder"])
        weight = self.current_ce_weight(batch)
        out["loss"] = out["loss"] + weight * ce
        out["losses"].update(ce=ce.detach(), ce_weight=torch.tensor(weight))
        out["teacher_masks"] = teacher_out["masks"]["decoder"]
        return out


def teacher_fingerprint(state: dict[str, torch.Tensor]) -> float:
    """A cheap checksum of a teacher's stored weights (sum of |w| in float64, in key order, so that
    the same weights give the same value whichever file layout they were read from)."""
    return float(sum(state[k].double().abs().sum() for k in sorted(state) if state[k].is_floating_point()))


def student_from_teacher(teacher: SPOT, config: SPOTConfig, finetune_blocks_after: int, ce_weight: float,
                         final_ce_weight: float | None, share_frozen_forward: bool = True) -> SelfTrainingSPOT:
    """A fresh student on a copy of the teacher's frozen encoder, blocks from ``finetune_blocks_after`` on trainable.

    ``config`` is the student's SPOT configuration (``use_second_encoder`` is set here).
    """
    encoder = copy.deepcopy(teacher.encoder)
    encoder.set_finetune_blocks_after(finetune_blocks_after)
    config = dataclasses.replace(config, use_second_encoder=True)
    check_config(config)
    return SelfTrainingSPOT(encoder, config, teacher, ce_weight, final_ce_weight, share_frozen_forward)
