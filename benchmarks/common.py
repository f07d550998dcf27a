"""Pieces shared by the training benchmarks: peak memory and timing the real training step."""
from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import torch


def add_spot_bench_args(parser: argparse.ArgumentParser, batch_size: int | None = 8, batch_help: str | None = None,
                        steps: int | None = 5, steps_help: str | None = None, warmup: int = 2,
                        warmup_help: str | None = None) -> None:
    """The configuration flags every SPOT/DINOSAUR step benchmark takes (ViT-B/16 at 224 px, 7 slots)."""
    parser.add_argument("--which_encoder", default="dino_vitb16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--num_slots", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=batch_size, help=batch_help)
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--warmup", type=int, default=warmup, help=warmup_help)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--device", default="auto")


def device_name(device: torch.device, threads: int | None = None) -> str:
    """The GPU's name, or ``CPU, N threads`` (the torch thread count when ``threads`` is None)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads() if threads is None else threads} threads"


def memory_label(device: torch.device) -> str:
    """What :func:`peak_memory_mb` measures on ``device``, for table headers."""
    return "peak GPU memory" if device.type == "cuda" else "peak process RSS"


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak RSS on the CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; process-wide


def time_train_steps(trainer: Any, batch: dict[str, torch.Tensor], warmup: int, steps: int,
                     device: torch.device) -> tuple[float, float]:
    """Run ``warmup`` untimed then ``steps`` timed ``trainer.train_step`` calls; (wall s, CPU s).

    CUDA peak-memory statistics are reset after the warm-up, so they cover the timed steps.
    """
    for _ in range(warmup):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start
