#!/usr/bin/env python
"""Run a trained slot model on your own images (or video frames) and save its slots.

Example: python predict.py --checkpoint logs/dinosaur/TIMESTAMP --input photos/ --output predictions/

The model is rebuilt from the checkpoint (no architecture flags). Each input is resized to the
model's square input as in training (--resize stretch, or pad to keep the aspect ratio) and the
masks are mapped back to the input's own size. For every input <name>, <output>/<name>/ gets:
overlay.png (slot colours and contours), labels.png (indexed PNG, values = slot index, VOC/DAVIS
colours), slot_XX.png (RGBA: the pixels slot XX claims) and slots.json (per-slot area, bounding box,
and for AdaSlot whether the slot was kept); <output>/summary.png shows the first --grid inputs.

Video frames (--video, on by default for a folder whose files are all numbered, e.g. 00000.jpg):
image models draw their slots afresh for every frame, so slot ids are matched to the previous
frame's by Hungarian matching on mask IoU to keep colours consistent (--slot_matching none keeps
the model's own slot order, for methods whose slot identity is already stable).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from ground.errors import UserError
from ground.state_dict import load_model_state
from models import METHODS, build_model
from utils.checkpoint import resolve_checkpoint
from utils.cli import add_trust_arg
from utils.errors import run_cli
from utils.inference import (RESIZE_MODES, UnreadableImage, labels_for_input, list_inputs, match_slots,
                             pick_mask_source, read_image, to_model_input, write_prediction)
from utils.logging import get_logger
from utils.released import load_any_checkpoint
from utils.run import select_device
from utils.visualize import grid_column, save_overlay_grid

log = get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, help=f"run folder or checkpoint file (methods: {', '.join(METHODS)})")
    parser.add_argument("--input", required=True, help="an image file or a folder of images / video frames")
    parser.add_argument("--output", required=True, help="folder for the results (created; an existing non-empty "
                                                         "one needs --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty --output, removing the earlier predictions there "
                             "(per-input folders with slots.json, and summary.png) first")
    parser.add_argument("--max_side", type=int, default=1024,
                        help="downscale inputs whose longer side exceeds this many pixels first (aspect ratio kept; "
                             "outputs are written at that size); 0: full size")
    parser.add_argument("--masks", default=None, help="mask source to render (default: decoder if the model has it, else its first)")
    parser.add_argument("--resize", default="stretch", choices=RESIZE_MODES,
                        help="stretch: whole image to the square model input; pad: keep the aspect ratio on a square canvas")
    parser.add_argument("--video", action=argparse.BooleanOptionalAction, default=None,
                        help="treat the folder as video frames (default: when every file name is a number)")
    parser.add_argument("--slot_matching", default="iou", choices=("iou", "none"), help="video frames: iou = Hungarian matching on mask IoU with the previous frame; none = the model's slot order")
    parser.add_argument("--grid", type=int, default=8, help="summary.png shows the first N inputs (0: none)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    parser.add_argument("--seed", type=int, default=0, help="seeds sampling inside the model (random slot init)")
    parser.add_argument("--encoder_weights", default=None, help="local encoder weights file if the recorded one is unavailable")
    add_trust_arg(parser)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, dict, int]:
    """The checkpoint's model in eval mode, its record, and its square input side."""
    ckpt_path = resolve_checkpoint(args.checkpoint)
    checkpoint = load_any_checkpoint(ckpt_path, trust=args.trust_checkpoint)  # ours, or released (imported in memory)
    method = checkpoint["method"]  # a registered method: loading checks it
    if not METHODS[method]().image_model:
        raise UserError(f"{ckpt_path} is a {method} checkpoint of a video model; predict.py renders image models "
                        f"(evaluate it with eval_{method}.py)")
    size = checkpoint.get("model_config", {}).get("image_size") or (checkpoint.get("args") or {}).get("image_size")
    if not size:
        raise UserError(f"{ckpt_path} records no image_size; it was not written by this project's training scripts")
    encoder = dict(checkpoint["encoder"]) if checkpoint.get("encoder") else None
    if encoder is not None and args.encoder_weights:
        encoder["weights_path"] = args.encoder_weights
    model = build_model(method, checkpoint["model_config"], encoder, trust=args.trust_checkpoint)
    load_model_state(model, checkpoint["model"], source=str(ckpt_path))
    return model.to(device).eval(), checkpoint, int(size)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.grid < 0 or args.max_side < 0:
        raise UserError("--batch_size must be >= 1, --grid >= 0 and --max_side >= 0")
    files, numbered = list_inputs(args.input)  # input and checkpoint errors come before any output
    video = numbered if args.video is None else args.video
    if video and args.video is None:
        log.info(f"{len(files)} numbered files: treated as video frames (--no-video to turn off)")
    device = select_device(args.device)
    model, checkpoint, size = load_model(args, device)
    method = checkpoint["method"]
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output {out_dir} is a file; pass a folder (it is created)")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not args.overwrite:
            raise UserError(f"--output {out_dir} already holds files, which new predictions would mix with; "
                            "choose a new folder or pass --overwrite to replace the earlier predictions")
        remove_predictions(out_dir)
    stems = [p.stem for p in files]
    names = [p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_") for p in files]

    skipped: list[str] = []
    written: list[Path] = []
    grid: list[torch.Tensor] = []
    grid_names: list[str] = []
    source, previous = None, None
    bar = tqdm(total=len(files), desc="predict", unit="image", disable=args.no_progress)
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        for start in range(0, len(files), args.batch_size):
            batch = []
            for path, name in zip(files[start : start + args.batch_size], names[start : start + args.batch_size]):
                try:
                    batch.append((path, name, read_image(path, max_side=args.max_side or None)))
                except UnreadableImage as err:
                    skipped.append(str(path))
                    log.warning(f"skipped unreadable file {err}")
                    bar.update(1)
            if not batch:
                continue
            inputs = torch.stack([to_model_input(image, size, args.resize) for _, _, image in batch]).to(device)
            out = model({"image": inputs})
            source = source or pick_mask_source(out, args.masks or METHODS[method]().primary_masks, method, typed=args.masks is not None)
            masks, keep = out["masks"][source].float().cpu(), out.get("slot_keep")
            num_slots = masks.shape[1]
            for i, (path, name, image) in enumerate(batch):
                slot_keep = keep[i].cpu() if keep is not None else None
                labels = labels_for_input(masks[i], image.shape[1], image.shape[2], args.resize, slot_keep)
                model_slot = torch.arange(num_slots)
                if video and args.slot_matching == "iou" and previous is not None:
                    perm = match_slots(previous, labels, num_slots)
                    labels, model_slot = perm[labels], torch.argsort(perm)  # model_slot[id] = slot
                previous = labels
                folder = out_dir / name
                overlay = write_prediction(folder, path, image, labels, model_slot, slot_keep, method, source, args.resize)
                written.append(folder)
                if len(grid) < args.grid:
                    grid.append(grid_column(image, overlay))
                    kept = f" ({int(slot_keep.sum())}/{num_slots} kept)" if slot_keep is not None else ""
                    grid_names.append(f"{name}{kept}")
                bar.update(1)
    bar.close()
    if skipped:
        log.warning(f"skipped {len(skipped)} of {len(files)} files that are not readable images")
    if not written:
        raise UserError(f"none of the {len(files)} files in --input {args.input} could be read as an image")
    if grid:
        save_overlay_grid(out_dir / "summary.png", grid, grid_names)
    log.info(f"wrote {len(written)} predictions ({source} masks of a {method} model) to {out_dir}")
    return {"written": written, "skipped": skipped, "masks": source, "video": video}


def remove_predictions(out_dir: Path) -> None:
    """Delete what an earlier predict.py run wrote in ``out_dir`` (--overwrite); other files stay."""
    for child in out_dir.iterdir():
        if child.is_dir() and (child / "slots.json").is_file():
            shutil.rmtree(child)
        elif child.name == "summary.png" and child.is_file():
            child.unlink()


if __name__ == "__main__":
    run_cli(main)
