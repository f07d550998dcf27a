#!/usr/bin/env python
"""Training throughput and peak memory of train_slate.py's model.

Runs the real training step of the shared Trainer (temperature update, forward, backward,
gradient clip, Adam with SLATE's two parameter groups) on random images, so data loading is
excluded. Two configurations:

* ``default``: the seed's CLEVR6 setting (128 px, vocabulary 4096, d_model 192, 8 decoder
  blocks, 8 heads, 7 slots of 192), at ``--batch_size`` (the seed trains with 50);
* ``small``: a CPU-sized model (32 px, vocabulary 64, d_model 64, 2 blocks, 5 slots of 64),
  the one the slow test trains, at ``--small_batch_size``.

Prints images/s, ms/step and peak memory for each. Example:

    python benchmarks/bench_train_slate.py --batch_size 50 --configs default,small
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, memory_label, peak_memory_mb, time_train_steps  # noqa: E402

from ground.schedules import SlateSchedule  # noqa: E402
from models.slate import SLATE, SLATEConfig  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import Trainer, TrainConfig, make_adam  # noqa: E402

CONFIGS = {
    "default": SLATEConfig(),
    "small": SLATEConfig(image_size=32, vocab_size=64, d_model=64, num_heads=4, num_dec_blocks=2, slot_size=64,
                         mlp_hidden_size=64, num_slots=5, dvae_hidden_size=32),
}


def bench(config: SLATEConfig, batch_size: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = SLATE(config).to(device)
    dvae = [p for n, p in model.named_parameters() if n.startswith("dvae.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("dvae.")]
    optimizer = make_adam([{"params": rest}, {"params": dvae}], lr=1e-4)
    images = torch.rand(batch_size, 3, config.image_size, config.image_size, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, SlateSchedule(1e-4, 3e-4, 30000), [None] * batch_size, None, device,
                          Path(tmp), TrainConfig(epochs=1, batch_size=batch_size, clip=1.0, clip_norm_type=2.0), {})
        elapsed, _ = time_train_steps(trainer, {"image": images}, args.warmup, args.steps, device)
    return {
        "images_per_s": args.steps * batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_mb": peak_memory_mb(device),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--configs", default="default,small", help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--batch_size", type=int, default=50, help="batch of the default config (seed: 50)")
    parser.add_argument("--small_batch_size", type=int, default=32, help="batch of the small config")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    name = device_name(device)
    print(f"device: {name} | torch {torch.__version__} | fp32 | {args.steps} timed steps after {args.warmup} warm-up")
    memory = memory_label(device)
    for key in args.configs.split(","):
        if key not in CONFIGS:
            parser.error(f"unknown config {key!r}; choose from {', '.join(CONFIGS)}")
        config = CONFIGS[key]
        batch = args.batch_size if key == "default" else args.small_batch_size
        r = bench(config, batch, args, device)
        tokens = (config.image_size // 4) ** 2
        print(f"{key:8s} {config.image_size}px batch {batch:3d} ({tokens} tokens, vocab {config.vocab_size}, "
              f"{config.num_dec_blocks} blocks, {r['params_m']:.2f}M params): {r['images_per_s']:8.2f} images/s  "
              f"{r['ms_per_step']:9.1f} ms/step  {memory} {r['peak_mb']:8.0f} MB")


if __name__ == "__main__":
    main()
