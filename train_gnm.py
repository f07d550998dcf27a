#!/usr/bin/env python
"""GNM (Generative Neurosymbolic Machines): ELBO training with annealed betas, RMSprop, clip 1.0 (L2).

Example (CLEVR6, HHousen's sigma): python train_gnm.py --dataset clevr --data_path /path/to/clevr \\
    --image_size 128 --likelihood_sigma 0.4 --batch_size 32 --epochs 100 --log_path logs/gnm_clevr
Quick CPU run: python train_gnm.py --dataset shapes --image_size 64 --train_samples 2000 --epochs 5

Every schedule flag takes one value (constant) or START_VALUE END_VALUE START_STEP END_STEP (docs/methods/gnm.md).
After training, ``--nll_samples K`` estimates the negative log-likelihood with K importance samples
on the validation set (also on a finished run: ``--resume RUN --nll_samples 100``); pictures of
reconstructions, boxes, reconstructions from the prior and prior samples go to ``viz/``.
"""
from __future__ import annotations

import argparse

import torch

from ground.errors import UserError
from models.gnm import GNM, GNMConfig, add_model_args, check_config, estimate_nll
from utils.cli import add_data_args, add_train_args, build_datasets, parse_train_args, train_config
from utils.errors import run_cli
from utils.logging import METRICS_JSON, get_logger, write_json
from utils.run import explicit_flags, select_device
from utils.train import Trainer, make_loader
from utils.visualize import save_image_grid

log = get_logger()
# Flags of the shared training group that GNM has no use for (it trains at a constant LR, docs/methods/gnm.md#recipe).
UNUSED_FLAGS = ("lr_min", "lr_warmup_steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_data_args(parser)
    add_model_args(parser)
    add_train_args(parser, lr=1e-4)
    parser.set_defaults(image_size=128, batch_size=32, clip=1.0)
    group = parser.add_argument_group("GNM training")
    group.add_argument("--clip_norm_type", type=float, default=2.0, help="norm of the gradient clip (2: L2 as GNM; inf: max |g|)")
    group.add_argument("--nll_samples", type=int, default=0, help="after training, estimate the NLL with this many importance samples (0: off)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject impossible flag values with one line each (model sizes and schedules included)."""
    if args.nll_samples < 0:
        raise UserError("--nll_samples must be >= 0")
    if args.val_image_size not in (None, args.image_size):
        raise UserError("--val_image_size must equal --image_size for GNM")
    if not (args.resume or args.checkpoint_path):
        check_config(GNMConfig.from_args(args))


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    for name in sorted(explicit_flags(parser, argv) & set(UNUSED_FLAGS)):
        raise UserError(f"--{name} has no effect in GNM, which trains at the constant --lr_main (RMSprop); drop it")
    check_args(parser.parse_args(argv))  # before a run folder is made
    args, run_dir, checkpoint = parse_train_args(parser, argv, extra_runtime_flags=("nll_samples",))
    config = GNMConfig.from_args(args)
    check_config(config)
    device = select_device(args.device)
    model = GNM(config).to(device)
    train_set, val_set = build_datasets(args, run_dir)

    optimizer = torch.optim.RMSprop(model.parameters(), lr=args.lr_main)
    cfg = train_config(args, clip_norm_type=args.clip_norm_type)
    meta = {"method": "gnm", "model_config": config.to_dict(), "encoder": None, "args": vars(args)}
    trainer = Trainer(model, optimizer, lambda step: args.lr_main, train_set, val_set, device, run_dir, cfg, meta)
    if checkpoint is not None:
        trainer.load(checkpoint)
    record = trainer.fit()
    if trainer.step < trainer.total_steps:
        return record
    trainer.sync_model_step()
    loader = make_loader(val_set, args.eval_batch_size, args.num_workers, None, args.seed, False)
    images = next(iter(loader))["image"][:8].to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        model.eval()
        pictures = model.pictures(images)
    (run_dir / "viz").mkdir(exist_ok=True)
    save_image_grid(run_dir / "viz" / f"gnm_step_{trainer.step:07d}.png", {"input": images, **pictures})
    if args.nll_samples:
        nll = estimate_nll(model, loader, device, args.nll_samples, seed=args.seed)
        log.info(f"NLL with {args.nll_samples} importance samples: {nll['nll']:.1f} nats/image ({nll['nll_bits_per_dim']:.4f} bits/dim)")
        record = {**record, **nll, "nll_samples": args.nll_samples}
        write_json(run_dir / METRICS_JSON, record)
    return record


if __name__ == "__main__":
    run_cli(main)
