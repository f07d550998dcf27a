"""Distributed plumbing for ``torchrun``: process group, samplers, stopping (collectives: :mod:`ground.collectives`).

Every training script runs unchanged as a single process or under ``torchrun``: the process
group is set up from torchrun's environment variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) the first time :func:`init` is called
(``utils.cli.parse_train_args`` does it). NCCL is used when the processes run on GPUs, gloo on
the CPU. Without those variables every helper here degrades to the single-process case.

Conventions:
- rank 0 alone writes (run folder, ``args.yaml``, checkpoints, TensorBoard, pictures, console);
- ``--batch_size`` is per process; the global batch is ``batch_size * world_size``;
- training samples are sharded by :class:`utils.train.EpochSampler` (a ``DistributedSampler``);
  validation samples by :class:`ShardSampler` (no padding, so nothing is counted twice).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

# The collectives are defined in the ground layer (models use them too); orchestration code calls
# them through this module as well (``distributed.world_size()``).
from ground.collectives import (all_gather_cat, all_gather_objects, all_reduce_max, all_reduce_sum, barrier,  # noqa: F401
                                is_initialized, is_main, mean_over_ranks, rank, world_size)
from ground.errors import UserError

T = TypeVar("T")
# A rank that waits longer than this for the others fails instead of hanging forever.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)
# --timeout counts from here (this module is imported at start-up by every entry script), so
# that set-up time counts against a job's time limit too.
STARTED = time.monotonic()


# --- process group --------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """Whether torchrun (or SLURM-style env setup) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def wants_cuda(device: str) -> bool:
    """Whether ``--device`` resolves to a GPU on this machine."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init(device: str = "auto") -> None:
    """Join the process group when launched by torchrun (idempotent; no-op for one process).

    ``device`` is the ``--device`` flag: NCCL for GPUs (each process takes GPU ``LOCAL_RANK``),
    gloo for the CPU.
    """
    if is_initialized() or not launched_by_torchrun():
        return
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run a single process instead of torchrun")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UserError(f"WORLD_SIZE is set but {name} is not; launch with torchrun (see README, Multi-GPU)")
    cuda = wants_cuda(device)
    if cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but no GPU is visible; use --device cpu or auto")
        gpu = int(os.environ["LOCAL_RANK"])
        if gpu >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {gpu} but only {torch.cuda.device_count()} GPUs are visible; "
                "lower torchrun's --nproc_per_node"
            )
        torch.cuda.set_device(gpu)
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "timeout": PROCESS_GROUP_TIMEOUT}
    if cuda:
        kwargs["device_id"] = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(**kwargs)
    if dist.get_rank() != 0:  # rank 0 alone talks; the others only warn
        from utils.logging import get_logger

        get_logger().setLevel(logging.WARNING)


def cleanup() -> None:
    """Leave the process group (end of a script)."""
    if is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device) -> torch.device:
    """Under DDP on GPUs every process uses its own GPU (``cuda:LOCAL_RANK``)."""
    if is_initialized() and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its :class:`UserError`) to every rank.

    Used for decisions that touch the file system (creating or choosing the run folder), so
    the ranks agree and a mistake stops every rank with the same one-line message instead of
    leaving the others waiting.
    """
    if world_size() == 1:
        return fn()
    payload: list[Any] = [None]
    if is_main():
        try:
            payload[0] = ("ok", fn())
        except UserError as err:
            payload[0] = ("error", str(err))
    dist.broadcast_object_list(payload, src=0)
    kind, value = payload[0]
    if kind == "error":
        raise UserError(value)
    return value


# --- models ---------------------------------------------------------------------------------
def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())  # noqa: SLF001


def wrap_model(model: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """The module to call for training steps: ``model`` itself, or a DDP wrapper around it.

    BatchNorm layers become SyncBatchNorm when the process group runs on GPUs (gloo has no
    SyncBatchNorm; on the CPU each rank normalises its own shard and DDP broadcasts rank 0's
    running statistics). The conversion reuses the same parameter objects, so an optimizer built
    before this call keeps working. Frozen parameters (``requires_grad=False``, e.g. a frozen
    encoder) are ignored by DDP. ``find_unused_parameters`` is only needed by models whose
    trainable parameters sometimes get no gradient in a step; it costs an extra graph traversal.
    """
    if world_size() == 1:
        return model
    if device.type == "cuda" and has_batchnorm(model):
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:
            raise UserError("a model that is a bare BatchNorm layer cannot be trained under torchrun")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


# --- samplers -------------------------------------------------------------------------------
class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``W`` gets indices ``r, r + W, r + 2W, ...`` of a dataset, in order.

    Unlike ``DistributedSampler`` nothing is padded, so shards may differ in length by one and
    every sample is scored exactly once over all ranks (for evaluation).
    """

    def __init__(self, num_samples: int, num_replicas: int | None = None, rank_: int | None = None) -> None:
        self.num_samples = num_samples
        self.num_replicas = world_size() if num_replicas is None else num_replicas
        self.rank = rank() if rank_ is None else rank_

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))


# --- stopping: signals and time limits --------------------------------------------------------
class StopRequest:
    """Turns SIGTERM/SIGINT (cluster preemption, Ctrl-C) and a time limit into a polite stop.

    While active, the first signal only sets :attr:`reason`; the loop checks :meth:`should_stop`
    after each step, saves a checkpoint and returns. A second SIGINT interrupts at once.
    """

    def __init__(self, timeout_s: float | None = None, started: float | None = None) -> None:
        self.timeout_s = timeout_s
        self.started = STARTED if started is None else started
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a worker thread): no handlers
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def should_stop(self) -> str | None:
        """The reason to stop now (agreed by every rank), or None to go on."""
        if self.reason is None and self.timeout_s is not None and time.monotonic() - self.started >= self.timeout_s:
            self.reason = f"--timeout {format_seconds(self.timeout_s)}"
        wanted = torch.tensor([0.0 if self.reason is None else 1.0])
        if world_size() > 1:
            wanted = all_reduce_max(wanted)
            if float(wanted) > 0 and self.reason is None:
                self.reason = "another rank stopped"
        return self.reason if float(wanted) > 0 else None


def parse_duration(text: str) -> float:
    """``--timeout`` values: seconds (``3600``), ``H:MM:SS`` / ``MM:SS``, or ``90m`` / ``2h`` / ``45s``."""
    value = text.strip().lower()
    try:
        if ":" in value:
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
        elif value and value[-1] in "smhd":
            seconds = float(value[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[value[-1]]
        else:
            seconds = float(value)
    except ValueError:
        raise UserError(f"--timeout {text!r} is not a duration; use seconds (3600), H:MM:SS or 90m/2h") from None
    if not seconds > 0:
        raise UserError(f"--timeout {text!r} must be positive")
    return seconds


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"

