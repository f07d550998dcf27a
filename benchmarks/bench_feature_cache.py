#!/usr/bin/env python
"""Training images/s of SPOT stage 1 and DINOSAUR from images vs from the frozen-feature cache.

Runs the shared Trainer's real training step (forward, backward, clip, Adam) in four modes,
each in a fresh process so that its peak memory is its own:
  <model>/images  the frozen ViT runs in every step on an in-memory batch of random images
                  (image decoding and resizing excluded, which favours this mode)
  <model>/cache   every step reads its batch from a cache folder on disk (float16 memmap, random
                  sample order, DataLoader collation included) and skips the encoder
for <model> in dinosaur (MLP decoder, raster order) and spot (SPOT stage 1, AR decoder, random
orderings). The cache holds random features of the encoder's shape (the step does not depend on
the values) and is written once before the timed modes, so the file is in the page cache, as
a cache that fits in RAM would be. Prints images/s, ms/step, peak memory, the cache/images
ratios and the cache's disk bytes per image. images/CPU-s counts the process's CPU time instead of
wall time, a steadier figure on a shared CPU (the same when the benchmark runs alone). Example:

    python benchmarks/bench_feature_cache.py --which_encoder dino_vitb16 --image_size 224 --batch_size 8
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_spot_bench_args, device_name, memory_label, peak_memory_mb, time_train_steps,
)

from datasets.feature_cache import CacheWriter, CachedFeatures  # noqa: E402
from models.encoders import FrozenViT  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from utils.evaluation import move_to  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import EpochSampler, Trainer, TrainConfig, make_loader  # noqa: E402

MODELS = {
    "dinosaur": dict(dec_type="mlp", train_permutations="standard", use_slot_proj=False),
    "spot": dict(dec_type="transformer", train_permutations="random"),
}


def write_random_cache(folder: Path, num: int, views: int, tokens: int, dim: int) -> CachedFeatures:
    """A cache folder of ``num`` samples of random features (what the timing needs of a real one)."""
    generator = torch.Generator().manual_seed(0)
    with CacheWriter(folder, (num, views, tokens, dim)) as writer:
        for view in range(views):
            for start in range(0, num, 64):
                writer.write(start, view, torch.randn(min(64, num - start), tokens, dim, generator=generator))
        writer.finish({"num_samples": num, "views": ["identity", "hflip"][:views],
                       "encoder": {"name": "random features"}})
    return CachedFeatures(folder)


def bench(model_name: str, source: str, args: argparse.Namespace, cache_dir: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    encoder = FrozenViT(args.which_encoder, pretrained=False)  # kept in memory in both modes (validation uses it)
    model = SPOT(encoder, SPOTConfig(image_size=args.image_size, num_slots=args.num_slots, **MODELS[model_name]))
    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, lambda step: 4e-4, [None] * args.batch_size, None, device, Path(tmp),
                          TrainConfig(epochs=1, batch_size=args.batch_size), {})
        if source == "images":
            images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
            elapsed, cpu = time_train_steps(trainer, {"image": images}, args.warmup, args.steps, device)
        else:
            cache = CachedFeatures(cache_dir)
            sampler = EpochSampler(len(cache), seed=0, epoch=0, global_batch=args.batch_size)
            batches = iter(make_loader(cache, args.batch_size, 0, sampler, 0, drop_last=True))
            for _ in range(args.warmup):
                trainer.train_step(move_to(next(batches), device))
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):  # the read and collation of each batch are timed too
                trainer.train_step(move_to(next(batches), device))
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU seconds of this process: on a shared CPU less noisy than wall time (equal when it runs alone).
    return {"images_per_s": args.steps * args.batch_size / elapsed, "ms_per_step": 1000 * elapsed / args.steps,
            "images_per_cpu_s": args.steps * args.batch_size / cpu, "peak_mb": peak_memory_mb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_spot_bench_args(parser)
    parser.add_argument("--views", type=int, default=2, choices=(1, 2), help="views per image in the cache (COCO: 2)")
    parser.add_argument("--models", default="spot,dinosaur")
    parser.add_argument("--cache_dir", default=None, help="where to write the benchmark's cache (default: a temp folder)")
    args = parser.parse_args()
    device = select_device(args.device)
    encoder = FrozenViT(args.which_encoder, pretrained=False)
    tokens, dim = encoder.num_tokens(args.image_size), encoder.embed_dim
    del encoder
    name = device_name(device, args.threads)
    print(f"device: {name} | torch {torch.__version__} | encoder {args.which_encoder} (random weights) | "
          f"{args.image_size}px, batch {args.batch_size}, {args.num_slots} slots, fp32 training, "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    with tempfile.TemporaryDirectory(dir=args.cache_dir) as tmp:
        num = args.batch_size * (args.warmup + args.steps)
        cache = write_random_cache(Path(tmp) / "cache", num, args.views, tokens, dim)
        per_image = cache.bytes_per_sample
        print(f"cache: float16 {cache.meta['shape']} = {per_image:,} bytes per image ({args.views} views x {tokens} "
              f"tokens x {dim} x 2 B); COCO train2017 (118,287 images) would take {per_image * 118_287 / 1e9:.1f} GB")
        results = {}
        for model_name in args.models.split(","):
            for source in ("images", "cache"):
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # own peak memory per mode
                    r = pool.submit(bench, model_name, source, args, str(cache.root), device).result()
                results[model_name, source] = r
                memory = memory_label(device)
                print(f"{model_name + '/' + source:16s} {r['images_per_s']:8.2f} images/s  {r['ms_per_step']:9.1f} "
                      f"ms/step  {r['images_per_cpu_s']:8.2f} images/CPU-s  {memory} {r['peak_mb']:8.0f} MB", flush=True)
    for model_name in args.models.split(","):
        a, b = results[model_name, "cache"], results[model_name, "images"]
        print(f"{model_name} cache/images: images/s x{a['images_per_s'] / b['images_per_s']:.2f}, images/CPU-s "
              f"x{a['images_per_cpu_s'] / b['images_per_cpu_s']:.2f}, peak memory x{a['peak_mb'] / b['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
