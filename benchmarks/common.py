"""Pieces shared by the training benchmarks: peak memory and timing the real training step."""
from __future__ import annotations

import resource
import time
from typing import Any

import torch


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
