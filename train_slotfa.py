#!/usr/bin/env python
"""SlotCon / SlotFA pretraining of a ResNet (``--method slotcon|slotfa``), flags as upstream's main_pretrain.py.

Example (SlotFA README, 8 GPUs): see scripts/slotfa.sh. Quick CPU run on the built-in shapes:
    python train_slotfa.py --arch tiny_resnet50 --image-size 64 --dim-hidden 64 --dim-out 32 \
        --num-prototypes 16 --batch-size 8 --epochs 2 --train-samples 64 --num-workers 0
``--batch-size`` is global (split over ranks); LR = batch/256 * --base-lr.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
from torch import nn

from datasets.image_folder import PRETRAIN_DATASETS, build_pretrain_images, pretrain_files
from datasets.two_view import TwoViewDataset, crop_side
from ground.errors import UserError
from ground.schedules import WarmupCosineFrom
from models.resnet import ARCHS
from models.slotfa import FA_GRAD_MODES, METHOD_NAMES, SlotCon, SlotConConfig
from utils.checkpoint import CHECKPOINT_NAME
from utils.cli import add_stop_args, add_trust_arg, parse_train_args
from utils.distributed import world_size
from utils.errors import run_cli
from utils.lars import LARS
from utils.run import select_device
from utils.train import Trainer, TrainConfig


def flag(name: str) -> list[str]:
    """Upstream's hyphenated flag plus the project's underscore spelling (``--batch-size``, ``--batch_size``)."""
    return [name, "--" + name[2:].replace("-", "_")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--method", default="slotfa", choices=METHOD_NAMES)
    p.add_argument("--dataset", default="shapes", choices=PRETRAIN_DATASETS)
    p.add_argument(*flag("--data-dir"), dest="data_dir", default="./data", help="dataset root (unused for shapes)")
    p.add_argument(*flag("--image-size"), dest="image_size", type=int, default=224)
    p.add_argument(*flag("--min-scale"), dest="min_scale", type=float, default=0.08)
    p.add_argument(*flag("--train-samples"), dest="train_samples", type=int, default=None, help="use the first N images")
    p.add_argument("--arch", default="resnet50", choices=tuple(ARCHS))
    p.add_argument("--pretrained_weights", "--pretrained-weights", dest="pretrained_weights", default=None,
                   help="torchvision ResNet state dict to start the student (and teacher) from")
    p.add_argument(*flag("--dim-hidden"), dest="dim_hidden", type=int, default=4096)
    p.add_argument(*flag("--dim-out"), dest="dim_out", type=int, default=256)
    p.add_argument(*flag("--num-prototypes"), dest="num_prototypes", type=int, default=256)
    p.add_argument(*flag("--teacher-momentum"), dest="teacher_momentum", type=float, default=0.99)
    p.add_argument(*flag("--teacher-temp"), dest="teacher_temp", type=float, default=0.07)
    p.add_argument(*flag("--student-temp"), dest="student_temp", type=float, default=0.1)
    p.add_argument(*flag("--center-momentum"), dest="center_momentum", type=float, default=0.9)
    p.add_argument(*flag("--group-loss-weight"), dest="group_loss_weight", type=float, default=0.5)
    p.add_argument(*flag("--fa-sigma1"), dest="fa_sigma1", type=float, default=1.0, help="SlotFA: std of alpha ~ N(1, s)")
    p.add_argument(*flag("--fa-sigma2"), dest="fa_sigma2", type=float, default=1.0, help="SlotFA: std of beta ~ N(0, s)")
    p.add_argument(*flag("--fa-grad"), dest="fa_grad", default="none", choices=FA_GRAD_MODES,
                   help="SlotFA: none (default) = the augmented loss gives no gradient, as the released code; "
                        "backbone = it trains projector+encoder (the paper's figure)")
    p.add_argument(*flag("--fa-weight"), dest="fa_weight", type=float, default=1.0, help="SlotFA: weight of L_group-aug")
    p.add_argument(*flag("--batch-size"), dest="batch_size", type=int, default=512, help="GLOBAL batch size")
    p.add_argument(*flag("--base-lr"), dest="base_lr", type=float, default=1.0, help="LR per 256 images")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"))
    p.add_argument(*flag("--warmup-epoch"), dest="warmup_epoch", type=int, default=5)
    p.add_argument(*flag("--warmup-multiplier"), dest="warmup_multiplier", type=float, default=100)
    p.add_argument(*flag("--weight-decay"), dest="weight_decay", type=float, default=1e-5)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--fp16", action="store_true", default=True, help="mixed precision on CUDA (default on)")
    p.add_argument(*flag("--no-fp16"), dest="fp16", action="store_false", help="train in float32")
    p.add_argument(*flag("--start-epoch"), dest="start_epoch", type=int, default=1, help="must be 1; resume sets the epoch")
    p.add_argument("--epochs", type=int, default=800)
    p.add_argument(*flag("--output-dir"), "--log_path", dest="log_path", default="./output",
                   help="parent of the timestamped run folder")
    p.add_argument(*flag("--run-name"), dest="run_name", default=None, help="suffix of the run folder name")
    p.add_argument(*flag("--auto-resume"), dest="auto_resume", action="store_true",
                   help="resume the newest run folder under --output-dir that holds a checkpoint")
    p.add_argument("--resume", default="", help="run folder or checkpoint file to resume")
    p.add_argument(*flag("--print-freq"), dest="print_freq", type=int, default=10, help="log every N steps")
    p.add_argument(*flag("--save-freq"), dest="save_freq", type=int, default=50, help="keep ckpt_epoch_{E}.pth every N epochs")
    p.add_argument("--seed", type=int, default=None, help="default: a random seed, recorded in args.yaml")
    p.add_argument(*flag("--num-workers"), dest="num_workers", type=int, default=8, help="DataLoader workers per process")
    p.add_argument(*flag("--max-steps"), dest="max_steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
    p.add_argument(*flag("--checkpoint-every"), dest="checkpoint_every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    add_stop_args(p)
    add_trust_arg(p, "--trust-checkpoint")
    # Hidden plumbing that utils.cli.parse_train_args reads (real flags, so resume can tell them from typed ones).
    p.add_argument(*flag("--checkpoint-path"), dest="checkpoint_path", default=None, help=argparse.SUPPRESS)
    p.add_argument(*flag("--val-image-size"), dest="val_image_size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(*flag("--eval-batch-size"), dest="eval_batch_size", type=int, default=64, help=argparse.SUPPRESS)
    return p


def resolve_argv(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Apply --auto-resume (newest run with a checkpoint) and record a drawn seed when none is given."""
    args, _ = parser.parse_known_args(argv)
    if args.auto_resume and not args.resume:
        from pathlib import Path

        runs = sorted(p.parent for p in Path(args.log_path).glob(f"*/{CHECKPOINT_NAME}"))
        if runs:  # --auto-resume itself is not a setting of the run, so it is not passed on
            return [*(a for a in argv if a != "--auto-resume"), "--resume", str(runs[-1])]
    if args.seed is None and not args.resume:
        return [*argv, "--seed", str(int(torch.randint(0, 2**31 - 1, ())))]
    return argv


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad settings and missing data before anything is written."""
    if args.start_epoch != 1:
        raise UserError("--start-epoch must be 1: continue a run with --resume RUN_FOLDER (or --auto-resume)")
    if not 0.0 <= args.group_loss_weight <= 1.0:
        raise UserError(f"--group-loss-weight {args.group_loss_weight} must lie in [0, 1]")
    if not args.resume and args.dataset != "shapes":
        pretrain_files(args.dataset, args.data_dir)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    argv = resolve_argv(parser, list(sys.argv[1:] if argv is None else argv))
    check_args(parser.parse_args(argv))  # before a run folder exists
    args, run_dir, checkpoint = parse_train_args(parser, argv)
    ranks = world_size()  # parse_train_args joined torchrun's process group
    per_rank = args.batch_size // ranks
    if per_rank < 2:
        raise UserError(f"--batch-size {args.batch_size} gives {per_rank} images per process; BatchNorm needs >= 2")
    images = build_pretrain_images(args.dataset, args.data_dir, crop_side(args.image_size), args.train_samples, args.seed)
    train_set = TwoViewDataset(images, args.image_size, args.min_scale)
    steps_per_epoch = len(train_set) // (per_rank * ranks)
    if steps_per_epoch == 0:
        raise UserError(f"{len(train_set)} images are fewer than one global batch of {args.batch_size}; lower --batch-size")
    total_steps = steps_per_epoch * args.epochs
    config = SlotConConfig(
        method=args.method, arch=args.arch, dim_hidden=args.dim_hidden, dim_out=args.dim_out,
        num_prototypes=args.num_prototypes, teacher_momentum=args.teacher_momentum, teacher_temp=args.teacher_temp,
        student_temp=args.student_temp, center_momentum=args.center_momentum,
        group_loss_weight=args.group_loss_weight, total_steps=total_steps, fa_sigma1=args.fa_sigma1,
        fa_sigma2=args.fa_sigma2, fa_grad=args.fa_grad, fa_weight=args.fa_weight,
    )
    device = select_device(args.device)
    weights = None if checkpoint is not None else args.pretrained_weights
    model: nn.Module = SlotCon(config, weights, args.trust_checkpoint)
    model = model.to(device)  # the Trainer converts BatchNorm to SyncBatchNorm under DDP on GPUs

    lr = args.batch_size / 256 * args.base_lr
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "lars":
        optimizer: torch.optim.Optimizer = LARS(params, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, weight_decay=args.weight_decay, momentum=args.momentum)
    # The Trainer reads schedules in steps of one process's batch (see Trainer.schedule_step).
    schedule_epoch = len(train_set) // per_rank
    schedule = WarmupCosineFrom(lr, schedule_epoch * args.epochs, args.warmup_epoch * schedule_epoch, args.warmup_multiplier)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=per_rank, num_workers=args.num_workers, clip=math.inf, clip_norm_type=2.0,
        seed=args.seed, log_every=args.print_freq, max_steps=args.max_steps, checkpoint_every=args.checkpoint_every,
        amp=args.fp16, keep_every_epochs=args.save_freq,
    )
    meta = {"method": args.method, "model_config": config.to_dict(), "encoder": None, "args": vars(args)}
    trainer = Trainer(model, optimizer, schedule, train_set, None, device, run_dir, cfg, meta)
    if checkpoint is not None:
        if checkpoint.get("method") != args.method:
            raise UserError(f"{run_dir} holds a {checkpoint.get('method')} run, not {args.method}")
        trainer.load(checkpoint)
    trainer.fit()
    return {"run_dir": str(run_dir), "step": trainer.step}


if __name__ == "__main__":
    run_cli(main)
