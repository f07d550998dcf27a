#!/usr/bin/env python
"""SMTC: self-supervised object-centric learning in videos (two-stage semantic/instance slots).

Seed command (4 GPUs, "efficient" recipe), with torchrun replacing torch.distributed.launch:
    torchrun --nproc_per_node=4 train_smtc.py --basepath /data/YTVOS/train --batch_size 32 --seed 0 \
        --num_iterations 3 --num_slots 16 --num_instance 4 --grad_iter 3000 --lr 2e-5 --gap 4 \
        --num_frames 4 --entro_cons --bi_cons --output_path test_log --dino_path dino_small_16.pth \
        --dataset YTVOS
Without --dataset the built-in moving-shapes clips are used (embedded default, no download).
"""
from __future__ import annotations

import argparse
import math

import torch

from datasets import VIDEO_DATASETS, build_video_dataset
from ground.errors import UserError
from models import build_encoder_from_spec, encoder_fingerprint
from models.smtc import SMTC, SMTCConfig, lr_at, parameter_groups
from utils.cli import add_data_args, add_encoder_args, add_train_args, encoder_spec, parse_train_args
from utils.distributed import world_size
from utils.errors import run_cli
from utils.run import select_device
from utils.train import Trainer, TrainConfig, make_adam

DATASET_NAMES = {"ytvos": "ytvos", "shapes": "shapes_video", "shapes_video": "shapes_video"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_encoder_args(parser)
    add_train_args(parser, lr=4e-5, lr_min=4e-6)
    g = parser.add_argument_group("SMTC (seed flag names)")
    # Seed names share their destination with the project's flags, so both spellings work.
    g.add_argument("--basepath", dest="data_path", help="YouTube-VOS split folder holding JPEGImages/ (= --data_path)")
    g.add_argument("--output_path", dest="log_path", help="parent folder of the run folder (= --log_path)")
    g.add_argument("--dino_path", dest="encoder_weights", help="local ViT-S/16 DINO weights (= --encoder_weights)")
    g.add_argument("--lr", dest="lr_main", type=float, help="head LR (= --lr_main); cosine to 0.1 lr, encoder x0.01")
    g.add_argument("--num_train_steps", type=int, default=10000, help="optimiser steps")
    g.add_argument("--grad_iter", type=int, default=0, help="encoder LR is 0 before this step, 1%% of --lr after")
    g.add_argument("--num_frames", type=int, default=4)
    g.add_argument("--gap", type=int, default=4, help="frame spacing inside a clip")
    g.add_argument("--num_slots", type=int, default=16, help="semantic slots")
    g.add_argument("--num_instances", "--num_instance", dest="num_instances", type=int, default=4,
                   help="instance slots per semantic slot (--num_instance: the SMTC README's name)")
    g.add_argument("--num_iterations", type=int, default=3)
    g.add_argument("--entro_cons", action="store_true", help="diversity loss between semantic masks")
    g.add_argument("--bi_cons", action="store_true", help="bidirectional Sinkhorn semantic consistency")
    g.add_argument("--ent_scale", type=float, default=1.0)
    g.add_argument("--cons_scale", type=float, default=1.0)
    g.add_argument("--weight_decay", type=float, default=0.1)
    g.add_argument("--no_augment", action="store_true", help="no colour augmentation (tests)")
    g.add_argument("--reparam_instances", action="store_true",
                   help="draw the instance slots as a reparameterised sample, so mu and log_sigma learn from "
                        "the instance stage (default: the official draw, which passes them no gradient)")
    parser.set_defaults(image_size=256, batch_size=2, which_encoder="dino_vits16", finetune_blocks_after=0,
                        log_path="logs", clip=math.inf, epochs=1)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args, run_dir, checkpoint = parse_train_args(build_parser(), argv)
    dataset = DATASET_NAMES.get(args.dataset.lower())
    if dataset is None:
        raise UserError(f"--dataset {args.dataset} is not a training video dataset; use YTVOS or shapes")
    train_set = build_video_dataset(dataset, "train", args.image_size, args.num_frames, args.gap,
                                    args.data_path, args.train_samples, args.seed)
    device = select_device(args.device)
    enc = dict(checkpoint["encoder"]) if checkpoint is not None else encoder_spec(args)
    encoder = build_encoder_from_spec(enc, args.trust_checkpoint)
    if encoder.is_pretrained and "fingerprint" not in enc:
        enc["fingerprint"] = encoder_fingerprint(encoder)
    grid = encoder.token_grid(args.image_size)
    config = SMTCConfig(num_slots=args.num_slots, num_instances=args.num_instances, num_iterations=args.num_iterations,
                        anchor_grid=grid[0], entro_cons=args.entro_cons, bi_cons=args.bi_cons,
                        ent_scale=args.ent_scale, cons_scale=args.cons_scale, augment=not args.no_augment,
                        reparam_instances=args.reparam_instances)
    model = SMTC(encoder, config).to(device)
    groups = parameter_groups(model, args.weight_decay)
    optimizer = make_adam(groups, lr=args.lr_main, adamw=True)
    total = args.num_train_steps

    def schedule(step: int) -> list[float]:
        return [lr_at(step, total, args.lr_main, g["is_encoder"], args.grad_iter) for g in groups]

    global_batch = args.batch_size * world_size()  # --batch_size is per process under torchrun
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch == 0:
        raise UserError(f"{len(train_set)} clips is fewer than one global batch of {global_batch}; lower --batch_size")
    cfg = TrainConfig(epochs=math.ceil(total / steps_per_epoch), batch_size=args.batch_size, num_workers=args.num_workers,
                      clip=args.clip, seed=args.seed, max_steps=min(total, args.max_steps or total),
                      checkpoint_every=args.checkpoint_every or 500, total_steps=total)
    meta = {"method": "smtc", "model_config": vars(config), "encoder": enc, "args": vars(args)}
    trainer = Trainer(model, optimizer, schedule, train_set, None, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    return trainer.fit()


if __name__ == "__main__":
    run_cli(main)
