"""Pieces shared by the training benchmarks: peak memory and timing the real training step."""
from __future__ import annotations

import resource
import time
from typing import Any

import torch


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
