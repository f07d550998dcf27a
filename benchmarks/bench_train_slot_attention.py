#!/usr/bin/env python
"""Training throughput and peak memory of train_slot_attention.py's model.

Runs the real training step (forward, backward, Adam) of the shared Trainer on random images,
so data loading is excluded, for two configurations:
  * ``seed``: the seed's CLEVR6 setting (128 px, batch 64, 7 slots, 64-wide CNNs, 5x5 kernels);
  * ``cpu``: a CPU-sized setting (32 px, batch 8, 32-wide CNNs with 3x3 kernels; CPU_CONFIG below).
Prints images/s, ms/step (wall and CPU) and peak memory for each (on the CPU the peak RSS of
the process so far: run one configuration per call for separate figures). Examples:

    python benchmarks/bench_train_slot_attention.py                          # both, their own batch sizes
    python benchmarks/bench_train_slot_attention.py --configs seed --batch_size 8 --implicit_grad
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, memory_label, peak_memory_mb, time_train_steps  # noqa: E402

from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import Trainer, TrainConfig, make_adam  # noqa: E402

SEED_CONFIG = dict(image_size=128, num_slots=7, batch_size=64)
# The configuration tried for the CPU quickstart (README, Slot Attention).
CPU_CONFIG = dict(image_size=32, num_slots=7, batch_size=8, encoder_channels=32, decoder_channels=32,
                  decoder_upsamples=2, kernel_size=3, conv_init="kaiming")
CONFIGS = {"seed": SEED_CONFIG, "cpu": CPU_CONFIG}


def bench(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    settings = dict(CONFIGS[name])
    batch_size = args.batch_size or settings.pop("batch_size")
    settings.pop("batch_size", None)
    torch.manual_seed(0)
    model = SlotAttentionAE(SlotAttentionAEConfig(implicit_grad=args.implicit_grad, **settings)).to(device)
    optimizer = make_adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    size = settings["image_size"]
    images = torch.rand(batch_size, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, lambda step: 4e-4, [None] * batch_size, None, device, Path(tmp),
                          TrainConfig(epochs=1, batch_size=batch_size, clip=float("inf"), clip_norm_type=2.0), {})
        elapsed, cpu = time_train_steps(trainer, {"image": images}, args.warmup, args.steps, device)
    return {
        "batch_size": batch_size,
        "images_per_s": args.steps * batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "cpu_ms_per_step": 1000 * cpu / args.steps,
        "peak_mb": peak_memory_mb(device),
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--configs", default="seed,cpu", help="comma-separated: seed, cpu")
    parser.add_argument("--batch_size", type=int, default=None, help="override every configuration's batch size")
    parser.add_argument("--implicit_grad", action="store_true", help="first-order fixed-point gradient")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    device = select_device(args.device)
    described = device_name(device)
    print(f"device: {described} | torch {torch.__version__} | fp32 | implicit_grad {args.implicit_grad} | "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    memory = memory_label(device)
    for name in names:
        r = bench(name, args, device)
        print(f"{name:5s} {CONFIGS[name]['image_size']}px batch {r['batch_size']:3d}: {r['images_per_s']:8.2f} images/s  "
              f"{r['ms_per_step']:9.1f} ms/step ({r['cpu_ms_per_step']:.0f} ms CPU)  {memory} {r['peak_mb']:8.0f} MB  "
              f"trainable {r['trainable_m']:.2f}M", flush=True)


if __name__ == "__main__":
    main()
