#!/usr/bin/env python
"""Run a frozen encoder once over a training set and write its fp16 token features (utils/feature_cache.py).

Takes the data and encoder flags of training; then pass --cache_features DIR to train_spot.py
(DINOSAUR, SPOT stage 1), train_adaslot.py (both stages) or train_ftdinosaur.py (its frozen target
encoder; write the cache with --pos_embed_resampling timm) with the same flags:

    python scripts/cache_features.py --out cache/coco_dinob16 --dataset coco --data_path /data/COCO2017 \\
        --which_encoder dino_vitb16 --image_size 224
    python train_spot.py --cache_features cache/coco_dinob16 --dataset coco --data_path /data/COCO2017 ...

Every view that training draws is stored (COCO: identity and horizontal flip; shapes, MOVi: identity).
Random encoder weights (--no_pretrained) depend on --seed: write the cache with the training seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import build_dataset, limit  # noqa: E402
from datasets.feature_cache import train_views  # noqa: E402
from ground.errors import UserError  # noqa: E402
from models.encoders import POS_EMBED_RESAMPLING  # noqa: E402
from models import build_encoder_from_spec  # noqa: E402
from utils import distributed  # noqa: E402
from utils.cli import (add_data_args, add_encoder_args, add_trust_arg, check_ranges, data_options,  # noqa: E402
                       encoder_spec, one_line_errors)
from utils.errors import run_cli  # noqa: E402
from utils.feature_cache import write_feature_cache  # noqa: E402
from utils.logging import get_logger  # noqa: E402
from utils.run import seed_everything, select_device  # noqa: E402

log = get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", required=True, help="cache folder to write (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cache once the new one is complete")
    add_data_args(parser)
    add_encoder_args(parser)
    add_trust_arg(parser)
    parser.add_argument("--seed", type=int, default=0, help="training --seed (random encoder weights; data seed default)")
    parser.add_argument("--data_seed", type=int, default=None, help="training --data_seed (shapes scenes, MOVi frames)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per encoder forward")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--pos_embed_resampling", default="dino", choices=POS_EMBED_RESAMPLING,
                        help="how the ViT's position embedding is resized to the image grid: dino (DINOSAUR, SPOT, "
                             "AdaSlot) or timm (FT-DINOSAUR's target encoder, train_ftdinosaur.py --cache_features)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    one_line_errors(parser)
    args = parser.parse_args(argv)
    check_ranges(args)
    if distributed.launched_by_torchrun():
        raise UserError("scripts/cache_features.py runs as one process; start it with python, not torchrun")
    train_views(args.dataset)  # a dataset whose views cannot be cached stops here
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    train_set = build_dataset(args.dataset, "train", args.image_size, args.val_mask_size, args.data_path,
                              args.train_samples, args.data_seed, **data_options(args))
    train_set = limit(train_set, args.train_samples)
    # Seeded as train_*.py seeds before building its encoder, so random weights are the same.
    seed_everything(args.seed)
    encoder = build_encoder_from_spec({**encoder_spec(args), "pos_embed_resampling": args.pos_embed_resampling},
                                      args.trust_checkpoint)
    if encoder.trainable:
        raise UserError(f"--finetune_blocks_after {args.finetune_blocks_after} trains encoder blocks (depth "
                        f"{encoder.depth}); a cache holds a frozen encoder's features: drop the flag")
    encoder.token_grid(args.image_size)  # a size that is no multiple of the patch stops here
    device = select_device(args.device)
    path = write_feature_cache(args, args.out, train_set, encoder, device, args.overwrite, not args.no_progress)
    meta_shape = (len(train_set), len(train_views(args.dataset)), encoder.num_tokens(args.image_size), encoder.embed_dim)
    per_image = 2 * meta_shape[1] * meta_shape[2] * meta_shape[3]
    log.info(f"wrote {path}: float16 {list(meta_shape)} ({per_image / 1e3:.1f} kB per image, "
             f"{per_image * meta_shape[0] / 1e6:.1f} MB in all)")
    return path


if __name__ == "__main__":
    run_cli(main)
