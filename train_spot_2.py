#!/usr/bin/env python
"""SPOT stage 2: self-training of a fresh student with attention distillation from a stage-1 teacher.

Example (SPOT README): python train_spot_2.py --dataset coco --data_path /path/to/COCO2017 --epochs 50 \
    --num_slots 7 --train_permutations random --eval_permutations standard --teacher_train_permutations random \
    --teacher_eval_permutations random --teacher_checkpoint_path logs/spot_teacher_coco/TIMESTAMP/checkpoint.pt.tar \
    --log_path logs/spot_coco

Flags and recipe are train_spot.py's, with stage 2's defaults (--finetune_blocks_after 8, --truncate bi-level,
--init_method embedding; a frozen second encoder always gives the targets), plus the teacher and CE flags.
The checkpoint is a SPOT checkpoint of the student alone (eval_spot.py evaluates it); the teacher is
rebuilt from --teacher_checkpoint_path, also on --resume.
"""
from __future__ import annotations

import argparse

import train_spot
from ground.errors import UserError
from models.slot_attention import INIT_METHODS, TRUNCATIONS
from models.spot import PERMUTATION_MODES
from models.spot_self_training import teacher_fingerprint
from utils.checkpoint import resolve_checkpoint
from utils.cli import build_datasets, parse_train_args
from utils.errors import run_cli
from utils.released import checkpoint_settings, load_any_checkpoint
from utils.self_training import build_student, load_teacher


def build_parser() -> argparse.ArgumentParser:
    parser = train_spot.build_parser()
    parser.description = __doc__
    parser.set_defaults(finetune_blocks_after=8, truncate="bi-level", init_method="embedding", use_second_encoder=True)
    group = parser.add_argument_group("self-training (stage 2)")
    group.add_argument("--teacher_checkpoint_path", default=None, help="stage-1 checkpoint.pt.tar of train_spot.py (or its run folder)")
    group.add_argument("--teacher_train_permutations", default="random", choices=PERMUTATION_MODES,
                       help="the teacher's --train_permutations (must match its checkpoint)")
    group.add_argument("--teacher_eval_permutations", default="random", choices=PERMUTATION_MODES,
                       help="orderings the teacher decodes with (random: one per batch)")
    group.add_argument("--teacher_truncate", default="none", choices=TRUNCATIONS, help="the teacher's slot-attention truncation")
    group.add_argument("--teacher_init_method", default="shared_gaussian", choices=INIT_METHODS,
                       help="the teacher's --init_method (must match its checkpoint)")
    group.add_argument("--ce_weight", type=float, default=5e-3, help="weight of the attention-distillation cross-entropy")
    group.add_argument("--final_ce_weight", type=float, default=None,
                       help="end value of a cosine schedule of the CE weight (default: constant --ce_weight)")
    return parser


def teacher_from(args: argparse.Namespace):
    """Load and check the teacher named by the flags (before any run folder is made)."""
    if not args.use_second_encoder:
        raise UserError("stage 2 always takes its targets from a frozen second encoder: drop --use_second_encoder False")
    if not args.teacher_checkpoint_path:
        raise UserError("--teacher_checkpoint_path is required: the stage-1 checkpoint.pt.tar of train_spot.py")
    path = resolve_checkpoint(args.teacher_checkpoint_path)
    # Ours, or SPOT's released stage 1 (imported in memory).
    checkpoint = load_any_checkpoint(path, trust=args.trust_checkpoint, what="--teacher_checkpoint_path")
    # What a released file does not record is what the official stage 2 builds its teacher with.
    checkpoint = checkpoint_settings(checkpoint, {"num_slots": args.num_slots, "num_heads": args.num_heads,
                                                  "num_cross_heads": args.num_cross_heads,
                                                  "num_iterations": args.num_iterations})
    teacher, spec = load_teacher(args, checkpoint, str(path))
    record = {"checkpoint": str(path.resolve()), "step": checkpoint.get("step"),
              "fingerprint": teacher_fingerprint(checkpoint["model"])}
    return teacher, spec, record


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    early = parser.parse_args(argv)
    if early.cache_features:
        raise UserError("--cache_features does not work for stage 2: the student fine-tunes encoder blocks, so its "
                        "features change every step; drop the flag (stage 1 can use it)")
    fresh = not (early.resume or early.checkpoint_path)
    loaded = teacher_from(early) if fresh else None  # a bad teacher stops before the run folder exists
    args, run_dir, checkpoint = parse_train_args(parser, argv)
    datasets = build_datasets(args, run_dir)
    teacher, spec, record = loaded or teacher_from(args)
    recorded = (checkpoint or {}).get("teacher", {}).get("fingerprint")
    # A float64 sum: equal weights read in another key order may differ in the last bits.
    if checkpoint is not None and (recorded is None or abs(recorded - record["fingerprint"])
                                   > 1e-9 * max(abs(recorded), 1.0)):
        raise UserError(f"the teacher checkpoint {record['checkpoint']} is not the one this run started with; "
                        "restore it to resume")
    student = build_student(args, teacher)
    encoder = {**spec, "finetune_blocks_after": args.finetune_blocks_after}
    meta = {"method": "spot", "model_config": student.config.to_dict(), "encoder": encoder, "args": vars(args),
            "teacher": record}
    return train_spot.train(args, run_dir, checkpoint, student, meta, datasets)


if __name__ == "__main__":
    run_cli(main)
