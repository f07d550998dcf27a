#!/usr/bin/env python
"""Evaluate SMTC on video datasets: label propagation or unsupervised discovery.

    python eval_smtc.py --task propagation --davis_path /data/DAVIS --checkpoint_path RUN_DIR --setting stride16
    python eval_smtc.py --task discovery --davis_path /data/DAVIS --checkpoint_path RUN_DIR [--matcher per_frame]
    python eval_smtc.py --dataset jhmdb --task propagation --data_path /data/JHMDB --checkpoint_path RUN_DIR
    python eval_smtc.py --dataset vip --task propagation --data_path /data/VIP_Fine --checkpoint_path RUN_DIR
    python eval_smtc.py --dataset segtrackv2 --task discovery --data_path /data/SegTrackv2 --checkpoint_path RUN_DIR
    python eval_smtc.py --dataset fbms --task discovery --data_path /data/FBMS_clean --checkpoint_path RUN_DIR

DAVIS takes both tasks; JHMDB (PCK) and VIP (mIoU) are propagation benchmarks; SegTrack-v2 and
FBMS-59 (foreground J) are discovery benchmarks. Layouts and protocols: docs/video_evaluation.md.

Outputs go to --output_dir (default: <run folder>/eval_<dataset>/<task>...). For DAVIS: indexed
DAVIS-palette PNGs (or proposals), then global_results-val.csv and per-sequence_results-val.csv (J&F, official
names) and protocol-val.txt saying which protocol produced them. Nothing is written into
the dataset folder. Propagation without --checkpoint_path uses the encoder flags alone (e.g.
--dino_path), i.e. the DINO baseline. Under torchrun the sequences are shared out over the
processes (each writes its own sequences' PNGs); rank 0 then scores them all and writes the CSVs.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from datasets.davis import DavisSequences
from datasets.fbms import FbmsSequences
from datasets.jhmdb import JhmdbVideos
from datasets.segtrackv2 import SegTrackV2Sequences
from datasets.vip import VipVideos
from ground.errors import UserError
from ground.state_dict import load_model_state
from models import build_encoder_from_spec, build_model
from utils.checkpoint import load_checkpoint, resolve_checkpoint
from utils.cli import add_encoder_args, add_trust_arg, encoder_spec
from utils.errors import run_cli
from utils.label_propagation import SETTINGS, PropagationSettings
from utils.logging import get_logger
from utils.run import seed_everything, select_device
from utils import distributed, video_eval

log = get_logger()

# --dataset -> (loader, tasks it supports, default split, default square frame side for propagation)
VIDEO_DATASETS = {
    "davis": (DavisSequences, ("propagation", "discovery"), "val", None),
    "segtrackv2": (SegTrackV2Sequences, ("discovery",), "all", None),
    "fbms": (FbmsSequences, ("discovery",), "test", None),
    "jhmdb": (JhmdbVideos, ("propagation",), "split1", 320),
    "vip": (VipVideos, ("propagation",), "val", 560),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--task", required=True, choices=("propagation", "discovery"))
    parser.add_argument("--dataset", default="davis", choices=sorted(VIDEO_DATASETS))
    parser.add_argument("--data_path", "--davis_path", dest="data_path", required=True,
                        help="dataset folder, e.g. DAVIS (JPEGImages/480p, Annotations/480p, ImageSets/2017)")
    parser.add_argument("--split", default=None, help="davis: val; segtrackv2: all; fbms: test|all; "
                        "jhmdb: split1|split2|split3 or a list file; vip: val")
    parser.add_argument("--checkpoint_path", default=None, help="SMTC checkpoint or run folder (needed for discovery)")
    parser.add_argument("--output_dir", default=None, help="default: <run folder>/eval_<dataset>")
    add_encoder_args(parser)
    parser.add_argument("--dino_path", dest="encoder_weights", help="= --encoder_weights")
    add_trust_arg(parser)
    p = parser.add_argument_group("label propagation (docs/methods/smtc.md)")
    p.add_argument("--setting", default="stride16", choices=sorted(SETTINGS), help="published setting")
    p.add_argument("--topk", type=int, default=None)
    p.add_argument("--radius", type=float, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--video_len", type=int, default=None, help="preceding frames in the context (20)")
    p.add_argument("--prop_size", type=int, default=None,
                   help="jhmdb/vip: frames are resized to this square side (default 320 / 560)")
    d = parser.add_argument_group("unsupervised discovery (docs/methods/smtc.md)")
    d.add_argument("--matcher", default=None, choices=("sequence", "per_frame"),
                   help="davis only. sequence (default): official (one Hungarian per sequence, <= 20 ids); "
                        "per_frame: SMTC's evaluator")
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


def _shard(davis: Any) -> Any:
    """This process's sequences (every ``world_size``-th one); all of them for one process."""
    mine = copy.copy(davis)
    mine.sequences = davis.sequences[distributed.rank()::distributed.world_size()]
    return mine


def _evaluate(args: argparse.Namespace) -> dict:
    seed_everything(args.seed)
    device = select_device(args.device)
    loader, tasks, default_split, default_size = VIDEO_DATASETS[args.dataset]
    if args.task not in tasks:
        raise UserError(f"--dataset {args.dataset} supports --task {' / '.join(tasks)} only")
    if args.prop_size is not None and default_size is None:
        raise UserError(f"--prop_size applies to --dataset jhmdb and vip only (not {args.dataset})")
    if args.matcher is not None and args.dataset != "davis":
        raise UserError(f"--matcher applies to --dataset davis only; {args.dataset} is scored as one foreground")
    args.matcher = args.matcher or "sequence"
    args.split = args.split or default_split
    davis = loader(args.data_path, args.split)  # layout errors before any model work
    checkpoint = None
    if args.checkpoint_path:
        ckpt_file = resolve_checkpoint(args.checkpoint_path)
        checkpoint = load_checkpoint(ckpt_file, trust=args.trust_checkpoint, methods=("smtc",))
        model = build_model("smtc", checkpoint["model_config"], checkpoint["encoder"], trust=args.trust_checkpoint)
        load_model_state(model, checkpoint["model"])
        net = model.student.to(device).eval()
    elif args.task == "discovery":
        raise UserError("--task discovery needs --checkpoint_path (an SMTC checkpoint)")
    default_base = (ckpt_file.parent if checkpoint else Path("logs")) / f"eval_{args.dataset}"
    base = Path(args.output_dir) if args.output_dir else default_base

    if args.task == "propagation":
        encoder = net.encoder if checkpoint else \
            build_encoder_from_spec(encoder_spec(args), args.trust_checkpoint).to(device).eval()
        s = SETTINGS[args.setting]
        settings = PropagationSettings(stride=s.stride, topk=args.topk or s.topk, radius=args.radius or s.radius,
                                       temperature=args.temperature or s.temperature, num_short=args.video_len or s.num_short)
        out = base / f"propagation_{args.setting}"
        if args.dataset != "davis":
            return _propagation_benchmark(args, encoder, davis, settings, out, device, default_size)
        video_eval.run_propagation(encoder, _shard(davis), settings, out / "results", device)
        distributed.barrier()
        if not distributed.is_main():
            return {}
        results = video_eval.score_semi_supervised(davis, out / "results")
        results.protocol += f"; {settings}"
    else:
        out = base / (f"discovery_{args.matcher}" if args.dataset == "davis" else "discovery")
        num_frames = int((checkpoint.get("args") or {}).get("num_frames", 4))
        video_eval.run_discovery(net, _shard(davis), out / "proposals", device, tuple(args.discovery_size),
                                 num_frames, args.num_iterations, kinetics=not args.imagenet_norm, seed=args.seed)
        distributed.barrier()
        if not distributed.is_main():
            return {}
        if args.dataset != "davis":
            summary, rows = video_eval.score_foreground(davis, out / "proposals")
            protocol = (f"{args.dataset} unsupervised discovery: all objects merged into one foreground, annotated "
                        "frames only, proposals merged by their overlap with the foreground (SMTC's helper), J")
            return _report(args, out, protocol, summary, rows, "J-Mean (frames)")
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


def _propagation_benchmark(args: argparse.Namespace, encoder: Any, videos: JhmdbVideos | VipVideos,
                           settings: PropagationSettings, out: Path, device: Any, default_size: int) -> dict:
    """JHMDB (keypoints, PCK) or VIP (parts, mIoU) propagation on size x size frames."""
    size = args.prop_size or default_size
    if args.dataset == "jhmdb":
        video_eval.run_keypoint_propagation(encoder, _shard(videos), settings, size, out / "results", device)
    else:
        video_eval.run_part_propagation(encoder, _shard(videos), settings, size, out / "results", device)
    distributed.barrier()
    if not distributed.is_main():
        return {}
    if args.dataset == "jhmdb":
        summary, rows = video_eval.score_keypoints(videos, out / "results")
        protocol = (f"jhmdb keypoint propagation at {size}x{size}, Gaussian joint maps (sigma 0.5 cells), top-3 "
                    "decoding, PCK with 0.6 x GT-box diagonal, frame 0 skipped, vanished joints wrong")
        key = "PCK@0.1"
    else:
        summary, rows = video_eval.score_parts(videos, out / "results")
        protocol = (f"vip part propagation at {size}x{size}, label set of frame 0, one 20-class confusion matrix "
                    "over all annotated frames but the first, mIoU = nanmean over classes")
        key = "mIoU"
    return _report(args, out, f"{protocol}; {settings}", summary, rows, key)


def _report(args: argparse.Namespace, out: Path, protocol: str, summary: dict, rows: list, key: str) -> dict:
    """Write the CSVs and protocol file, log the headline ``key`` and return the summary."""
    split = args.split if Path(args.split).name == args.split else "list"  # a JHMDB list file
    video_eval.write_summary(out, split, protocol, summary, rows)
    extra = ", ".join(f"{k} {100 * v:.1f}" for k, v in summary.items() if k != key and k != "frames")
    log.info(f"{protocol}: {key} {100 * summary[key]:.1f} ({extra}); CSVs in {out}")
    return {"protocol": protocol, "output_dir": str(out), **summary}


if __name__ == "__main__":
    run_cli(main)
