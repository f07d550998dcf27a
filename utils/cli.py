"""Command-line pieces shared by the entry scripts: flag groups, resume and run setup."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from utils.checkpoint import CHECKPOINT_NAME, load_checkpoint
from utils.errors import UserError
from utils.run import explicit_flags, load_args, make_run_dir, save_args, seed_everything, str2bool

# Flags that may change when a run is resumed; everything else comes from the run's args.yaml.
RUNTIME_FLAGS = ("epochs", "max_steps", "num_workers", "device", "eval_batch_size", "checkpoint_every")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    from datasets import DATASETS

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="shapes", help=f"one of {', '.join(DATASETS)}")
    group.add_argument("--data_path", default=None, help="dataset root (optional for shapes: a folder of train.h5/val.h5)")
    group.add_argument("--image_size", type=int, default=224, help="model input side (train and val)")
    group.add_argument("--val_image_size", type=int, default=None, help="must equal --image_size (kept for SPOT commands)")
    group.add_argument("--val_mask_size", type=int, default=None, help="metric resolution (default: 320 COCO/VOC, 128 MOVi, image size for shapes)")
    group.add_argument("--train_samples", type=int, default=None, help="use only the first N training samples (shapes: number of scenes)")
    group.add_argument("--val_samples", type=int, default=None, help="use only the first N validation samples")
    group.add_argument("--num_workers", type=int, default=4, help="DataLoader workers")


def add_encoder_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("encoder")
    group.add_argument("--which_encoder", "--encoder", dest="which_encoder", default="dino_vitb16",
                       help="timm ViT name or short name (dino_vitb16, dino-vitb-16, dinov2_vitb14, ...)")
    group.add_argument("--encoder_weights", "--pretrained_encoder_weights", dest="encoder_weights", default=None,
                       help="local weights file for the encoder (no download)")
    group.add_argument("--no_pretrained", action="store_true", help="random encoder weights (tests, offline quickstart)")
    group.add_argument("--finetune_blocks_after", type=int, default=100, help="encoder blocks with index >= this are trained")
    group.add_argument("--encoder_final_norm", type=str2bool, default=False, help="apply the ViT's final LayerNorm")


def add_train_args(parser: argparse.ArgumentParser, lr: float = 4e-4, lr_min: float = 4e-7) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--batch_size", type=int, default=64, help="training batch size")
    group.add_argument("--eval_batch_size", type=int, default=32)
    group.add_argument("--epochs", type=int, default=100)
    group.add_argument("--lr_main", type=float, default=lr, help="peak learning rate")
    group.add_argument("--lr_min", type=float, default=lr_min, help="final learning rate of the cosine")
    group.add_argument("--lr_warmup_steps", type=int, default=10000, help="warm-up, rounded down to whole epochs as in SPOT")
    group.add_argument("--clip", type=float, default=0.3, help="gradient clip on the infinity norm (max |g|)")
    group.add_argument("--eval_viz_percent", type=float, default=0.2, help="save mask pictures every this fraction of the epochs")
    group.add_argument("--eval_every", type=int, default=1, help="evaluate every N epochs (and at the end)")
    group.add_argument("--log_path", default="logs", help="parent folder of the timestamped run folder")
    group.add_argument("--run_name", default=None, help="suffix of the run folder name")
    group.add_argument("--checkpoint_path", default=None, help="resume from this checkpoint file (its run folder continues)")
    group.add_argument("--resume", default=None, help="resume the run in this run folder")
    group.add_argument("--max_steps", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    group.add_argument("--checkpoint_every", type=int, default=0, help="also checkpoint every N steps (0: per epoch)")
    group.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")


def parse_train_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, extra_runtime_flags: tuple[str, ...] = ()
) -> tuple[argparse.Namespace, Path, dict | None]:
    """Parse flags; on resume, take the run's recorded flags (plus runtime overrides).

    ``extra_runtime_flags`` names a method's own flags that may also change on resume.

    Returns (args, run folder, checkpoint or None). A fresh run gets a new timestamped folder
    with ``args.yaml``; a resumed run continues in its own folder.
    """
    args = parser.parse_args(argv)
    resume_from = args.resume or args.checkpoint_path
    if not resume_from:
        if args.val_image_size not in (None, args.image_size):
            raise UserError("--val_image_size must equal --image_size: the decoder's token count is fixed by it")
        args.val_image_size = args.image_size
        seed_everything(args.seed)
        run_dir = make_run_dir(args.log_path, args.run_name)
        save_args(run_dir, args)
        return args, run_dir, None
    ckpt_file = Path(resume_from)
    if ckpt_file.is_dir():
        ckpt_file = ckpt_file / CHECKPOINT_NAME
    run_dir = ckpt_file.parent
    checkpoint = load_checkpoint(ckpt_file)
    recorded = load_args(run_dir)
    typed = explicit_flags(parser, argv)
    runtime = (*RUNTIME_FLAGS, *extra_runtime_flags)
    for name in typed - set(runtime) - {"resume", "checkpoint_path"}:
        if recorded.get(name) != getattr(args, name):
            raise UserError(
                f"--{name} {getattr(args, name)} differs from the resumed run ({recorded.get(name)}); "
                f"only {', '.join('--' + f for f in runtime)} may change on resume"
            )
    merged: dict[str, Any] = dict(recorded)
    for name in runtime:
        if name in typed or name not in merged:
            merged[name] = getattr(args, name)
    if "max_steps" not in typed:
        merged["max_steps"] = None
    merged["resume"], merged["checkpoint_path"] = str(run_dir), str(ckpt_file)
    args = argparse.Namespace(**merged)
    save_args(run_dir, args)
    return args, run_dir, checkpoint


def encoder_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder record stored in checkpoints (enough to rebuild the same encoder)."""
    return {
        "name": args.which_encoder,
        "pretrained": not args.no_pretrained,
        "weights_path": str(Path(args.encoder_weights).resolve()) if args.encoder_weights else None,
        "finetune_blocks_after": args.finetune_blocks_after,
        "final_norm": args.encoder_final_norm,
    }


def every_n_epochs(fraction: float, epochs: int) -> int:
    """SPOT's ``int(epochs * fraction)`` visualisation period, never zero (SPOT crashes on < 5 epochs)."""
    return max(1, int(epochs * fraction))
