#!/usr/bin/env python
"""Evaluate a saved SPOT / DINOSAUR checkpoint; writes metrics.json and masks.png beside it.

Example (SPOT README): python eval_spot.py --dataset coco --data_path /path/to/COCO2017 --num_slots 7 \
    --eval_permutations all --checkpoint_path logs/spot_coco/TIMESTAMP/checkpoint.pt.tar

The model is rebuilt from the configuration stored in the checkpoint; model flags given on the
command line (as in the SPOT README's commands) are checked against it.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from datasets import build_dataset, limit
from metrics import SegmentationMetrics
from metrics.baselines import baseline_labels
from models import build_model
from models.adaslot import KEEP_RULES, AdaSlotConfig
from models.spot import SPOTConfig, add_model_args, check_config
from utils.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from utils.cli import add_data_args, add_encoder_args, data_options, one_line_errors
from utils.errors import UserError, run_cli
from utils.evaluation import evaluate
from utils.logging import METRICS_JSON, get_logger, write_json
from utils.run import explicit_flags, seed_everything, select_device
from utils.train import make_loader
from utils.visualize import save_mask_grid

log = get_logger()
TABLE_METRICS = ("fg_ari", "ari", "mbo_i", "mbo_c", "miou", "corloc")
# Extra metrics of models that keep/drop slots per image (AdaSlot), printed when present.
ADAPTIVE_METRICS = ("num_slots_kept", "precision", "recall", "f1", "ami", "nmi", "purity")
# Flags that choose how to evaluate rather than what the model is.
EVAL_CHOICES = {"eval_permutations", "keep_rule"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint_path", required=True, help="checkpoint.pt.tar or its run folder")
    add_data_args(parser)
    add_encoder_args(parser)
    add_model_args(parser)
    # SPOT's eval defaults fit a stage-2 checkpoint (spec 1.3). They are informational: the model is
    # rebuilt from the checkpoint's configuration, and only flags that are typed are checked against it.
    parser.set_defaults(truncate="bi-level", init_method="embedding", use_second_encoder=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_batch_size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--split", default="val", help="dataset split to evaluate")
    parser.add_argument("--baselines", action="store_true", help="also score one-slot and fixed-grid baselines")
    parser.add_argument("--log_path", default=None, help="folder for metrics.json/masks.png (default: beside the checkpoint)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--keep_rule", default=None, choices=KEEP_RULES,
                        help="AdaSlot checkpoints: keep decisions by Gumbel sampling (the original; default) "
                             "or p_keep > 0.5 (deterministic)")
    return parser


def checked_config(args: argparse.Namespace, typed: set[str], checkpoint: dict) -> SPOTConfig | AdaSlotConfig:
    """The checkpoint's model config with eval choices applied; typed model flags must agree."""
    stored = checkpoint["model_config"]
    for name in sorted(typed & set(stored) - EVAL_CHOICES):
        if getattr(args, name) != stored[name]:
            raise UserError(
                f"--{name} {getattr(args, name)} does not match the checkpoint ({stored[name]}); "
                f"drop the flag or pass --{name} {stored[name]}"
            )
    if checkpoint["method"] == "adaslot":
        if "eval_permutations" in typed:
            raise UserError("--eval_permutations applies to SPOT checkpoints; AdaSlot has an MLP decoder")
        config = AdaSlotConfig(**stored)
        if args.keep_rule is not None:
            config = dataclasses.replace(config, keep_rule=args.keep_rule)
        return config
    if "keep_rule" in typed:
        raise UserError("--keep_rule applies to AdaSlot checkpoints only")
    config = SPOTConfig(**stored)
    if "eval_permutations" in typed:
        config = dataclasses.replace(config, eval_permutations=args.eval_permutations)
    check_config(config)
    return config


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    one_line_errors(parser)
    args = parser.parse_args(argv)
    typed = explicit_flags(parser, argv)
    ckpt_path = resolve_checkpoint(args.checkpoint_path)
    checkpoint = load_checkpoint(ckpt_path)
    if checkpoint["method"] not in ("spot", "adaslot"):
        raise UserError(f"{ckpt_path} is a {checkpoint['method']} checkpoint; eval_spot.py evaluates SPOT/DINOSAUR/AdaSlot")
    config = checked_config(args, typed, checkpoint)
    encoder = dict(checkpoint["encoder"])
    if args.encoder_weights:
        encoder["weights_path"] = args.encoder_weights
    if "which_encoder" in typed and args.which_encoder != encoder["name"]:
        raise UserError(f"--which_encoder {args.which_encoder} does not match the checkpoint ({encoder['name']})")
    seed_everything(args.seed)
    device = select_device(args.device)
    model = build_model(checkpoint["method"], dataclasses.asdict(config), encoder)
    load_model_state(model, checkpoint["model"], source=str(ckpt_path))
    model.to(device)

    dataset = build_dataset(args.dataset, args.split, config.image_size, args.val_mask_size, args.data_path, args.val_samples, args.seed, **data_options(args))
    dataset = limit(dataset, args.val_samples)
    loader = make_loader(dataset, args.eval_batch_size, args.num_workers, None, args.seed, False)
    result = evaluate(model, loader, device, seed=args.seed, progress=not args.no_progress)
    rows = {"model (decoder masks)": result["metrics"]}
    if "fg_ari_slots" in result["metrics"]:
        rows["model (slot-attention masks)"] = {k: result["metrics"].get(f"{k}_slots") for k in TABLE_METRICS}
    if args.baselines:
        rows.update(score_baselines(loader, config.num_slots))
    print_table(rows)
    if "num_slots_kept" in result["metrics"]:
        print_table({f"model (keep rule: {result['metrics']['keep_rule']})": result["metrics"]}, ADAPTIVE_METRICS)

    out_dir = Path(args.log_path) if args.log_path else ckpt_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "evaluated_by": "eval_spot.py",
        "checkpoint": str(ckpt_path),
        "step": checkpoint.get("step"),
        "dataset": args.dataset,
        "split": args.split,
        "eval_permutations": getattr(config, "eval_permutations", None),
        "eval_protocol": args.eval_protocol,
        "seed": args.seed,
        **result["metrics"],
    }
    if args.baselines:
        for name, scores in rows.items():
            if name.startswith("baseline"):
                record.update({f"{name.split(': ')[1]}_{k}": v for k, v in scores.items()})
    write_json(out_dir / METRICS_JSON, record)
    examples = result["examples"]
    picture = out_dir / "masks.png"
    save_mask_grid(picture, examples["image"], {k: v for k, v in examples.items() if k != "image"})
    log.info(f"wrote {out_dir / METRICS_JSON} and {picture}")
    return record


def score_baselines(loader, num_slots: int) -> dict[str, dict[str, float]]:
    """Trivial reference segmentations scored with the same metrics as the model."""
    meters = {name: SegmentationMetrics() for name in ("one_slot", "grid")}
    for batch in loader:
        gt = batch["mask_instance"]
        for name, meter in meters.items():
            labels = baseline_labels(name, gt.shape, num_slots)
            meter.update(labels, gt, batch.get("mask_class"), batch.get("mask_ignore"))
    return {f"baseline: {name}": meter.compute() for name, meter in meters.items()}


def print_table(rows: dict[str, dict[str, float]], columns: tuple[str, ...] = TABLE_METRICS) -> None:
    width = max(len(name) for name in rows)
    widths = [max(7, len(m)) for m in columns]
    print(f"{'':{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(columns, widths)))
    for name, scores in rows.items():
        cells = "  ".join(f"{scores.get(m, float('nan')):{w}.2f}" for m, w in zip(columns, widths))
        print(f"{name:{width}}  {cells}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_cli(main)
