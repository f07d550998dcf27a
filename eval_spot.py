#!/usr/bin/env python
"""Evaluate a saved checkpoint of any image slot model; writes metrics.json and masks.png beside it.

Example (SPOT README): python eval_spot.py --dataset coco --data_path /path/to/COCO2017 --num_slots 7 \
    --eval_permutations all --checkpoint_path logs/spot_coco/TIMESTAMP/checkpoint.pt.tar

The checkpoint's ``method`` picks the model (through ``models.METHODS``), which is rebuilt from
the configuration stored in the checkpoint; the model flags of that method given on the command
line (as in the SPOT README's commands) are checked against it. Flags that choose how to
evaluate (SPOT's --eval_permutations) apply to the methods that have them.

Under torchrun every process scores its own shard of the images and the sums are added over
processes (each image counted once); rank 0 alone prints and writes.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from datasets import build_dataset, limit, no_masks_reason
from ground.errors import UserError
from ground.state_dict import load_model_state
from metrics import SegmentationMetrics
from metrics import masks_to_labels
from metrics.baselines import baseline_labels, kmeans_masks
from models import METHODS, MethodSpec, build_model, model_config_of
from utils import distributed
from utils.checkpoint import resolve_checkpoint
from utils.cli import add_data_args, add_encoder_args, add_trust_arg, data_options, one_line_errors
from utils.errors import run_cli
from utils.evaluation import evaluate
from utils.logging import METRICS_JSON, get_logger, write_json
from utils.released import checkpoint_settings, load_any_checkpoint
from utils.run import explicit_flags, seed_everything, select_device
from utils.train import make_loader
from utils.visualize import MASK_ROW_NAMES, save_mask_grid, save_prediction_grid

log = get_logger()
TABLE_METRICS = ("fg_ari", "ari", "mbo_i", "mbo_c", "miou", "corloc")
ENCODER_FLAGS = ("which_encoder", "encoder_weights", "no_pretrained", "finetune_blocks_after", "encoder_final_norm")
HELP_METHOD = "spot"  # whose model flags --help lists when no checkpoint is given
# Extra metrics of models that keep/drop slots per image (AdaSlot), printed when present.
ADAPTIVE_METRICS = ("num_slots_kept", "precision", "recall", "f1", "ami", "nmi", "purity")


def build_parser(method: str | None = HELP_METHOD) -> argparse.ArgumentParser:
    """Common evaluation flags plus the model flags of ``method`` (none for unregistered methods)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--checkpoint_path", required=True,
                        help="checkpoint.pt.tar or its run folder, or a released checkpoint (docs/released_models.md)")
    add_data_args(parser)
    add_encoder_args(parser)
    add_trust_arg(parser)
    if method in METHODS:
        METHODS[method]().add_model_args(parser)
    if method == "spot":
        # Defaults that fit a SPOT stage-2 checkpoint (docs/methods/spot.md). Informational: the model is rebuilt
        # from the checkpoint's configuration, and only typed flags are checked against it.
        parser.set_defaults(truncate="bi-level", init_method="embedding", use_second_encoder=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_batch_size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--split", default="val", help="dataset split to evaluate")
    parser.add_argument("--baselines", action="store_true",
                        help="also score trivial baselines: one slot, a fixed grid and, for models with a frozen "
                             "feature encoder, per-image k-means of its features with K = the number of slots")
    parser.add_argument("--log_path", default=None, help="folder for metrics.json/masks.png (default: beside the checkpoint)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def checked_config(spec: MethodSpec | None, args: argparse.Namespace, typed: set[str], checkpoint: dict) -> Any:
    """The checkpoint's model config with eval choices applied; typed model flags must agree."""
    # Fields the record predates count with their old values (so a typed flag is checked against them).
    stored = checkpoint["model_config"]
    choices = spec.eval_choices if spec is not None else frozenset()
    for name in sorted(typed & set(stored) - choices):
        if getattr(args, name) != stored[name]:
            raise UserError(
                f"--{name} {getattr(args, name)} does not match the checkpoint ({stored[name]}); "
                f"drop the flag or pass --{name} {stored[name]}"
            )
    if spec is None:  # a method that build_model knows but the registry does not: config as stored
        return dict(stored)
    config = model_config_of(checkpoint["method"], stored)
    config = dataclasses.replace(config, **{name: getattr(args, name) for name in choices & typed})
    if spec.check_config is not None:
        spec.check_config(config)
    return config


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, set[str], Path, dict]:
    """Two passes: the checkpoint names the method, whose model flags the second pass accepts."""
    first = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    first.add_argument("--checkpoint_path")
    first.add_argument("--trust_checkpoint", action="store_true")
    known, _ = first.parse_known_args(argv)
    if known.checkpoint_path is None:
        parser = build_parser()
        one_line_errors(parser)
        parser.parse_args(argv)  # --help, or the usual "required" error
    ckpt_path = resolve_checkpoint(known.checkpoint_path)
    checkpoint = load_any_checkpoint(ckpt_path, trust=known.trust_checkpoint)  # ours, or released (imported)
    method = checkpoint["method"]
    parser = build_parser(method)
    one_line_errors(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UserError(f"{' '.join(unknown)}: not a flag for evaluating a {method} checkpoint; see --help")
    typed = explicit_flags(parser, argv)
    # A released file leaves some settings open (SPOT: --num_slots, --num_heads): typed flags give them.
    checkpoint = checkpoint_settings(checkpoint, {name: getattr(args, name) for name in typed})
    return args, typed, ckpt_path, checkpoint


def main(argv: list[str] | None = None) -> dict:
    args, typed, ckpt_path, checkpoint = parse(argv)
    distributed.init(args.device)
    try:
        return _evaluate_checkpoint(args, typed, ckpt_path, checkpoint)
    finally:
        distributed.cleanup()


def _evaluate_checkpoint(args: argparse.Namespace, typed: set[str], ckpt_path: Path, checkpoint: dict) -> dict:
    method = checkpoint["method"]
    spec = METHODS[method]() if method in METHODS else None
    if spec is not None and not spec.image_model:
        raise UserError(f"{ckpt_path} is a {method} checkpoint of a video model; evaluate it with eval_{method}.py")
    config = checked_config(spec, args, typed, checkpoint)
    config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    encoder = dict(checkpoint["encoder"]) if checkpoint.get("encoder") is not None else None
    if encoder is None:
        if typed & set(ENCODER_FLAGS):
            raise UserError(f"a {method} checkpoint has no pretrained encoder; drop the encoder flags")
    else:
        if args.encoder_weights:
            encoder["weights_path"] = args.encoder_weights
        if "which_encoder" in typed and args.which_encoder != encoder["name"]:
            raise UserError(f"--which_encoder {args.which_encoder} does not match the checkpoint ({encoder['name']})")
    seed_everything(args.seed)
    device = select_device(args.device)
    model = build_model(method, config_dict, encoder, trust=args.trust_checkpoint)
    load_model_state(model, checkpoint["model"], source=str(ckpt_path))
    model.to(device)

    image_size = config_dict.get("image_size", args.image_size)
    dataset = build_dataset(args.dataset, args.split, image_size, args.val_mask_size, args.data_path, args.val_samples,
                            args.seed, **data_options(args))
    reason = no_masks_reason(dataset)
    if reason:
        raise UserError(f"{reason}, so eval_spot.py has nothing to score; the training run's metrics.jsonl "
                        "holds its validation reconstruction error (mse), and predict.py shows its slots")
    dataset = limit(dataset, args.val_samples)
    shard = distributed.ShardSampler(len(dataset)) if distributed.world_size() > 1 else None
    loader = make_loader(dataset, args.eval_batch_size, args.num_workers, shard, args.seed, False)
    primary_masks = spec.primary_masks if spec is not None else "decoder"
    result = evaluate(model, loader, device, seed=args.seed, primary_masks=primary_masks,
                      progress=not args.no_progress and distributed.is_main())
    examples = result["examples"]
    sources = [k for k in examples if k not in ("image", "ground truth")]
    primary = primary_masks if primary_masks in sources else sources[0]
    rows = {}
    for source in sources:
        suffix = "" if source == primary else f"_{source}"
        rows[f"model ({MASK_ROW_NAMES.get(source, source + ' masks')})"] = {
            k: result["metrics"].get(f"{k}{suffix}") for k in TABLE_METRICS
        }
    num_slots = config_dict.get("num_slots", 7)
    if not distributed.is_main():  # the metrics are the whole dataset's on every rank; rank 0 reports them
        return {"method": method, **result["metrics"]}
    if args.baselines:  # cheap (no model): rank 0 scores every image itself
        rows.update(score_baselines(make_loader(dataset, args.eval_batch_size, args.num_workers, None, args.seed,
                                                False), num_slots, model, device, args.seed))
    print_table(rows)
    if "num_slots_kept" in result["metrics"]:
        print_table({f"model (keep rule: {result['metrics']['keep_rule']})": result["metrics"]}, ADAPTIVE_METRICS)

    out_dir = Path(args.log_path) if args.log_path else ckpt_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "evaluated_by": "eval_spot.py",
        "method": method,
        "checkpoint": str(ckpt_path),
        "step": checkpoint.get("step"),
        **({"released_format": checkpoint["released"]["format"]} if checkpoint.get("released") else {}),
        "dataset": args.dataset,
        "split": args.split,
        **({"eval_permutations": config_dict["eval_permutations"]} if "eval_permutations" in config_dict else {}),
        "eval_protocol": args.eval_protocol,
        "seed": args.seed,
        "world_size": distributed.world_size(),
        **result["metrics"],
    }
    if args.baselines:
        for name, scores in rows.items():
            if name.startswith("baseline"):
                record.update({f"{name.split(': ')[1]}_{k}": v for k, v in scores.items()})
    write_json(out_dir / METRICS_JSON, record)
    picture = out_dir / "masks.png"
    save_mask_grid(picture, examples["image"], {k: v for k, v in examples.items() if k != "image"})
    written = [out_dir / METRICS_JSON, picture]
    if "slot_masks" in result["visuals"]:
        written.append(out_dir / "predictions.png")
        save_prediction_grid(written[-1], examples["image"], result["visuals"])
    log.info(f"wrote {', '.join(str(p) for p in written)}")
    return record


def score_baselines(loader, num_slots: int, model: torch.nn.Module | None = None, device: torch.device | None = None,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Reference segmentations scored with the same metrics as the model.

    ``one_slot`` and ``grid`` need no model. ``kmeans`` clusters each image's frozen encoder
    features into ``num_slots`` groups (models with ``encode``, i.e. a frozen feature encoder): a
    model that does not beat it has learned nothing beyond the features' own clustering.
    """
    names = ["one_slot", "grid"]
    if model is not None and hasattr(model, "encode") and hasattr(getattr(model, "encoder", None), "token_grid"):
        names.append("kmeans")
    meters = {name: SegmentationMetrics() for name in names}
    for batch in loader:
        gt = batch["mask_instance"]
        for name, meter in meters.items():
            if name == "kmeans":
                images = batch["image"].to(device)
                h, w = model.encoder.token_grid(tuple(images.shape[-2:]))
                masks = kmeans_masks(model.encode(images), num_slots, seed=seed)
                labels = masks_to_labels(masks.view(len(images), num_slots, h, w).cpu(), tuple(gt.shape[-2:]))
            else:
                labels = baseline_labels(name, gt.shape, num_slots)
            meter.update(labels, gt, batch.get("mask_class"), batch.get("mask_ignore"))
    return {f"baseline: {name}": meter.compute() for name, meter in meters.items()}


def print_table(rows: dict[str, dict[str, float]], columns: tuple[str, ...] = TABLE_METRICS) -> None:
    width = max(len(name) for name in rows)
    widths = [max(7, len(m)) for m in columns]
    print(f"{'':{width}}  " + "  ".join(f"{m:>{w}}" for m, w in zip(columns, widths)))
    for name, scores in rows.items():
        cells = "  ".join(f"{_number(scores.get(m)):{w}.2f}" for m, w in zip(columns, widths))
        print(f"{name:{width}}  {cells}")


def _number(value: float | None) -> float:
    return float("nan") if value is None else value


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    run_cli(main)
