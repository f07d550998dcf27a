#!/usr/bin/env python
"""Evaluate SMTC on DAVIS-2017 val: semi-supervised label propagation or unsupervised discovery.

    python eval_smtc.py --task propagation --davis_path /data/DAVIS --checkpoint_path RUN_DIR --setting stride16
    python eval_smtc.py --task discovery --davis_path /data/DAVIS --checkpoint_path RUN_DIR [--matcher per_frame]

Outputs go to --output_dir (default: <run folder>/eval_davis/<task>...): indexed DAVIS-palette PNGs
(or proposals), then global_results-val.csv and per-sequence_results-val.csv (J&F, official
names) and protocol-val.txt saying which protocol produced them. Nothing is written into
the dataset folder. Propagation without --checkpoint_path uses the encoder flags alone (e.g.
--dino_path), i.e. the DINO baseline. Under torchrun the sequences are shared out over the
processes (each writes its own sequences' PNGs); rank 0 then scores them all and writes the CSVs.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

from datasets.davis import DavisSequences
from models import build_encoder_from_spec, build_model
from utils.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from utils.cli import add_encoder_args, encoder_spec
from utils.errors import UserError, run_cli
from utils.label_propagation import SETTINGS, PropagationSettings
from utils.logging import get_logger
from utils.run import seed_everything, select_device
from utils import distributed, video_eval

log = get_logger()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--task", required=True, choices=("propagation", "discovery"))
    parser.add_argument("--davis_path", required=True, help="DAVIS folder (JPEGImages/480p, Annotations/480p, ImageSets/2017)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--checkpoint_path", default=None, help="SMTC checkpoint or run folder (needed for discovery)")
    parser.add_argument("--output_dir", default=None, help="default: <run folder>/eval_davis")
    add_encoder_args(parser)
    parser.add_argument("--dino_path", dest="encoder_weights", help="= --encoder_weights")
    p = parser.add_argument_group("label propagation (spec 1.9)")
    p.add_argument("--setting", default="stride16", choices=sorted(SETTINGS), help="published setting")
    p.add_argument("--topk", type=int, default=None)
    p.add_argument("--radius", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--video_len", type=int, default=None, help="preceding frames in the context (20)")
    d = parser.add_argument_group("unsupervised discovery (spec 1.10)")
    d.add_argument("--matcher", default="sequence", choices=("sequence", "per_frame"),
                   help="sequence: official (one Hungarian per sequence, <= 20 ids); per_frame: SMTC's evaluator")
    d.add_argument("--num_iterations", type=int, default=5, help="slot iterations at test time (SMTC: 5)")
    d.add_argument("--discovery_size", type=int, nargs=2, default=(480, 800), metavar=("H", "W"))
    d.add_argument("--imagenet_norm", action="store_true", help="ImageNet statistics instead of SMTC's Kinetics ones")
    parser.add_argument("--seed", type=int, default=0, help="seeds the stochastic instance initialisation")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(which_encoder="dino_vits16")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    distributed.init(args.device)
    try:
        return _evaluate(args)
    finally:
        distributed.cleanup()


def _shard(davis: DavisSequences) -> DavisSequences:
    """This process's sequences (every ``world_size``-th one); all of them for one process."""
    mine = copy.copy(davis)
    mine.sequences = davis.sequences[distributed.rank()::distributed.world_size()]
    return mine


def _evaluate(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    device = select_device(args.device)
    davis = DavisSequences(args.davis_path, args.split)  # layout errors before any model work
    checkpoint = None
    if args.checkpoint_path:
        ckpt_file = resolve_checkpoint(args.checkpoint_path)
        checkpoint = load_checkpoint(ckpt_file)
        if checkpoint.get("method") != "smtc":
            raise UserError(f"{ckpt_file} is a {checkpoint.get('method')!r} checkpoint, not an SMTC one")
        model = build_model("smtc", checkpoint["model_config"], checkpoint["encoder"])
        load_model_state(model, checkpoint["model"])
        net = model.student.to(device).eval()
    elif args.task == "discovery":
        raise UserError("--task discovery needs --checkpoint_path (an SMTC checkpoint)")
    base = Path(args.output_dir) if args.output_dir else (ckpt_file.parent if checkpoint else Path("logs")) / "eval_davis"

    if args.task == "propagation":
        encoder = net.encoder if checkpoint else build_encoder_from_spec(encoder_spec(args)).to(device).eval()
        s = SETTINGS[args.setting]
        settings = PropagationSettings(stride=s.stride, topk=args.topk or s.topk, radius=args.radius or s.radius,
                                       temperature=args.temperature or s.temperature, num_short=args.video_len or s.num_short)
        out = base / f"propagation_{args.setting}"
        video_eval.run_propagation(encoder, _shard(davis), settings, out / "results", device)
        distributed.barrier()
        if not distributed.is_main():
            return {}
        results = video_eval.score_semi_supervised(davis, out / "results")
        results.protocol += f"; {settings}"
    else:
        out = base / f"discovery_{args.matcher}"
        num_frames = int(checkpoint["args"].get("num_frames", 4))
        video_eval.run_discovery(net, _shard(davis), out / "proposals", device, tuple(args.discovery_size),
                                 num_frames, args.num_iterations, kinetics=not args.imagenet_norm, seed=args.seed)
        distributed.barrier()
        if not distributed.is_main():
            return {}
        if args.matcher == "per_frame":
            results = video_eval.score_discovery_per_frame(davis, out / "proposals")
        else:
            video_eval.write_official_proposals(davis, out / "proposals", out / "results")
            results = video_eval.score_discovery_official(davis, out / "results")
    results.write_csv(out, args.split)
    summary = results.global_results()
    log.info(f"{results.protocol}: J&F-Mean {100 * summary['J&F-Mean']:.1f} (J {100 * summary['J-Mean']:.1f}, "
             f"F {100 * summary['F-Mean']:.1f}); CSVs in {out}")
    return {"protocol": results.protocol, "output_dir": str(out), **summary}


if __name__ == "__main__":
    run_cli(main)
