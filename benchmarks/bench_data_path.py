#!/usr/bin/env python
"""Is JPEG decoding the bottleneck of training? Training images/s from COCO JPEGs against in-memory tensors.

Writes a COCO-like fixture (``--num_images`` JPEGs of COCO's common sizes, 375-640 px on the
long side, ~7 polygon annotations each) into a temporary folder, then for each configuration
runs the real training step of ``train_spot.py`` (the shared ``Trainer.train_step``: forward,
backward, clipping, Adam) fed

  (a) ``jpeg``:   by the COCO loader (JPEG decoding, short side to the image size, crop, flip)
                  through ``make_loader`` with the default worker count, as ``Trainer.fit`` does;
  (b) ``memory``: from the same samples decoded beforehand and held as batches in memory.

Both run in one process, alternating ``--repeats`` times (the machine may be shared, so the
load changes over time). Prints images/s of each, their ratio, the loader alone (images/s at
the default worker count and CPU ms per image in one process), and peak memory (the training
process, and the largest loader worker). Configurations (DINOSAUR: MLP decoder, raster order,
no slot projection, 7 slots, random encoder weights, 224 px):

  vitb16   train_spot.py's DINOSAUR on ViT-B/16 (slot size 256, MLP decoder 3 x 2048)
  small    ViT-S/16, slot size 64, MLP decoder 3 x 256: a model where the loader matters more
  micro    the 1-block 32-wide test ViT with 8-px patches, MLP decoder 3 x 64: almost no model

Example:

    python benchmarks/bench_data_path.py --configs vitb16,small --batch_size 8 --steps 8
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from benchmarks.common import device_name, memory_label, peak_memory_mb  # noqa: E402
from datasets import build_dataset  # noqa: E402
from models.encoders import FrozenViT  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from real_data_fixtures import write_coco_scaled  # noqa: E402
from utils.cli import default_num_workers  # noqa: E402
from utils.evaluation import move_to  # noqa: E402
from utils.run import select_device  # noqa: E402
from utils.train import EpochSampler, Trainer, TrainConfig, make_loader  # noqa: E402

# (height, width) of the most common COCO 2017 image sizes, used in turn.
COCO_SIZES = [(480, 640), (427, 640), (640, 480), (375, 500), (640, 427), (424, 640), (512, 640), (500, 375)]
DINOSAUR = dict(dec_type="mlp", train_permutations="standard", eval_permutations="standard", use_slot_proj=False)
CONFIGS: dict[str, dict[str, Any]] = {
    "vitb16": dict(encoder="dino_vitb16", model=dict(slot_size=256, mlp_hidden_size=1024, mlp_dec_hidden=2048)),
    "small": dict(encoder="dino_vits16", model=dict(slot_size=64, mlp_hidden_size=128, mlp_dec_hidden=256)),
    "micro": dict(encoder="vit_micro_p8", model=dict(slot_size=32, mlp_hidden_size=64, mlp_dec_hidden=64)),
}


def train_images_per_s(trainer: Trainer, batches: Iterable[dict[str, Any]], warmup: int, steps: int,
                       device: torch.device) -> float:
    """Images/s of ``steps`` training steps on ``batches`` after ``warmup`` untimed ones (loader start-up)."""
    iterator = iter(batches)
    for _ in range(warmup):
        trainer.train_step(move_to(next(iterator), device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, images = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(iterator)  # the wait for the loader is part of the step, as in Trainer.fit
        trainer.train_step(move_to(batch, device))
        images += len(batch["image"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def loader_images_per_s(dataset: Any, batch_size: int, workers: int, batches: int) -> float:
    """Images/s of the training loader alone over ``batches`` batches, after the first (worker start-up)."""
    loader = make_loader(dataset, batch_size, workers, EpochSampler(len(dataset), 1, 0), 1, True)
    count, start = 0, 0.0
    for i, batch in enumerate(loader):
        if i == 0:
            start = time.perf_counter()
            continue
        count += len(batch["image"])
        if i == batches:
            break
    return count / (time.perf_counter() - start)


def bench(name: str, root: str, args: argparse.Namespace) -> dict[str, float]:
    """Both feeds of one configuration, in a fresh process (so peak memory is its own)."""
    # A spawned process makes spawn its default start method, and DataLoader workers would then
    # re-import everything (seconds each); train_spot.py's loaders fork, as on Linux by default.
    multiprocessing.set_start_method("fork", force=True)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    spec = CONFIGS[name]
    dataset = build_dataset("coco", "train", args.image_size, data_path=root)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    # Loader alone: CPU time per image in this process (no workers), then images/s with the workers.
    start = time.process_time()
    for i in range(args.batch_size * 2):
        dataset[i]
    cpu_ms = 1000 * (time.process_time() - start) / (args.batch_size * 2)
    loader_rate = loader_images_per_s(dataset, args.batch_size, workers, args.steps)

    encoder = FrozenViT(spec["encoder"], pretrained=False)
    config = SPOTConfig(image_size=args.image_size, num_slots=7, **spec["model"], **DINOSAUR)
    model = SPOT(encoder, config).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=4e-4)
    needed = (args.warmup + args.steps) * args.batch_size
    if len(dataset) < needed:
        raise SystemExit(f"--num_images {len(dataset)} < (warmup + steps) x batch = {needed}")
    # In-memory feed: the same kind of samples (decoded, augmented) collated once beforehand.
    collate = torch.utils.data.default_collate
    memory_batches = [collate([dataset[i * args.batch_size + j] for j in range(args.batch_size)])
                      for i in range(args.warmup + args.steps)]
    rates: dict[str, list[float]] = {"jpeg": [], "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, lambda step: 4e-4, dataset, None, device, Path(tmp),
                          TrainConfig(epochs=1, batch_size=args.batch_size, num_workers=workers), {})
        for repeat in range(args.repeats):
            for feed in ("memory", "jpeg") if repeat % 2 == 0 else ("jpeg", "memory"):
                if feed == "memory":
                    batches: Iterable[dict[str, Any]] = memory_batches
                else:  # exactly what Trainer.fit builds for an epoch
                    sampler = EpochSampler(len(dataset), repeat, 0, 0, 1, 0, args.batch_size)
                    batches = make_loader(dataset, args.batch_size, workers, sampler, repeat, True)
                rates[feed].append(train_images_per_s(trainer, batches, args.warmup, args.steps, device))
    return {
        "workers": workers,
        "jpeg": sum(rates["jpeg"]) / len(rates["jpeg"]),
        "memory": sum(rates["memory"]) / len(rates["memory"]),
        "runs": " ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(rates["jpeg"], rates["memory"])),
        "loader": loader_rate,
        "decode_cpu_ms": cpu_ms,
        "peak_mb": peak_memory_mb(device),
        "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--configs", default="vitb16,small,micro", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per feed and repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating (memory, jpeg) rounds")
    parser.add_argument("--num_workers", type=int, default=None, help="loader workers (default: the training default)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: as train_spot.py would use)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", default=None, help="write the fixture here (default: a temporary folder)")
    args = parser.parse_args()
    unknown = set(args.configs.split(",")) - CONFIGS.keys()
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    device = select_device(args.device)
    name = device_name(device, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp) / "coco"
        start = time.perf_counter()
        write_coco_scaled(root, args.num_images, sizes=COCO_SIZES)
        print(f"device: {name} | torch {torch.__version__} | {args.num_images} COCO-like JPEGs (375-640 px) written "
              f"in {time.perf_counter() - start:.0f} s | {args.image_size} px, batch {args.batch_size}, "
              f"{args.steps} timed steps x {args.repeats} repeats per feed, fp32")
        memory = memory_label(device)
        for config in args.configs.split(","):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                r = pool.submit(bench, config, str(root), args).result()
            print(f"{config:7s} jpeg {r['jpeg']:7.2f} images/s | memory {r['memory']:7.2f} images/s | "
                  f"ratio jpeg/memory {r['jpeg'] / r['memory']:.3f} (per repeat jpeg/memory: {r['runs']}) | "
                  f"loader alone {r['loader']:6.1f} images/s with {r['workers']} workers, "
                  f"{r['decode_cpu_ms']:.1f} CPU ms/image | {memory} {r['peak_mb']:.0f} MB, "
                  f"largest worker {r['worker_peak_mb']:.0f} MB | trainable {r['trainable_m']:.2f}M", flush=True)


if __name__ == "__main__":
    main()
