#!/usr/bin/env python
"""Train SLATE (dVAE tokens -> slot attention -> autoregressive transformer decoder).

Flags and defaults follow the seed's ``slate_params`` (object-discovery-pytorch, CLEVR6 at 128 px):
two Adam groups (dVAE at --lr_dvae, the rest at --lr_main with a linear warm-up of
--lr_warmup_steps), both halved when the validation loss has not improved for --patience
evaluations, Gumbel temperature annealed from --tau_start to --tau_final over --tau_steps.

Example: python train_slate.py --dataset shapes --image_size 64 --vocab_size 1024 --num_slots 7 \
    --log_path logs/slate_shapes
"""
from __future__ import annotations

import argparse


from ground.errors import UserError
from ground.schedules import SlateSchedule
from models.slate import SLATE, SLATEConfig, add_model_args, check_config
from utils.cli import add_data_args, add_train_args, build_datasets, parse_train_args, train_config
from utils.errors import run_cli
from utils.run import select_device
from utils.train import Trainer, make_adam

SCHEDULERS = ("warmup", "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_model_args(parser)
    add_train_args(parser, lr=1e-4)
    # The seed's defaults for the shared flags (slate_params).
    parser.set_defaults(image_size=128, batch_size=50, eval_batch_size=50, epochs=1000, clip=1.0, lr_warmup_steps=30000)
    group = parser.add_argument_group("SLATE optimisation")
    group.add_argument("--lr_dvae", type=float, default=3e-4, help="learning rate of the dVAE (no warm-up)")
    group.add_argument("--weight_decay", type=float, default=0.0, help="Adam weight decay")
    group.add_argument("--scheduler", default="warmup", choices=SCHEDULERS,
                       help="warmup: --lr_main warms up over --lr_warmup_steps (exact steps) and both rates are "
                            "halved on validation-loss plateaus; none: both rates constant")
    group.add_argument("--patience", type=int, default=4,
                       help="evaluations without a lower validation loss before both rates are halved (0: never)")
    group.add_argument("--clip_norm_type", type=float, default=2.0,
                       help="norm of the gradient clip at --clip: 2 (the seed's Lightning clip) or inf (official SLATE)")
    # The seed's names for flags that the shared groups spell differently.
    for alias, dest in (("--max_epochs", "epochs"), ("--gradient_clip_val", "clip"),
                        ("--val_batch_size", "eval_batch_size"), ("--resolution", "image_size")):
        group.add_argument(alias, dest=dest, type=float if dest == "clip" else int, default=argparse.SUPPRESS,
                           help=f"same as --{dest}")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args, run_dir, checkpoint = parse_train_args(build_parser(), argv)
    if args.max_steps is not None and args.max_steps <= 0:
        args.max_steps = None  # the seed's max_steps=-1: no limit
    if checkpoint is not None and checkpoint.get("method") != "slate":
        raise UserError(f"{args.checkpoint_path} is a {checkpoint.get('method')!r} checkpoint, not a SLATE one")
    config = SLATEConfig.from_args(args)
    check_config(config)
    device = select_device(args.device)
    model = SLATE(config).to(device)
    train_set, val_set = build_datasets(args, run_dir)

    # Two groups as in SLATE: every parameter of the dVAE, and the rest (main first: logged as "lr").
    dvae = [p for name, p in model.named_parameters() if name.startswith("dvae.")]
    main_params = [p for name, p in model.named_parameters() if not name.startswith("dvae.")]
    optimizer = make_adam(
        [{"params": main_params, "name": "main"}, {"params": dvae, "name": "dvae"}],
        lr=args.lr_main, weight_decay=args.weight_decay,
    )
    schedule = SlateSchedule(args.lr_main, args.lr_dvae, args.lr_warmup_steps, patience=args.patience,
                             warmup=args.scheduler == "warmup")
    # SLATE's own masks are the slot-attention maps (docs/methods/slate.md#evaluation); the seed's --clip 0.0 means no clipping.
    cfg = train_config(args, clip_norm_type=args.clip_norm_type, primary_masks="slots")
    meta = {"method": "slate", "model_config": config.to_dict(), "encoder": None, "args": vars(args)}
    trainer = Trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    return trainer.fit()


if __name__ == "__main__":
    run_cli(main)
