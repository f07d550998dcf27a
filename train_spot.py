#!/usr/bin/env python
"""SPOT stage 1 (``--train_permutations random``) and DINOSAUR (``--train_permutations standard``).

Example (SPOT README): python train_spot.py --dataset coco --data_path /path/to/COCO2017 --epochs 50 \
    --num_slots 7 --train_permutations random --eval_permutations standard --log_path logs/spot_teacher_coco
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ground.schedules import WarmupCosine, spot_warmup_steps
from models import build_encoder_from_spec, encoder_fingerprint
from models.spot import SPOT, SPOTConfig, add_model_args, check_config
from utils.cli import (add_data_args, add_encoder_args, add_train_args, build_datasets, encoder_spec, parse_train_args,
                       train_config)
from utils.errors import run_cli
from utils.feature_cache import add_cache_args, check_frozen_encoder
from utils.run import select_device
from utils.train import Trainer, make_adam


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_encoder_args(parser)
    add_model_args(parser)
    add_train_args(parser)
    add_cache_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    # A moved cache may be named again on resume (it holds the same features as the images).
    args, run_dir, checkpoint = parse_train_args(build_parser(), argv, extra_runtime_flags=("cache_features",))
    config = SPOTConfig.from_args(args)
    check_config(config)
    # Data first: a layout problem stops the run before any encoder weights are loaded.
    datasets = build_datasets(args, run_dir)
    # On resume the stored record (with its weights fingerprint) must rebuild the same encoder.
    enc = dict(checkpoint["encoder"]) if checkpoint is not None else encoder_spec(args)
    encoder = build_encoder_from_spec(enc, args.trust_checkpoint)
    if encoder.is_pretrained and "fingerprint" not in enc:
        enc["fingerprint"] = encoder_fingerprint(encoder)
    model = SPOT(encoder, config)
    meta = {"method": "spot", "model_config": config.to_dict(), "encoder": enc, "args": vars(args)}
    return train(args, run_dir, checkpoint, model, meta, datasets)



def train(args: argparse.Namespace, run_dir: Path, checkpoint: dict | None, model: torch.nn.Module, meta: dict,
          datasets: tuple[Dataset, Dataset]) -> dict:
    """SPOT's recipe for ``model`` (stage 1 and 2): Adam, warm-up + cosine, the shared loop."""
    train_set, val_set = datasets
    device = select_device(args.device)
    model = model.to(device)

    optimizer = make_adam([p for p in model.parameters() if p.requires_grad], lr=args.lr_main)
    # Counted in batches of --batch_size (the Trainer maps DDP steps onto this count).
    steps_per_epoch = len(train_set) // args.batch_size
    warmup = spot_warmup_steps(args.lr_warmup_steps, len(train_set), args.batch_size, steps_per_epoch)
    schedule = WarmupCosine(args.lr_main, args.lr_min, args.epochs * steps_per_epoch, warmup)
    cfg = train_config(args)
    trainer = Trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    check_frozen_encoder(train_set, model.encoder)  # after load: a random encoder's weights come from the checkpoint
    return trainer.fit()


if __name__ == "__main__":
    run_cli(main)
