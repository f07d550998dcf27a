#!/usr/bin/env python
"""AdaSlot stage 1 (fixed K, DINOSAUR with AdaSlot's recipe) and stage 2 (adaptive K); docs/methods/adaslot.md.

Stage 1: python train_adaslot.py --model_save_path logs/adaslot_s1 --exp_id S1 --dataset shapes \\
    --encoder dino-vitb-16 --num_iters 200000 --batch_size 64 --resize_to 224 224
Stage 2: python train_adaslot.py --model_save_path logs/adaslot_s2 --exp_id S2 --dataset shapes \\
    --encoder dino-vitb-16 --num_slots 33 --use_adaptive_slot_attention --use_sparsity_loss \\
    --num_iters 500000 --batch_size 64 --resize_to 224 224 --warmstart_checkpoint logs/adaslot_s1/RUN
DINOSAUR: the stage-1 command with --use_dinosaur_lr_schedule (and --num_iters 500000).
Stage 2 inherits the architecture (and encoder) of its stage-1 checkpoint; K_max may differ from K.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path


from ground.errors import UserError
from ground.schedules import WarmupExponentialDecay
from models import build_encoder_from_spec, encoder_fingerprint
from models.adaslot import ARCHITECTURE_FIELDS, AdaSlot, AdaSlotConfig, add_model_args, check_config, \
    check_warm_start_source, warm_start
from models.encoders import resolve_encoder_name
from utils.checkpoint import load_checkpoint
from utils.cli import (ResizeTo, add_data_args, add_encoder_args, add_flag_aliases, add_train_args, build_datasets,
                       encoder_spec, parse_train_args, train_config)
from utils.errors import run_cli
from utils.feature_cache import add_cache_args, check_frozen_encoder
from utils.logging import check_wandb, get_logger, start_wandb
from utils.run import explicit_flags, select_device
from utils.train import Trainer, make_adam

log = get_logger()
# The unofficial AdaSlot port's flag names -> this project's flags.
SEED_ALIASES = {"--model_save_path": "log_path", "--exp_id": "run_name", "--root": "data_path",
                "--train_workers": "num_workers"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_encoder_args(parser)
    add_model_args(parser)
    add_train_args(parser)
    add_cache_args(parser)
    group = parser.add_argument_group("AdaSlot training")
    group.add_argument("--num_iters", type=int, default=None, help="training steps (default: --epochs whole epochs)")
    group.add_argument("--resize_to", nargs="+", type=int, action=ResizeTo, dest="image_size",
                       default=argparse.SUPPRESS, help="H W: square input size (same as --image_size)")
    group.add_argument("--val_workers", type=int, default=None, help="evaluation DataLoader workers (default: --num_workers)")
    group.add_argument("--lr_half_life", type=int, default=100_000, help="the learning rate halves every this many steps")
    group.add_argument("--use_dinosaur_lr_schedule", action="store_true",
                       help="decay only after the warm-up (DINOSAUR); default: AdaSlot's decay from step 0")
    group.add_argument("--warmstart_checkpoint", default=None, help="stage 2: stage-1 checkpoint (file or run folder)")
    group.add_argument("--log_wandb", action="store_true", help="also log to Weights & Biases (needs the wandb package)")
    group.add_argument("--wandb_project", default="adaslot")
    group.add_argument("--comment", default=None, help="free text recorded with the run (W&B notes)")
    add_flag_aliases(parser, SEED_ALIASES)
    for action in parser._actions:  # noqa: SLF001 - AdaSlot's defaults for shared flags
        if action.dest == "clip":
            action.default, action.help = 1.0, "gradient clip on the L2 norm (AdaSlot/DINOSAUR: 1.0; 0 = none)"
        elif action.dest == "lr_warmup_steps":
            action.help = "linear warm-up steps"
    return parser


def inherit_from_stage1(parser: argparse.ArgumentParser, argv: list[str] | None, first: argparse.Namespace) -> dict:
    """Load and check the warm-start checkpoint; stage 2 takes its architecture and encoder as defaults."""
    source = first.warmstart_checkpoint
    warm = load_checkpoint(source, trust=first.trust_checkpoint, methods=("adaslot",), what="--warmstart_checkpoint")
    check_warm_start_source(warm, source, first.use_adaptive_slot_attention)
    typed, stored, enc = explicit_flags(parser, argv), warm["model_config"], warm["encoder"]
    for name in ARCHITECTURE_FIELDS:
        if name in typed and getattr(first, name) != stored[name]:
            raise UserError(f"--{name} {getattr(first, name)} differs from the stage-1 checkpoint ({stored[name]}); "
                            "drop the flag to inherit it")
    if "which_encoder" in typed and resolve_encoder_name(first.which_encoder) != resolve_encoder_name(enc["name"]):
        raise UserError(f"--encoder {first.which_encoder} differs from the stage-1 checkpoint's ({enc['name']})")
    inherited = {**{name: stored[name] for name in ARCHITECTURE_FIELDS}, "which_encoder": enc["name"],
                 "no_pretrained": not enc["pretrained"],
                 # the loaded weights were initialised by stage 1's scheme: record it in stage 2 too
                 "init_scheme": stored["init_scheme"]}
    for action in parser._actions:  # noqa: SLF001 - not set_defaults: typed-flag detection must still work
        action.default = inherited.get(action.dest, action.default)
    return warm


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    first = parser.parse_args(argv)
    fresh = not (first.resume or first.checkpoint_path)
    if first.log_wandb:
        check_wandb()
    warm = inherit_from_stage1(parser, argv, first) if first.warmstart_checkpoint and fresh else None
    if fresh:  # flag errors before the run folder exists
        check_config(AdaSlotConfig.from_args(first))
    args, run_dir, checkpoint = parse_train_args(parser, argv, extra_runtime_flags=("val_workers", "cache_features"))
    config = AdaSlotConfig.from_args(args)
    check_config(config)
    device = select_device(args.device)
    # On resume the stored record rebuilds the same encoder; stage 2 reuses stage 1's.
    if checkpoint is not None:
        enc = dict(checkpoint["encoder"])
    elif warm is not None:
        enc = dict(warm["encoder"])
        if args.encoder_weights:
            enc["weights_path"] = str(Path(args.encoder_weights).resolve())
    else:
        enc = encoder_spec(args)
    encoder = build_encoder_from_spec(enc, args.trust_checkpoint)
    if encoder.is_pretrained and "fingerprint" not in enc:
        enc["fingerprint"] = encoder_fingerprint(encoder)
    model = AdaSlot(encoder, config).to(device)
    if warm is not None:
        new_keys = warm_start(model, warm, args.warmstart_checkpoint)
        log.info(f"warm start from {args.warmstart_checkpoint}: K {warm['model_config']['num_slots']} -> "
                 f"{config.num_slots}, new selector keys {new_keys}")
    elif config.adaptive and checkpoint is None:
        log.warning("stage 2 without --warmstart_checkpoint: the whole model is trained from scratch")
    train_set, val_set = build_datasets(args, run_dir)

    optimizer = make_adam([p for p in model.parameters() if p.requires_grad], lr=args.lr_main)
    steps_per_epoch = max(len(train_set) // args.batch_size, 1)  # the Trainer reports a too-small set
    total_steps = args.num_iters or args.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    schedule = WarmupExponentialDecay(args.lr_main, args.lr_warmup_steps, args.lr_half_life,
                                      decay_during_warmup=not args.use_dinosaur_lr_schedule)
    cfg = train_config(args, epochs=epochs, total_steps=total_steps, eval_num_workers=args.val_workers, clip_norm_type=2.0)
    meta = {"method": "adaslot", "model_config": config.to_dict(), "encoder": enc, "args": vars(args)}
    trainer = Trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    check_frozen_encoder(train_set, model.encoder)  # after load: a random encoder's weights come from the checkpoint
    wandb_run = start_wandb(run_dir, vars(args), args.wandb_project, args.run_name, args.comment) if args.log_wandb else None
    try:
        return trainer.fit()
    finally:
        if wandb_run is not None:
            wandb_run.finish()


if __name__ == "__main__":
    run_cli(main)
