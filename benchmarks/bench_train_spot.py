#!/usr/bin/env python
"""Training throughput and peak memory of train_spot.py's model in DINOSAUR and SPOT mode.

Runs the real training step (forward, backward, infinity-norm clip, Adam) of the shared
Trainer on random images, so data loading is excluded. Prints images/s, ms/step and peak
memory for each mode, and the SPOT/DINOSAUR ratio. Example:

    python benchmarks/bench_train_spot.py --which_encoder dino_vitb16 --image_size 224 --batch_size 8
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.encoders import FrozenViT  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import Trainer, TrainConfig  # noqa: E402

MODES = {
    "dinosaur": dict(dec_type="mlp", train_permutations="standard", use_slot_proj=False),
    "spot": dict(dec_type="transformer", train_permutations="random"),
}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench(mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    encoder = FrozenViT(args.which_encoder, pretrained=False)
    config = SPOTConfig(image_size=args.image_size, num_slots=args.num_slots, **MODES[mode])
    model = SPOT(encoder, config).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, lambda step: 4e-4, [None] * args.batch_size, None, device, Path(tmp),
                          TrainConfig(epochs=1, batch_size=args.batch_size), {})
        for _ in range(args.warmup):
            trainer.train_step({"image": images})
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step({"image": images})
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "images_per_s": args.steps * args.batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_mb": peak_memory_mb(device),
        "trainable_m": trainable / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which_encoder", default="dino_vitb16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_slots", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", default="dinosaur,spot")
    args = parser.parse_args()
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name} | torch {torch.__version__} | encoder {args.which_encoder} (random weights) | "
          f"{args.image_size}px, batch {args.batch_size}, {args.num_slots} slots, fp32")
    results = {}
    for mode in args.modes.split(","):
        results[mode] = r = bench(mode, args, device)
        memory = "peak GPU memory" if device.type == "cuda" else "peak process RSS"
        print(f"{mode:9s} {r['images_per_s']:8.2f} images/s  {r['ms_per_step']:9.1f} ms/step  "
              f"{memory} {r['peak_mb']:8.0f} MB  trainable {r['trainable_m']:.1f}M")
    if {"dinosaur", "spot"} <= results.keys():
        ratio = results["spot"]["images_per_s"] / results["dinosaur"]["images_per_s"]
        print(f"ratio spot/dinosaur images/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
