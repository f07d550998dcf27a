#!/usr/bin/env python
"""Slot Attention autoencoder on pixels (Locatello et al. 2020), the official recipe.

Adam at --lr_main 4e-4, warm-up over --warmup_steps_pct of the steps and exponential decay
(--scheduler_gamma per --decay_steps_pct of the steps, applied from step 0), no gradient
clipping, mean MSE on images in [-1, 1]. Example (CLEVR6 setting of the seed):
    python train_slot_attention.py --dataset shapes --image_size 128 --num_slots 7 --batch_size 64 \
        --epochs 1000 --log_path logs/slot_attention
"""
from __future__ import annotations

import argparse


from ground.errors import UserError
from ground.schedules import WarmupExponentialDecay
from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig, add_model_args, check_config
from utils.cli import add_data_args, add_train_args, build_datasets, parse_train_args, train_config
from utils.errors import run_cli
from utils.run import explicit_flags, select_device
from utils.train import Trainer, make_adam

# Shared training flags that belong to the SPOT recipe and have no meaning here.
UNUSED_FLAGS = {"lr_min": "--scheduler_gamma", "lr_warmup_steps": "--warmup_steps_pct"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_model_args(parser)
    add_train_args(parser, lr=4e-4)
    group = parser.add_argument_group("slot attention recipe")
    group.add_argument("--warmup_steps_pct", type=float, default=0.02, help="linear warm-up, as a fraction of all steps")
    group.add_argument("--decay_steps_pct", type=float, default=0.2,
                       help="the LR is multiplied by --scheduler_gamma every this fraction of all steps")
    group.add_argument("--scheduler_gamma", type=float, default=0.5)
    group.add_argument("--weight_decay", type=float, default=0.0, help="Adam weight decay")
    # The seed's values: 128 px, batch 64, 1000 epochs (max_epochs), no clipping (gradient_clip_val 0).
    # Set on the actions, not with set_defaults (which explicit_flags would take for typed flags).
    defaults = dict(image_size=128, batch_size=64, epochs=1000, clip=0.0, eval_viz_percent=0.1)
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if action.dest in defaults:
            action.default = defaults[action.dest]
        if action.dest == "clip":
            action.help = "gradient clip on the L2 norm; 0 = none (the official recipe)"
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Impossible values, reported before anything is written."""
    check_config(SlotAttentionAEConfig.from_args(args))
    if not (args.decay_steps_pct > 0 and 0 <= args.warmup_steps_pct < 1):
        raise UserError("--decay_steps_pct must be > 0 and --warmup_steps_pct in [0, 1)")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    typed = explicit_flags(parser, argv)
    for name, instead in UNUSED_FLAGS.items():
        if name in typed:
            raise UserError(f"--{name} is not used by Slot Attention's schedule; use {instead}")
    check_flags(parser.parse_args(argv))  # before a run folder is made
    args, run_dir, checkpoint = parse_train_args(parser, argv)
    train_set, val_set = build_datasets(args, run_dir)  # layout errors before the model is built
    config = SlotAttentionAEConfig.from_args(args)
    device = select_device(args.device)
    model = SlotAttentionAE(config).to(device)

    params = [p for p in model.parameters() if p.requires_grad]  # implicit_grad freezes the slot init
    optimizer = make_adam(params, lr=args.lr_main, eps=1e-8, weight_decay=args.weight_decay)
    total_steps = args.epochs * (len(train_set) // args.batch_size)
    schedule = WarmupExponentialDecay(args.lr_main, int(args.warmup_steps_pct * total_steps),
                                      max(1, int(args.decay_steps_pct * total_steps)), args.scheduler_gamma)
    cfg = train_config(args, clip_norm_type=2.0)
    meta = {"method": "slot_attention", "model_config": config.to_dict(), "encoder": None, "args": vars(args)}
    trainer = Trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    return trainer.fit()


if __name__ == "__main__":
    run_cli(main)
