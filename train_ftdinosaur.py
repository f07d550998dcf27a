#!/usr/bin/env python
"""FT-DINOSAUR: DINOSAUR with a fully fine-tuned DINOv2 encoder, frozen pretrained targets and top-k decoding.

Stage 1 (COCO recipe, the defaults: ViT-S/14, batch 128, 300k steps at 224 px):
    python train_ftdinosaur.py --dataset coco --data_path /path/to/COCO2017 --log_path logs/ftdinosaur_coco
High-resolution stage (518 px, batch 64, 10k steps, from a finished stage-1 run):
    python train_ftdinosaur.py --dataset coco --data_path /path/to/COCO2017 --init_from_run logs/ftdinosaur_coco/RUN \
        --image_size 518 --batch_size 64 --num_steps 10000 --lr_warmup_steps 1000 --log_path logs/ftdinosaur_coco_518

Every flag, the recipe and the decisions taken where the paper is silent: docs/methods/ftdinosaur.md.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any


from datasets.feature_cache import CachedFeatures, ImagesWithCachedTargets
from ground.errors import UserError
from ground.schedules import GroupWarmupCosine
from ground.state_dict import describe_key_mismatch, model_state
from models import build_encoder_from_spec, encoder_fingerprint
from models.encoders import SMALL_ENCODERS, resolve_encoder_name
from models.ftdinosaur import FTDINOSAUR, FTDINOSAURConfig, add_model_args, check_config, encoder_record, parameter_groups
from models.position import resample_grid_embedding
from utils import distributed
from utils.checkpoint import load_checkpoint, resolve_checkpoint
from utils.cli import (add_data_args, add_encoder_args, add_train_args, build_datasets, encoder_spec, one_line_errors,
                       parse_train_args, train_config)
from utils.errors import run_cli
from utils.feature_cache import add_cache_args, check_cache_encoder, check_cache_flags
from utils.logging import get_logger
from utils.run import select_device
from utils.train import Trainer, make_adam

log = get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_encoder_args(parser)
    add_model_args(parser)
    add_train_args(parser, lr=1e-4, lr_min=1e-6)
    add_cache_args(parser)
    for action in parser._actions:  # noqa: SLF001
        if action.dest == "cache_features":
            action.help = ("the frozen target encoder's features, precomputed by scripts/cache_features.py "
                           "--pos_embed_resampling timm (same data and encoder flags); the trained encoder still "
                           "reads the images")
    group = parser.add_argument_group("FT-DINOSAUR recipe")
    group.add_argument("--num_steps", type=int, default=300_000, help="optimiser steps of the whole run")
    group.add_argument("--encoder_lr_factor", type=float, default=0.125,
                       help="the last encoder block's LR as a fraction of --lr_main")
    group.add_argument("--layer_lr_decay", type=float, default=0.85,
                       help="each earlier encoder block's LR is this times the next block's (the stem shares block 0's)")
    group.add_argument("--weight_decay", type=float, default=0.01,
                       help="AdamW weight decay of the encoder's matrices (none on biases, norms, LayerScale, "
                            "position embedding, CLS token, nor on the slot-attention head and decoder)")
    group.add_argument("--lr_reference_batch", type=int, default=64,
                       help="every LR is multiplied by sqrt(global batch / this); 0 turns the scaling off")
    group.add_argument("--clip_norm_type", type=float, default=2.0, help="norm of the gradient clip (2: total L2 norm)")
    group.add_argument("--init_from_run", default=None, metavar="RUN",
                       help="start from the weights of a finished FT-DINOSAUR run (high-resolution stage); the "
                            "decoder's position embedding is resampled to the new --image_size")
    parser.set_defaults(which_encoder="dinov2_vits14", finetune_blocks_after=0, batch_size=128, clip=0.1,
                        lr_warmup_steps=10_000)
    for action in parser._actions:  # noqa: SLF001 - clearer help for flags whose meaning differs here
        if action.dest == "clip":
            action.help = "gradient clip on the norm of --clip_norm_type (0: none)"
        elif action.dest == "lr_main":
            action.help = "peak LR of the slot-attention head and decoder at --lr_reference_batch (before scaling)"
        elif action.dest == "lr_warmup_steps":
            action.help = "linear warm-up in optimiser steps (not rounded to epochs)"
        elif action.dest == "lr_min":
            action.help = "final LR of the cosine, the same absolute value for every parameter group"
        elif action.dest == "epochs":
            action.help = "ignored: the run length is --num_steps"
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag values that would fail later or silently do nothing."""
    if args.num_steps < 1:
        raise UserError(f"--num_steps {args.num_steps} must be at least 1")
    if args.lr_reference_batch < 0:
        raise UserError(f"--lr_reference_batch {args.lr_reference_batch} must be 0 (no scaling) or positive")
    if not 0 < args.layer_lr_decay <= 1:
        raise UserError(f"--layer_lr_decay {args.layer_lr_decay} must be in (0, 1]")
    if args.encoder_lr_factor < 0 or args.weight_decay < 0:
        raise UserError("--encoder_lr_factor and --weight_decay must not be negative")
    if args.finetune_blocks_after < 0:
        raise UserError(f"--finetune_blocks_after {args.finetune_blocks_after} must be at least 0")


def lr_scale(args: argparse.Namespace) -> float:
    """sqrt(global batch / --lr_reference_batch), or 1 when the scaling is off."""
    if not args.lr_reference_batch:
        return 1.0
    return math.sqrt(args.batch_size * distributed.world_size() / args.lr_reference_batch)


def _same_encoder(a: str, b: str) -> bool:
    canonical = (lambda n: n if n in SMALL_ENCODERS else resolve_encoder_name(n))
    return canonical(a) == canonical(b)


def init_from_run(model: FTDINOSAUR, source: dict[str, Any], path: str, image_size: int) -> dict[str, Any]:
    """Load the weights of ``source`` (a finished FT-DINOSAUR run's checkpoint, read from ``path``) into
    ``model``; returns the record kept in this run's checkpoints.

    The decoder's position embedding is resampled (bicubic, antialiased) to the model's token grid;
    the encoder's is stored at its native grid and resampled at every forward pass anyway. The
    target encoder stays the pristine pretrained copy (a random test encoder's copy is taken from
    the run, where it is stored).
    """
    state = dict(source["model"])
    key = "decoder.pos_embed"
    if key in state and state[key].shape != model.decoder.pos_embed.shape:
        state[key] = resample_grid_embedding(state[key], model.grid)
        log.info(f"decoder position embedding resampled from {tuple(source['model'][key].shape)} to "
                 f"{tuple(state[key].shape)} for {image_size} px")
    problem = describe_key_mismatch(state, model_state(model), loaded_name="run")
    if problem:
        raise UserError(f"--init_from_run {path} does not fit this model ({problem}); pass the model flags that run "
                        "was trained with")
    model.load_state_dict(state, strict=False)
    return {"run": str(Path(path).resolve()), "step": source.get("step"),
            "image_size": source["model_config"].get("image_size")}


def training_data(args: argparse.Namespace, run_dir: Path) -> tuple[Any, Any]:
    """(training set, validation set); with ``--cache_features`` the training images carry their cached targets."""
    if not args.cache_features:
        return build_datasets(args, run_dir)
    meta = check_cache_flags(args.cache_features, args, targets_only=True)
    train_set, val_set = build_datasets(argparse.Namespace(**{**vars(args), "cache_features": None}), run_dir)
    return ImagesWithCachedTargets(train_set, CachedFeatures(args.cache_features, meta, args.train_samples)), val_set


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    one_line_errors(parser)
    early = parser.parse_args(argv)  # bad values stop the run before a run folder is made
    check_args(early)
    check_config(FTDINOSAURConfig.from_args(early))
    # The run length may grow on resume (the schedule follows it), as --epochs elsewhere.
    # A moved cache may be named again on resume (it holds the same features as the images).
    args, run_dir, checkpoint = parse_train_args(parser, argv, extra_runtime_flags=("num_steps", "cache_features"))
    check_args(args)
    config = FTDINOSAURConfig.from_args(args)
    datasets = training_data(args, run_dir)  # a layout problem stops the run before weights are loaded
    source = None
    if checkpoint is not None:
        enc = dict(checkpoint["encoder"])
    elif args.init_from_run:
        source_path = resolve_checkpoint(args.init_from_run)
        source = load_checkpoint(source_path)
        if source["method"] != "ftdinosaur":
            raise UserError(f"--init_from_run {args.init_from_run} is a {source['method']} run; pass a run of "
                            "train_ftdinosaur.py")
        enc = dict(source["encoder"])
        if not _same_encoder(args.which_encoder, enc["name"]):
            raise UserError(f"--which_encoder {args.which_encoder} differs from the --init_from_run run's "
                            f"({enc['name']}); pass --which_encoder {enc['name']}")
    else:
        enc = encoder_record(encoder_spec(args))
    encoder = build_encoder_from_spec(enc)
    if encoder.is_pretrained and "fingerprint" not in enc:
        enc["fingerprint"] = encoder_fingerprint(encoder)  # of the pretrained weights, also the targets'
    model = FTDINOSAUR(encoder, config)
    if args.cache_features:  # the cache must hold what the target encoder computes
        if model.target_encoder is None:
            raise UserError("--cache_features replaces the target encoder, which this model does not have")
        check_cache_encoder(datasets[0].cache.meta, model.target_encoder, args.cache_features)
    meta: dict[str, Any] = {"method": "ftdinosaur", "model_config": config.to_dict(), "encoder": enc, "args": vars(args)}
    if checkpoint is not None and "init_from" in checkpoint:
        meta["init_from"] = checkpoint["init_from"]
    elif source is not None:
        meta["init_from"] = init_from_run(model, source, str(source_path.parent), args.image_size)
    return train(args, run_dir, checkpoint, model, meta, datasets)


def train(args: argparse.Namespace, run_dir: Path, checkpoint: dict | None, model: FTDINOSAUR, meta: dict,
          datasets: tuple[Any, Any]) -> dict:
    """The recipe: AdamW over layer-wise LR groups, warm-up + cosine per step, L2 clipping, the shared loop."""
    train_set, val_set = datasets
    device = select_device(args.device)
    model = model.to(device)
    scale = lr_scale(args)
    groups = parameter_groups(model, args.lr_main * scale, args.encoder_lr_factor, args.layer_lr_decay,
                              args.weight_decay)
    optimizer = make_adam(groups, lr=args.lr_main * scale, adamw=True)
    schedule = GroupWarmupCosine([g["lr"] for g in groups], args.lr_min, args.num_steps, args.lr_warmup_steps)
    global_batch = args.batch_size * distributed.world_size()
    steps_per_epoch = max(len(train_set) // global_batch, 1)
    cfg = train_config(args, epochs=math.ceil(args.num_steps / steps_per_epoch), total_steps=args.num_steps,
                       clip_norm_type=args.clip_norm_type)
    trainer = Trainer(model, optimizer, schedule, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    return trainer.fit()


if __name__ == "__main__":
    run_cli(main)
