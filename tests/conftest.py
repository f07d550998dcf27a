"""Test-session settings shared by every test module.

One intra-op thread everywhere: the tests compare runs bit for bit across processes (a training
subprocess killed and resumed in-process, torchrun ranks against one process), and float
reductions split over a different number of threads round differently. It also keeps forked
workers (DataLoader, two-rank process groups) clear of a parent's OpenMP pool, which can
deadlock a fork, and avoids oversubscribing small CI machines. Set before torch is imported.
"""
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the thread settings above)

torch.set_num_threads(1)
