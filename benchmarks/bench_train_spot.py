#!/usr/bin/env python
"""Training throughput and peak memory of SPOT's models (DINOSAUR, SPOT stage 1 and stage 2) and FT-DINOSAUR.

Runs the real training step (forward, backward, infinity-norm clip, Adam) of the shared
Trainer on random images, so data loading is excluded. Prints images/s, ms/step and peak
memory for each mode, and ratios. Each mode runs in a fresh process, so that peak memory is
its own. Modes:
  dinosaur        MLP decoder, raster order (train_spot.py --dec_type mlp ...)
  spot            SPOT stage 1 (train_spot.py --train_permutations random)
  spot2           SPOT stage 2 (train_spot_2.py): teacher + student, one frozen encoder pass per batch
  spot2_unshared  the same, with the official code's three encoder passes (frozen ViT for the
                  targets, again for the teacher, the student's ViT in full)
  ftdinosaur      FT-DINOSAUR (train_ftdinosaur.py): the whole ViT trained with layer-wise LR AdamW,
                  a frozen target copy, top-3 decoding, L2 clip 0.1; pass a DINOv2 encoder
                  (--which_encoder dinov2_vits14 / dinov2_vitb14, --image_size 224 or 518)
  ftdinosaur_cached  the same with the targets read from a feature cache (--cache_features):
                  no target-encoder pass
--amp and --compile run the step as the training scripts' flags do (CUDA only; no-ops on the CPU).
Example:

    python benchmarks/bench_train_spot.py --which_encoder dino_vitb16 --image_size 224 --batch_size 8

``--estimate_gpu 64`` estimates peak memory at batch 64 without running it: each mode runs at the
small batches of ``--estimate_from`` (default 2 and 8), and peak memory is extrapolated linearly
in the batch (activations grow with it; parameters, gradients and Adam's moments do not). On the
CPU the measured peak is the process RSS, which also holds ~0.5-1 GB of libraries, and attention
is computed with explicit [B, heads, N, N] weights where CUDA's fused kernels keep none, so the
CPU-based figure overstates the GPU's need; on a GPU, run the batch itself instead.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_spot_bench_args, device_name, memory_label, peak_memory_mb, time_train_steps,
)

from models.encoders import FrozenViT  # noqa: E402
from models.ftdinosaur import FTDINOSAUR, FTDINOSAURConfig, parameter_groups  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from models.spot_self_training import SelfTrainingSPOT  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import Trainer, TrainConfig, make_adam  # noqa: E402

MODES = {
    "dinosaur": dict(dec_type="mlp", train_permutations="standard", use_slot_proj=False),
    "spot": dict(dec_type="transformer", train_permutations="random"),
    "spot2": dict(dec_type="transformer", train_permutations="random"),
    "spot2_unshared": dict(dec_type="transformer", train_permutations="random"),
    "ftdinosaur": {},
    "ftdinosaur_cached": {},
}


def bench(mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    encoder = FrozenViT(args.which_encoder, pretrained=False)
    config = SPOTConfig(image_size=args.image_size, num_slots=args.num_slots, **MODES[mode])
    if mode.startswith("spot2"):
        # Stage 2 as train_spot_2.py builds it: a frozen stage-1 teacher (random orderings) and a
        # student on a copy of the encoder with the blocks after --finetune_blocks_after trainable.
        teacher = SPOT(encoder, SPOTConfig(image_size=args.image_size, num_slots=args.num_slots,
                                           eval_permutations="random", **MODES[mode]))
        student_encoder = copy.deepcopy(encoder)
        student_encoder.set_finetune_blocks_after(args.finetune_blocks_after)
        config = SPOTConfig(image_size=args.image_size, num_slots=args.num_slots, truncate="bi-level",
                            init_method="embedding", use_second_encoder=True, **MODES[mode])
        model = SelfTrainingSPOT(student_encoder, config, teacher, share_frozen_forward=mode == "spot2").to(device)
    elif mode.startswith("ftdinosaur"):
        encoder = FrozenViT(args.which_encoder, pretrained=False, finetune_blocks_after=0, finetune_stem=True,
                            pos_embed_resampling="timm")
        model = FTDINOSAUR(encoder, FTDINOSAURConfig(image_size=args.image_size, num_slots=args.num_slots)).to(device)
    else:
        model = SPOT(encoder, config).to(device)
    if mode.startswith("ftdinosaur"):  # train_ftdinosaur.py's optimiser and clipping
        optimizer = make_adam(parameter_groups(model, 1e-4), lr=1e-4, adamw=True)
        schedule = lambda step: [g["lr"] for g in optimizer.param_groups]  # noqa: E731
        clip = dict(clip=0.1, clip_norm_type=2.0)
    else:
        optimizer = make_adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
        schedule, clip = (lambda step: 4e-4), {}
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, schedule, [None] * args.batch_size, None, device, Path(tmp),
                          TrainConfig(epochs=1, batch_size=args.batch_size, amp=args.amp, compile=args.compile, **clip),
                          {})
        trainer.train_module = trainer.build_train_module()  # compiled with --compile (on CUDA)
        batch = {"image": images}
        if mode == "ftdinosaur_cached":  # what the cache gives: float16 target tokens
            batch["target_features"] = torch.randn(args.batch_size, model.grid[0] * model.grid[1],
                                                   model.encoder.embed_dim, device=device).half()
        elapsed, _ = time_train_steps(trainer, batch, args.warmup, args.steps, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Every weight held (the stage-2 teacher is not a submodule; shared encoders counted once).
    held = {id(p): p for m in (model, getattr(model, "teacher", model)) for p in m.parameters()}
    weights = sum(p.numel() for p in held.values())
    return {
        "images_per_s": args.steps * args.batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_mb": peak_memory_mb(device),
        "trainable_m": trainable / 1e6,
        # fp32 weights + gradients and two Adam moments of the trainable ones
        "fixed_mb": (4 * weights + 12 * trainable) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_spot_bench_args(parser)
    parser.add_argument("--finetune_blocks_after", type=int, default=8, help="stage 2: first trainable encoder block")
    parser.add_argument("--modes", default="dinosaur,spot,spot2,spot2_unshared",
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast as --amp of the training scripts (CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step's forward (CUDA)")
    parser.add_argument("--estimate_gpu", type=int, default=None, metavar="BATCH",
                        help="estimate peak memory at this batch from runs at the --estimate_from batches")
    parser.add_argument("--estimate_from", default="2,8", help="two small batch sizes for --estimate_gpu")
    args = parser.parse_args()
    if args.estimate_gpu is not None:
        estimate_memory(args)
        return
    device = select_device(args.device)
    name = device_name(device, args.threads)
    print(f"device: {name} | torch {torch.__version__} | encoder {args.which_encoder} (random weights) | "
          f"{args.image_size}px, batch {args.batch_size}, {args.num_slots} slots, "
          f"{'amp' if args.amp and device.type == 'cuda' else 'fp32'}{', compiled' if args.compile else ''}")
    results = {}
    for mode in args.modes.split(","):
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # own peak memory per mode
            results[mode] = r = pool.submit(bench, mode, args, device).result()
        memory = memory_label(device)
        print(f"{mode:14s} {r['images_per_s']:8.2f} images/s  {r['ms_per_step']:9.1f} ms/step  "
              f"{memory} {r['peak_mb']:8.0f} MB  trainable {r['trainable_m']:.1f}M")
    for a, b in [("spot", "dinosaur"), ("spot2", "spot"), ("spot2", "spot2_unshared"), ("ftdinosaur_cached", "ftdinosaur")]:
        if {a, b} <= results.keys():
            speed = results[a]["images_per_s"] / results[b]["images_per_s"]
            memory = results[a]["peak_mb"] / results[b]["peak_mb"]
            print(f"{a}/{b}: images/s x{speed:.2f}, peak memory x{memory:.2f}")


def estimate_memory(args: argparse.Namespace, capacity_gb: float = 80.0) -> None:
    """Peak memory at ``args.estimate_gpu`` from two small batches, extrapolated linearly in the batch."""
    device = select_device(args.device)
    small = sorted(int(b) for b in args.estimate_from.split(","))
    if len(small) != 2 or small[0] == small[1]:
        raise SystemExit("--estimate_from needs two different batch sizes, e.g. 2,8")
    name = device_name(device, args.threads)
    memory = memory_label(device)
    print(f"device: {name} | encoder {args.which_encoder} (random weights) | {args.image_size}px, {args.num_slots} "
          f"slots, fp32 | {memory} at batches {small[0]} and {small[1]}, extrapolated to {args.estimate_gpu}")
    for mode in args.modes.split(","):
        runs = []
        for batch in small:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                runs.append(pool.submit(bench, mode, argparse.Namespace(**{**vars(args), "batch_size": batch}),
                                        device).result())
        per_image = (runs[1]["peak_mb"] - runs[0]["peak_mb"]) / (small[1] - small[0])
        estimate = runs[0]["peak_mb"] + per_image * (args.estimate_gpu - small[0])
        verdict = "fits" if estimate / 1024 < 0.8 * capacity_gb else "does NOT fit"
        print(f"{mode:14s} {runs[0]['peak_mb']:7.0f} MB at batch {small[0]}, {runs[1]['peak_mb']:7.0f} MB at batch "
              f"{small[1]}: {per_image:6.1f} MB per image -> estimate {estimate:8.0f} MB ({estimate / 1024:.1f} GB) "
              f"at batch {args.estimate_gpu}, of which weights/gradients/Adam {runs[0]['fixed_mb']:.0f} MB; "
              f"{verdict} {capacity_gb:g} GB with 20% to spare")


if __name__ == "__main__":
    main()
