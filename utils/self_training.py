"""SPOT stage 2 set-up from the command line: the teacher from its checkpoint, the student from the flags.

The model (:class:`models.spot_self_training.SelfTrainingSPOT`) takes explicit parameters; this
module checks a run's flags against the teacher checkpoint (docs/methods/spot.md#stage-2-train_spot_2py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ground.errors import UserError
from ground.state_dict import load_model_state
from models import build_encoder_from_spec
from models.encoders import SMALL_ENCODERS, resolve_encoder_name
from models.spot import SPOT, SPOTConfig, check_config
from models.spot_self_training import SelfTrainingSPOT, student_from_teacher
from utils.logging import get_logger


def _canonical_encoder(name: str) -> str:
    """Aliases of one model compare equal; the small test configs share a timm arch, so keep their names."""
    return name if name in SMALL_ENCODERS else resolve_encoder_name(name)


def load_teacher(args: Any, checkpoint: dict[str, Any], source: str) -> tuple[SPOT, dict[str, Any]]:
    """Rebuild the frozen stage-1 teacher of a stage-2 run and check the run's flags against it.

    ``args`` needs the ``teacher_*`` flags, ``num_slots``, ``image_size`` and the encoder flags.
    Returns (teacher in eval mode, its encoder record). Any mismatch is a ``UserError`` naming
    the flag.
    """
    if checkpoint["method"] != "spot":
        raise UserError(f"--teacher_checkpoint_path {source} is a {checkpoint['method']} checkpoint; "
                        "the teacher must be a SPOT stage-1 checkpoint written by train_spot.py")
    stored = checkpoint["model_config"]
    spec = dict(checkpoint["encoder"])

    def refuse(flag: str, value: Any, teacher_value: Any) -> None:
        raise UserError(f"{flag} {value} does not match the teacher checkpoint ({teacher_value}); "
                        f"pass {flag} {teacher_value} or another teacher")

    for flag, value, teacher_value in [
        ("--teacher_train_permutations", args.teacher_train_permutations, stored["train_permutations"]),
        ("--teacher_init_method", args.teacher_init_method, stored["init_method"]),
        ("--num_slots", args.num_slots, stored["num_slots"]),
        ("--image_size", args.image_size, stored["image_size"]),
        ("--encoder_final_norm", args.encoder_final_norm, spec.get("final_norm", False)),
        ("--no_pretrained", args.no_pretrained, not spec["pretrained"]),
    ]:
        if value != teacher_value:
            refuse(flag, value, teacher_value)
    if _canonical_encoder(args.which_encoder) != _canonical_encoder(spec["name"]):
        refuse("--which_encoder", args.which_encoder, spec["name"])
    if stored.get("use_second_encoder"):
        raise UserError(f"the teacher {source} has a second encoder (a stage-2 or fine-tuned model); "
                        "pass a stage-1 checkpoint of train_spot.py")
    if stored["train_permutations"] == "standard" and args.teacher_eval_permutations != "standard":
        raise UserError(f"--teacher_eval_permutations {args.teacher_eval_permutations} needs a teacher trained with "
                        "several orderings; this one has one (standard): pass --teacher_eval_permutations standard")
    if args.encoder_weights:
        spec["weights_path"] = str(Path(args.encoder_weights).resolve())
    # Checks the weights against the teacher's fingerprint; args.trust_checkpoint: the user's opt-in.
    encoder = build_encoder_from_spec(spec, bool(getattr(args, "trust_checkpoint", False)))
    if encoder.trainable:
        raise UserError(f"the teacher {source} fine-tuned encoder blocks (finetune_blocks_after "
                        f"{spec.get('finetune_blocks_after')}); stage 2 needs a teacher with a frozen encoder")
    config = dataclasses.replace(SPOTConfig(**stored), truncate=args.teacher_truncate,
                                 eval_permutations=args.teacher_eval_permutations)
    check_config(config)
    teacher = SPOT(encoder, config)
    load_model_state(teacher, checkpoint["model"], source=f"teacher checkpoint {source}")
    return teacher.requires_grad_(False).eval(), spec


def build_student(args: Any, teacher: SPOT, share_frozen_forward: bool = True) -> SelfTrainingSPOT:
    """A fresh student on a copy of the teacher's frozen encoder, late blocks made trainable."""
    if args.finetune_blocks_after < 0:
        raise UserError(f"--finetune_blocks_after must be >= 0, got {args.finetune_blocks_after}")
    depth = teacher.encoder.depth
    if args.finetune_blocks_after >= depth:
        # Allowed (the student then trains like stage 1 plus the CE), but worth a clear note.
        get_logger().warning(f"--finetune_blocks_after {args.finetune_blocks_after}: no block of the "
                             f"{depth}-block encoder is fine-tuned")
    return student_from_teacher(teacher, SPOTConfig.from_args(args), args.finetune_blocks_after, args.ce_weight,
                                args.final_ce_weight, share_frozen_forward)
