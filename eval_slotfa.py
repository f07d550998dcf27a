#!/usr/bin/env python
"""Evaluate a SlotCon/SlotFA run without detectron2 (teacher network, frozen).

probe: k-NN and/or linear probe on the teacher ResNet's pooled features of a labelled
       <root>/<class>/<image> set (ImageNet's train/ and val/ folders fit); writes probe.json.
viz:   which pixels each prototype claims (docs/methods/slotfa.md): the top-k images per prototype with its
       argmax region tinted red, as PNGs (slots.png, prototype_XXXX.png).

    python eval_slotfa.py probe --checkpoint output/<run> --train-dir data/imagenet/train --val-dir data/imagenet/val
    python eval_slotfa.py viz --checkpoint output/<run> --data-dir data/coco/val2017 --topk 5
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from datasets.image_folder import IMAGE_SUFFIXES, ImageFiles, LabelledImageFolder, Preprocessed, ShapesImages
from ground.errors import UserError
from ground.state_dict import load_model_state
from models import build_model
from utils.checkpoint import load_checkpoint, resolve_checkpoint
from utils.cli import add_trust_arg
from utils.errors import run_cli
from utils.probe import knn_accuracy, linear_probe_accuracy, prototype_scores
from utils.run import select_device
from utils.visualize import save_prototype_grid


def load(path: str, device: torch.device, trust: bool = False) -> tuple[torch.nn.Module, dict[str, Any], Path]:
    """The SlotCon/SlotFA model of a checkpoint (``trust``: ``--trust_checkpoint``), its record and folder."""
    ckpt_file = resolve_checkpoint(path)
    checkpoint = load_checkpoint(ckpt_file, trust=trust, methods=("slotcon", "slotfa"))
    model = build_model(checkpoint["method"], checkpoint["model_config"], None)
    load_model_state(model, checkpoint["model"], source=str(ckpt_file))
    return model.to(device).eval(), checkpoint, ckpt_file.parent


def training_size(checkpoint: dict[str, Any]) -> int:
    """The image size the run trained at (its recorded --image-size)."""
    size = (checkpoint.get("args") or {}).get("image_size")
    if not isinstance(size, int):
        raise UserError("the checkpoint records no training image size; pass --image-size")
    return size


@torch.no_grad()
def run_model(model: torch.nn.Module, data: Dataset, batch_size: int, device: torch.device, key: str):
    outs, labels, images = [], [], []
    for image, label in DataLoader(data, batch_size=batch_size):
        out = model({"image": image.to(device)})
        outs.append(out[key].cpu())
        labels.append(label)
        images.append(image)
    return torch.cat(outs), torch.cat(labels), torch.cat(images)


def probe(args: argparse.Namespace) -> dict[str, Any]:
    device = select_device(args.device)
    model, checkpoint, run_dir = load(args.checkpoint, device, args.trust_checkpoint)
    size = args.image_size or training_size(checkpoint)
    train, val = LabelledImageFolder(args.train_dir), LabelledImageFolder(args.val_dir)
    if train.classes != val.classes:
        raise UserError(f"{args.train_dir} and {args.val_dir} have different class folders; use matching splits")
    xs, ys, _ = run_model(model, Preprocessed(train, size), args.batch_size, device, "pooled")
    xt, yt, _ = run_model(model, Preprocessed(val, size), args.batch_size, device, "pooled")
    record: dict[str, Any] = {"step": checkpoint.get("step"), "train_images": len(train), "val_images": len(val),
                              "classes": len(train.classes), "features": "teacher C5, average-pooled"}
    if args.protocol in ("knn", "both"):
        record["knn_top1"] = knn_accuracy(xs, ys, xt, yt, args.k, len(train.classes))
        record["knn_k"] = args.k
    if args.protocol in ("linear", "both"):
        record["linear_train_top1"], record["linear_top1"] = linear_probe_accuracy(
            xs, ys, xt, yt, args.probe_epochs, args.probe_lr, seed=args.seed, num_classes=len(train.classes))
    (run_dir / "probe.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return record


def viz(args: argparse.Namespace) -> Path:
    device = select_device(args.device)
    model, checkpoint, run_dir = load(args.checkpoint, device, args.trust_checkpoint)
    size = args.image_size or training_size(checkpoint)
    if args.data_dir:
        files = sorted(p for p in Path(args.data_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"no images under --data-dir {args.data_dir}")
        images: Dataset = ImageFiles(files[: args.num_images])
    else:
        images = ShapesImages("val", size, args.num_images, (checkpoint.get("args") or {}).get("seed") or 0)
    dots, _, pixels = run_model(model, Preprocessed(images, size), args.batch_size, device, "dots")
    num_prototypes = dots.shape[1]
    if args.idxs:
        chosen = args.idxs
        if not all(0 <= i < num_prototypes for i in chosen):
            raise UserError(f"--idxs must lie in [0, {num_prototypes}) for this checkpoint")
    elif args.sampling:
        chosen = torch.randint(0, num_prototypes, (args.sampling,), generator=torch.Generator().manual_seed(args.seed)).tolist()
    else:  # the prototypes that claim the most pixels
        counts = torch.bincount(dots.argmax(dim=1).flatten(), minlength=num_prototypes)
        chosen = counts.topk(min(args.num_shown, int((counts > 0).sum()))).indices.tolist()
    topk = min(args.topk, dots.shape[0])
    order = prototype_scores(dots)[:, chosen].topk(topk, dim=0).indices  # [topk, C]
    up = F.interpolate(dots, size=pixels.shape[-2:], mode="bilinear", align_corners=False).argmax(dim=1)
    grid_images = pixels[order]  # [topk, C, 3, H, W]
    claimed = torch.stack([up[order[:, c]] == p for c, p in enumerate(chosen)], dim=1)
    out_dir = Path(args.output) if args.output else run_dir / "viz_slots"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_prototype_grid(out_dir / "slots.png", grid_images, claimed, args.alpha,
                        column_labels=[f"prototype {p}" for p in chosen])
    for c, p in enumerate(chosen):
        save_prototype_grid(out_dir / f"prototype_{p:04d}.png", grid_images[:, c : c + 1], claimed[:, c : c + 1],
                            args.alpha, column_labels=[f"prototype {p}"])
    print(f"wrote {out_dir / 'slots.png'} (prototypes {chosen}, top {topk} of {dots.shape[0]} images)")
    return out_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    common.add_argument("--checkpoint", required=True, help="run folder or checkpoint file (ckpt_epoch_*.pth too)")
    common.add_argument("--image-size", dest="image_size", type=int, default=None, help="default: the training size")
    common.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    common.add_argument("--device", default="auto")
    common.add_argument("--seed", type=int, default=0)
    add_trust_arg(common, "--trust-checkpoint")
    p = sub.add_parser("probe", parents=[common], allow_abbrev=False,
                       help="k-NN / linear probe on a labelled class-folder set")
    p.add_argument("--train-dir", dest="train_dir", required=True, help="<root>/<class>/<image> for fitting")
    p.add_argument("--val-dir", dest="val_dir", required=True, help="<root>/<class>/<image> for scoring")
    p.add_argument("--protocol", default="both", choices=("knn", "linear", "both"))
    p.add_argument("--k", type=int, default=20, help="neighbours of the k-NN")
    p.add_argument("--probe-epochs", dest="probe_epochs", type=int, default=200, help="full-batch Adam steps")
    p.add_argument("--probe-lr", dest="probe_lr", type=float, default=0.1)
    v = sub.add_parser("viz", parents=[common], allow_abbrev=False,
                       help="top-k images per prototype with its pixels tinted")
    v.add_argument("--data-dir", dest="data_dir", default=None, help="folder of images (default: shapes val scenes)")
    v.add_argument("--num-images", dest="num_images", type=int, default=500, help="images scanned")
    v.add_argument("--topk", type=int, default=5)
    v.add_argument("--idxs", type=int, nargs="+", default=None, help="prototype ids to show")
    v.add_argument("--sampling", type=int, default=0, help="show N random prototype ids (seeded)")
    v.add_argument("--num-shown", dest="num_shown", type=int, default=8, help="default: the N most used prototypes")
    v.add_argument("--alpha", type=float, default=0.6)
    v.add_argument("--output", default=None, help="output folder (default: <run>/viz_slots)")
    return parser


def main(argv: list[str] | None = None) -> Any:
    args = build_parser().parse_args(argv)
    return probe(args) if args.command == "probe" else viz(args)


if __name__ == "__main__":
    run_cli(main)
