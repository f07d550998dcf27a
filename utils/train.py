"""The one training loop shared by every method.

A method provides a model whose ``forward(batch)`` returns a dict with ``loss`` (scalar to
minimise), ``losses`` (detached scalars to log) and ``masks`` (dict of [B, K, h, w] soft masks).
A model whose behaviour follows the training step (annealed loss weights, curricula) defines
``set_step(step)``; the loop calls it before every forward pass and before saving.
The loop handles the LR schedule per step, gradient clipping, periodic evaluation and mask
visualisations, TensorBoard and ``metrics.jsonl``, atomic checkpoints and exact resume.

Under ``torchrun`` (see :mod:`utils.distributed`) the same loop runs DDP: every process takes
``batch_size`` samples per step (global batch ``batch_size * world_size``), the loss is computed
inside the DDP-wrapped forward, rank 0 alone writes, and evaluation metrics are summed over
ranks. SIGTERM/SIGINT and ``--timeout`` stop cleanly with a checkpoint.

Random draws of a training step: every training batch carries ``sample_seed`` (int64 [B], a fixed
hash of (seed, step, the sample's position in the global batch)) and ``step_seed`` (int64, of
(seed, step)). Models draw their training noise from these keys through :mod:`models.noise`
(``@noise.keyed_forward`` on ``forward`` plus the keyed draw helpers), so the draws do not depend on
the number of processes and a resumed run draws what an uninterrupted one would; batches without
keys (evaluation, prediction) draw from the global RNG as before. See docs/distributed.md.

Optional hooks, found by name so that methods without them need nothing:
* ``lr_schedule(step)`` may return one LR for every parameter group or a list with one LR per
  group; a schedule with ``observe(record)`` is fed every evaluation record (plateau decay), and
  one with ``state_dict()`` / ``load_state_dict()`` is checkpointed;
* ``model.set_step(step)`` is called before every training step (annealed temperatures);
* ``model.visual_outputs(images)`` returning ``{"reconstructions": {name: [B, 3, H, W]},
  "attention": [B, K, h, w]}`` adds a reconstruction picture to every visualisation.
"""
from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from datasets import no_masks_reason
from ground.errors import UserError
from ground.state_dict import load_model_state, model_state
from models import noise
from utils import distributed
from utils.checkpoint import (CHECKPOINT_NAME, numpy_rng_from_plain, numpy_rng_to_plain, remove_stale_temporaries,
                              save_checkpoint)
from utils.evaluation import evaluate, move_to
from utils.logging import METRICS_JSON, RunLogger, get_logger, truncate_metrics_jsonl, write_json
from utils.run import keep_run_dir, release_run_locks, save_args
from utils.visualize import save_mask_grid, save_prediction_grid, save_reconstruction_grid

log = get_logger()
# --max_skipped_fraction is checked from this step on: one bad step early in a run is not a trend.
SKIP_FRACTION_MIN_STEPS = 20


class EpochSampler(DistributedSampler):
    """A random order that depends only on (seed, epoch), sharded over ranks, resumable mid-epoch.

    The epoch's order is one permutation of the whole dataset (the same on every rank), cut to
    whole global batches when ``global_batch`` is given; rank ``r`` of ``W`` takes positions
    ``r, r + W, ...``, so the ``W`` per-rank batches of step ``s`` together are exactly the
    global batch a single process with batch ``batch_size * W`` would draw. ``start`` skips that
    many positions of the epoch's order (``step_in_epoch * global_batch``) without loading them,
    so a resumed run sees exactly the batches an uninterrupted run would. Call
    :meth:`set_epoch` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        epoch: int,
        start: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        global_batch: int | None = None,
    ) -> None:
        super().__init__(range(num_samples), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_samples_total, self.global_batch = num_samples, global_batch
        self.set_epoch(epoch, start)

    def set_epoch(self, epoch: int, start: int = 0) -> None:  # type: ignore[override]
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_samples_total, generator=generator)
        if self.global_batch:
            order = order[: len(order) // self.global_batch * self.global_batch]
        return order[self.start :][self.rank :: self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order())

    def __len__(self) -> int:
        return len(self._order())


@dataclass
class TrainConfig:
    """Loop settings (the method's flags map onto these in the entry script)."""

    epochs: int
    batch_size: int
    eval_batch_size: int = 32
    num_workers: int = 0
    clip: float = 0.3
    clip_norm_type: float = math.inf  # SPOT clips the infinity norm (max |g|) at 0.3
    seed: int = 0
    eval_every: int = 1  # epochs
    viz_every: int = 1  # epochs
    log_every: int = 50  # steps
    max_steps: int | None = None  # stop (and checkpoint) early, e.g. to test resume
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    primary_masks: str = "decoder"
    # Step-based methods: train exactly this many optimiser steps (last epoch partial); their LR
    # schedules are read in optimiser steps under DDP too (see Trainer.schedule_step).
    total_steps: int | None = None
    eval_num_workers: int | None = None  # DataLoader workers for evaluation (default: num_workers)
    # None: taken from the run's flags (checkpoint_meta["args"]: --timeout, --skip_nonfinite), so
    # entry scripts that do not set them still honour the shared flags.
    timeout: float | None = None  # seconds of training before a clean stop with a checkpoint
    skip_nonfinite: bool | None = None  # skip (and count) steps with a non-finite loss/gradient
    # Bounds on skipping (None: the run's --max_skipped_steps / --max_skipped_fraction): more skipped
    # steps in a row, or a larger share of the steps so far, stop the run with an error (it diverged).
    max_skipped_steps: int | None = None  # 0: no bound
    max_skipped_fraction: float | None = None  # 1: no bound
    # DDP: only for models whose trainable parameters sometimes get no gradient in a step (costs
    # a graph traversal per step). None: the model's ``ddp_find_unused_parameters`` attribute.
    find_unused_parameters: bool | None = None

    def check(self) -> None:
        """Refuse settings that would crash later or silently do nothing."""
        for name, low in (("batch_size", 1), ("epochs", 1), ("eval_every", 1), ("num_workers", 0),
                          ("checkpoint_every", 0), ("eval_batch_size", 1)):
            if getattr(self, name) < low:
                raise UserError(f"--{name} {getattr(self, name)} must be at least {low}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max_steps {self.max_steps} must be at least 1 (leave it out to train to the end)")
    # CUDA autocast: bfloat16 where supported, else float16 + GradScaler; a no-op (with a warning) on
    # the CPU. None: the run's --amp flag (checkpoint_meta["args"]), like timeout above.
    amp: bool | None = None
    # torch.compile the training forward (the DDP module under torchrun); evaluation stays eager.
    # None: the run's --compile flag.
    compile: bool | None = None
    keep_every_epochs: int = 0  # also keep ckpt_epoch_{E}.pth every N epochs and at the end; 0 = never


# Devices on which --compile is applied. On the CPU inductor's SPOT stage 1 step measured x0.96 and
# x1.03 of eager in two runs (by CPU time, ViT-B/16, batch 4; DINOSAUR x1.11, x1.13) after minutes of
# compilation, so there --compile is a logged no-op: no CPU run is slower for asking (README,
# benchmarks/bench_kernels.py).
COMPILE_DEVICES: tuple[str, ...] = ("cuda",)


def amp_settings(enabled: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """(autocast on?, its dtype) for ``--amp`` on ``device``.

    CUDA: bfloat16 where the GPU supports it (no loss scaling needed), else float16 with a
    GradScaler. The CPU always trains in float32 (the project's rule): CPU bf16 autocast is only
    fast on CPUs with native bf16 support, so ``--amp`` there is a logged no-op rather than a trap.
    """
    if not enabled:
        return False, torch.float32
    if device.type != "cuda":
        log.warning(f"--amp has no effect on {device.type}: training runs in float32 (autocast is used on CUDA only)")
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def adam_kernel(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """The fastest Adam update for ``params``: ``fused`` when every parameter is a floating-point
    tensor on CUDA or the CPU (both have fused kernels), else ``foreach``.

    On the CPU ``foreach`` is no faster than the per-tensor loop (it only batches CUDA launches)
    while the fused kernel is several times faster (benchmarks/bench_kernels.py).
    """
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params) \
        and len({p.device for p in params}) == 1
    return {"fused": True} if fused else {"foreach": True}


def make_adam(params: Any, lr: float, adamw: bool = False, **kwargs: Any) -> torch.optim.Optimizer:
    """Adam (``adamw=True``: AdamW) over ``params`` (tensors or parameter-group dicts) with the kernel
    of :func:`adam_kernel`. Build it after ``model.to(device)``: the choice depends on the device.
    Every training script builds its Adam here; ``kwargs`` go to the optimizer (eps, weight_decay)."""
    groups = [{**g, "params": list(g["params"])} if isinstance(g, dict) else g for g in params]
    tensors = [t for g in groups for t in (g["params"] if isinstance(g, dict) else [g])]
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    return cls(groups, lr=lr, **adam_kernel(tensors), **kwargs)


def keep_kernel_choice(optimizer: torch.optim.Optimizer, choices: list[dict[str, Any]]) -> None:
    """After ``load_state_dict``: put back this run's ``fused``/``foreach`` choice per group (a
    checkpoint carries the choice of the machine that wrote it) and move Adam's ``step`` counters
    to where that kernel expects them (fused: on the parameter's device, else on the CPU)."""
    for group, choice in zip(optimizer.param_groups, choices):
        group.update(choice)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.to(device=param.device, dtype=torch.float32) if on_device else step.cpu()


def capture_rng() -> dict[str, Any]:
    """Every RNG state that training draws from, as tensors and plain values (checkpoints load with
    ``weights_only=True``: numpy's state array is stored as a tensor)."""
    state = {"torch": torch.get_rng_state(), "numpy": numpy_rng_to_plain(np.random.get_state()),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore the states of :func:`capture_rng` (of a checkpoint upgraded to the current format)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(numpy_rng_from_plain(state["numpy"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, sampler: Sampler | None, seed: int, drop_last: bool) -> DataLoader:
    """DataLoader with its own generator, so building it never consumes the global RNG.

    Workers are capped at the machine's core count (more only slows a small machine down).
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=min(num_workers, os.cpu_count() or 1),
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def keep_copy(source: Path, target: Path) -> None:
    """Keep the current checkpoint under another name: a hard link (the checkpoint is replaced by
    rename, so the link keeps the old content), or a copy where links are not supported."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class Trainer:
    """Runs ``model`` on ``train_set`` for ``cfg.epochs`` epochs, writing into ``run_dir``.

    ``checkpoint_meta`` (method name, model config, encoder identity, args) is stored in every
    checkpoint so that evaluation can rebuild the model without retyping flags.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Callable[[int], float | Sequence[float]],
        train_set: Dataset,
        val_set: Dataset | None,
        device: torch.device,
        run_dir: Path,
        cfg: TrainConfig,
        checkpoint_meta: dict[str, Any],
    ) -> None:
        self.model, self.optimizer, self.lr_schedule = model, optimizer, lr_schedule
        self.train_set, self.val_set, self.device = train_set, val_set, device
        self.run_dir, self.cfg, self.meta = run_dir, cfg, checkpoint_meta
        cfg.check()
        run_args = checkpoint_meta.get("args") or {}
        if cfg.timeout is None and run_args.get("timeout"):
            cfg.timeout = distributed.parse_duration(str(run_args["timeout"]))
        if cfg.skip_nonfinite is None:
            cfg.skip_nonfinite = bool(run_args.get("skip_nonfinite", False))
        if cfg.max_skipped_steps is None:
            cfg.max_skipped_steps = int(run_args.get("max_skipped_steps", 10))
        if cfg.max_skipped_fraction is None:
            cfg.max_skipped_fraction = float(run_args.get("max_skipped_fraction", 0.05))
        if cfg.find_unused_parameters is None:
            cfg.find_unused_parameters = bool(getattr(model, "ddp_find_unused_parameters", False))
        if cfg.amp is None:
            cfg.amp = bool(run_args.get("amp", False))
        if cfg.compile is None:
            cfg.compile = bool(run_args.get("compile", False))
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        self.global_batch = cfg.batch_size * self.world_size
        self.steps_per_epoch = len(train_set) // self.global_batch
        if self.steps_per_epoch == 0:
            per = f" ({cfg.batch_size} per process x {self.world_size} processes)" if self.world_size > 1 else ""
            raise UserError(
                f"the training set has {len(train_set)} samples, fewer than one batch of {self.global_batch}{per}; "
                "lower --batch_size"
            )
        self.total_steps = cfg.total_steps or cfg.epochs * self.steps_per_epoch
        self.step = 0
        self.skipped_steps = 0
        self.consecutive_skipped = 0  # skipped steps since the last good one
        self.saved_step: int | None = None  # step of the checkpoint in run_dir (None: none yet)
        self.resumed = False
        self.last_metrics: dict[str, Any] = {}
        self._said_no_masks = False  # a dataset without masks is announced at its first evaluation only
        self.train_module: nn.Module = model  # the DDP wrapper under torchrun (set in fit)
        self.use_amp, self.amp_dtype = amp_settings(bool(cfg.amp), device)
        # bfloat16 has float32's range, so only float16 needs loss scaling.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    # --- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The checkpoint contents (a collective under DDP: every rank must call it)."""
        rng = capture_rng()
        self.sync_model_step()  # a model's recorded step (if it keeps one) matches the checkpoint's
        return {
            **self.meta,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": rng,
            # Every rank's RNG state, so a resumed DDP run draws exactly what it would have.
            "rng_per_rank": distributed.all_gather_objects(rng),
            "world_size": self.world_size,
            "skipped_steps": self.skipped_steps,
            "consecutive_skipped": self.consecutive_skipped,
            "last_metrics": self.last_metrics,
            **({"lr_schedule": self.lr_schedule.state_dict()} if hasattr(self.lr_schedule, "state_dict") else {}),
            **({"scaler": self.scaler.state_dict()} if self.scaler.is_enabled() else {}),
        }

    def save(self) -> Path:
        """Write ``checkpoint.pt.tar`` atomically (rank 0; every rank must call this)."""
        path = self.run_dir / CHECKPOINT_NAME
        state = self.state()
        # Rank 0 writes; a failed write (disk full) reaches every rank as the same one-line error.
        distributed.run_on_main(lambda: save_checkpoint(path, state))
        self.saved_step = self.step
        return path

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Restore model, optimizer, step and RNG states from a checkpoint of this run."""
        method = self.meta.get("method")
        if method and checkpoint.get("method") not in (None, method):
            raise UserError(
                f"the checkpoint in {self.run_dir} was trained by method {checkpoint['method']!r}, not {method!r}; "
                "resume it with the script that trained it"
            )
        saved_world = int(checkpoint.get("world_size", 1))
        if saved_world != self.world_size:
            raise UserError(
                f"the run in {self.run_dir} was trained with {saved_world} processes and is resumed with "
                f"{self.world_size}; resume with torchrun --nproc_per_node/--nnodes giving {saved_world} processes "
                "(the global batch and data order depend on it)"
            )
        load_model_state(self.model, checkpoint["model"])
        kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        keep_kernel_choice(self.optimizer, kernels)
        self.step = int(checkpoint["step"])
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        self.consecutive_skipped = int(checkpoint.get("consecutive_skipped", 0))
        self.saved_step = self.step
        self.last_metrics = checkpoint.get("last_metrics", {})
        if "lr_schedule" in checkpoint and hasattr(self.lr_schedule, "load_state_dict"):
            self.lr_schedule.load_state_dict(checkpoint["lr_schedule"])
        per_rank = checkpoint.get("rng_per_rank")
        restore_rng(per_rank[self.rank] if per_rank else checkpoint["rng"])
        if self.scaler.is_enabled() and "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.resumed = True

    def checkpoint_note(self) -> str:
        """What an error that stops training leaves behind to resume from (said truthfully)."""
        path = self.run_dir / CHECKPOINT_NAME
        if self.saved_step is not None and path.is_file():
            return f"the last checkpoint ({path}, step {self.saved_step}) is untouched"
        return "no checkpoint was written yet (nothing to resume from)"

    def check_skip_bounds(self) -> None:
        """Stop a run whose --skip_nonfinite skipping exceeds its bounds: the model has diverged."""
        cfg = self.cfg
        in_a_row = bool(cfg.max_skipped_steps) and self.consecutive_skipped >= int(cfg.max_skipped_steps or 0)
        fraction, bound = self.skipped_steps / max(self.step, 1), cfg.max_skipped_fraction
        too_often = bound is not None and bound < 1 and self.step >= SKIP_FRACTION_MIN_STEPS and fraction > bound
        if not (in_a_row or too_often):
            return
        what = (f"{self.consecutive_skipped} steps in a row (bound --max_skipped_steps {cfg.max_skipped_steps})"
                if in_a_row else
                f"{self.skipped_steps} of {self.step} steps ({100 * fraction:.0f}%, bound --max_skipped_fraction "
                f"{cfg.max_skipped_fraction:g})")
        raise UserError(
            f"training diverged: --skip_nonfinite skipped {what} for a non-finite loss or gradient, up to step "
            f"{self.step}; {self.checkpoint_note()}. Lower --lr_main or --clip, or loosen the bound"
        )

    def sync_model_step(self) -> None:
        """Tell a model whose behaviour follows the training step (schedules, curricula) the
        current step: models that define ``set_step(step)`` get it before every forward pass."""
        set_step = getattr(self.model, "set_step", None)
        if callable(set_step):
            set_step(self.step)

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, visualize: bool) -> dict[str, Any]:
        assert self.val_set is not None
        self.sync_model_step()
        # Under DDP each rank scores its shard of the validation set and the metric sums and
        # counts are added over ranks (in ``evaluate``): every sample counts exactly once.
        sampler = distributed.ShardSampler(len(self.val_set)) if self.world_size > 1 else None
        workers = self.cfg.num_workers if self.cfg.eval_num_workers is None else self.cfg.eval_num_workers
        loader = make_loader(self.val_set, self.cfg.eval_batch_size, workers, sampler, self.cfg.seed, False)
        reason = no_masks_reason(self.val_set)
        if reason and not self._said_no_masks and distributed.is_main():
            log.info(f"no ARI/mBO is computed: {reason}; validation reports reconstruction only (mse, loss)")
            self._said_no_masks = True
        result = evaluate(self.model, loader, self.device, seed=self.cfg.seed, primary_masks=self.cfg.primary_masks,
                          masks_optional=reason is not None)
        metrics = result["metrics"]
        epoch = self.step // self.steps_per_epoch
        record = {"step": self.step, "epoch": epoch, **metrics}
        if "eval_protocol" in self.meta.get("args", {}):  # how COCO/VOC ground truth was built
            record["eval_protocol"] = self.meta["args"]["eval_protocol"]
        self.last_metrics = record
        if not distributed.is_main():
            return record
        self.logger.eval_record(record)
        self.logger.scalars("VAL", {k: v for k, v in metrics.items() if isinstance(v, float)}, self.step)
        if visualize:
            self.visualize(result["examples"], result.get("visuals"))
        summary = " ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k in ("fg_ari", "mbo_i", "mbo_c", "miou"))
        log.info(f"eval step {self.step} (epoch {epoch}): mse={metrics['mse']:.4f} {summary}")
        return record

    def visualize(self, examples: dict[str, torch.Tensor], visuals: dict[str, torch.Tensor] | None = None) -> None:
        viz_dir = self.run_dir / "viz"
        viz_dir.mkdir(exist_ok=True)
        rows = {k: v for k, v in examples.items() if k != "image"}
        path = viz_dir / f"step_{self.step:07d}.png"
        save_mask_grid(path, examples["image"], rows)
        from PIL import Image  # local: only needed here

        image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
        self.logger.writer.add_image("VAL/masks", image, self.step)
        if visuals and "slot_masks" in visuals:
            # Methods that decode images also get the picture of their predictions.
            path = viz_dir / f"step_{self.step:07d}_predictions.png"
            save_prediction_grid(path, examples["image"], visuals)
            image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
            self.logger.writer.add_image("VAL/predictions", image, self.step)
        visual_outputs = getattr(self.model, "visual_outputs", None)
        if visual_outputs is not None:
            # Fixed seed, forked RNG: pictures are reproducible and do not disturb training.
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.cfg.seed)
                outputs = visual_outputs(examples["image"].to(self.device))
            path = viz_dir / f"reconstructions_step_{self.step:07d}.png"
            save_reconstruction_grid(path, examples["image"], outputs["reconstructions"], outputs.get("attention"))
            image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)
            self.logger.writer.add_image("VAL/reconstructions", image, self.step)

    # --- training ------------------------------------------------------------------------------
    def _prepare_run_folder(self) -> None:
        """Rank 0: record the flags in force; forget what happened after the checkpoint (a crash may have left it)."""
        if "args" in self.meta:  # on resume: runtime flags (--epochs, ...) may have changed
            save_args(self.run_dir, self.meta["args"])
        remove_stale_temporaries(self.run_dir)
        truncate_metrics_jsonl(self.run_dir, self.step)

    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``max_steps``, a signal, ``timeout``); returns the last evaluation record."""
        cfg = self.cfg
        main = distributed.is_main()
        # TensorBoard hides what an interrupted earlier process logged after this step.
        earlier = any(self.run_dir.glob("events.out.tfevents.*"))
        self.logger = RunLogger(self.run_dir, purge_step=self.step if earlier else None) if main else None
        if main:
            self._prepare_run_folder()
        self.train_module = self.build_train_module()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        batch = (f"batch {cfg.batch_size} per process x {self.world_size} processes = global batch {self.global_batch}"
                 if self.world_size > 1 else f"batch {cfg.batch_size}")
        log.info(
            f"run folder {self.run_dir} | {len(self.train_set)} training samples, {batch}, "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps | "
            f"{sum(p.numel() for p in trainable) / 1e6:.2f}M trainable parameters on {self.device}"
        )
        stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        sampler = EpochSampler(len(self.train_set), cfg.seed, 0, 0, self.world_size, self.rank, self.global_batch)
        stopped: str | None = None
        used = self.step > 0
        self.model.train()
        try:
            with distributed.StopRequest(cfg.timeout) as stop:
                while self.step < stop_at and not stopped:
                    epoch, offset = divmod(self.step, self.steps_per_epoch)
                    sampler.set_epoch(epoch, start=offset * self.global_batch)
                    loader = make_loader(self.train_set, cfg.batch_size, cfg.num_workers, sampler, cfg.seed + epoch, True)
                    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                               disable=not main)
                    for batch_data in bar:
                        loss_terms = self.train_step(move_to(batch_data, self.device))
                        if main and not used:  # from now on the run folder holds a run, whatever happens
                            keep_run_dir(self.run_dir)
                            used = True
                        bar.set_postfix(loss=f"{loss_terms['loss']:.4f}")
                        if self.step % cfg.log_every == 0:
                            loss_terms = distributed.mean_over_ranks(loss_terms)
                            if main:
                                self.logger.scalars("TRAIN", loss_terms, self.step)
                        if self.step >= stop_at:
                            break
                        # At an epoch's end the evaluation below runs first, then the stop check.
                        if self.step % self.steps_per_epoch and (stopped := stop.should_stop()):
                            break
                        # (at an epoch's end the checkpoint below is written once)
                        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 \
                                and self.step % self.steps_per_epoch:
                            self.save()
                    bar.close()
                    last = self.step == self.total_steps
                    epoch_done = self.step % self.steps_per_epoch == 0 or last  # a step budget may end mid-epoch
                    epochs_done = self.step // self.steps_per_epoch
                    if epoch_done and self.val_set is not None:
                        if last or epochs_done % cfg.eval_every == 0:
                            record = self.evaluate(visualize=last or epochs_done % cfg.viz_every == 0)
                            if hasattr(self.lr_schedule, "observe"):
                                self.lr_schedule.observe(record)
                    path = self.save()
                    if main and epoch_done and cfg.keep_every_epochs and (
                        epochs_done % cfg.keep_every_epochs == 0 or self.step == self.total_steps
                    ):
                        keep_copy(path, self.run_dir / f"ckpt_epoch_{epochs_done}.pth")
                    if not stopped and self.step < stop_at:
                        stopped = stop.should_stop()
        finally:
            if self.logger is not None:
                self.logger.close()
        if main and self.step == self.total_steps and self.last_metrics:
            write_json(self.run_dir / METRICS_JSON, self.final_record())
        release_run_locks(self.run_dir)  # training is over: the folder is free for the next writer
        if self.skipped_steps:
            log.warning(f"{self.skipped_steps} steps were skipped for a non-finite loss or gradient (--skip_nonfinite)")
        if stopped:
            log.info(f"stopped by {stopped} at step {self.step}/{self.total_steps}; checkpoint saved, continue with "
                     f"--resume {self.run_dir}")
        else:
            log.info(f"stopped at step {self.step}/{self.total_steps}; checkpoint {self.run_dir / CHECKPOINT_NAME}")
        return self.last_metrics

    def final_record(self) -> dict[str, Any]:
        """``metrics.json``: the last evaluation, saying so when steps were skipped or metrics are not finite."""
        record = dict(self.last_metrics)
        notes = []
        if self.skipped_steps:
            record["skipped_steps"] = self.skipped_steps
            notes.append(f"{self.skipped_steps} of {self.step} training steps were skipped for a non-finite loss "
                         "or gradient (--skip_nonfinite)")
        nonfinite = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
        if nonfinite:
            notes.append(f"not finite: {', '.join(nonfinite)} (the model may have diverged)")
        if notes:
            record["warning"] = "; ".join(notes)
            log.warning(f"metrics.json: {record['warning']}")
        return record

    def build_train_module(self) -> nn.Module:
        """The module that training steps call: the model, DDP-wrapped under torchrun, compiled with
        ``--compile``. ``self.model`` stays the plain module: checkpoints hold its own keys (never
        ``_orig_mod.``), so they load with or without ``--compile``, and evaluation runs it eagerly
        (its eval-mode branches would otherwise be compiled a second time)."""
        module = distributed.wrap_model(self.model, self.device, bool(self.cfg.find_unused_parameters))
        if self.cfg.compile and self.device.type not in COMPILE_DEVICES:
            log.warning(f"--compile is not applied on {self.device.type} (no reliable gain there, see README); "
                        "training runs eagerly")
        elif self.cfg.compile:
            log.info("compiling the training forward with torch.compile (the first steps are slow)")
            module = torch.compile(module)
        return module

    def schedule_step(self) -> int:
        """The step at which to read the LR schedule.

        Entry scripts build schedules in steps of ``batch_size`` samples, as for one process
        (``len(train_set) // batch_size`` per epoch). Under DDP one step covers ``world_size`` of
        them: the step is mapped so that every epoch starts where the schedule expects it, and
        warm-up and decay keep their length in samples (exact when the training set divides
        into global batches). One process: the step itself.
        """
        if self.world_size == 1 or self.cfg.total_steps:  # step-budget recipes count optimiser steps
            return self.step
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        return epoch * (len(self.train_set) // self.cfg.batch_size) + offset * self.world_size

    def noise_keys(self) -> dict[str, torch.Tensor]:
        """``sample_seed`` [B] and ``step_seed`` (0-d) of this step: see :mod:`models.noise`.

        Rank ``r`` of ``W`` holds positions ``r, r + W, ...`` of the step's global batch (see
        :class:`EpochSampler`), so a sample gets the same key whatever the number of processes.
        """
        positions = torch.arange(self.cfg.batch_size) * self.world_size + self.rank
        return {"sample_seed": noise.sample_seeds(self.cfg.seed, self.step, positions),
                "step_seed": torch.tensor(noise.step_seed(self.cfg.seed, self.step), dtype=torch.int64)}

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step on this rank's share of the global batch."""
        groups = self.optimizer.param_groups
        lrs = self.lr_schedule(self.schedule_step())
        lrs = [float(lrs)] * len(groups) if isinstance(lrs, (int, float)) else [float(lr) for lr in lrs]
        if len(lrs) != len(groups):
            raise ValueError(f"the LR schedule gave {len(lrs)} rates for {len(groups)} parameter groups")
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self.sync_model_step()
        # Position in training, for models with schedules of their own (e.g. SPOT stage 2's CE weight),
        # and the keys of the step's random draws; the loss comes out of the DDP-wrapped forward.
        keyed_batch = {**batch, "step": self.step, "total_steps": self.total_steps, **self.noise_keys()}
        # The keys are made current here, outside a compiled forward (models/noise.py).
        with noise.keyed(keyed_batch), torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.use_amp):
            out = self.train_module(keyed_batch)
        loss = out["loss"].float()
        bad_here = not bool(torch.isfinite(loss.detach()))
        bad_loss = bad_here
        if self.world_size > 1:  # every rank must take the same decision
            bad_loss = bool(distributed.all_reduce_max(torch.tensor([float(bad_here)])) > 0)
        if bad_loss and not self.cfg.skip_nonfinite:
            value = loss.item() if bad_here else "non-finite on another process"
            raise UserError(
                f"the loss became {value} at step {self.step}; {self.checkpoint_note()}. "
                "Lower --lr_main or --clip, check the data, or pass --skip_nonfinite"
            )
        self.optimizer.zero_grad(set_to_none=True)
        # Also for a skipped step: DDP expects a backward after each training forward.
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip and step on true gradients (no-op without AMP)
        params = [p for p in self.model.parameters() if p.grad is not None]
        total_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip, norm_type=self.cfg.clip_norm_type)
        bad_grad = not bool(torch.isfinite(total_norm))  # gradients are already averaged: same on all ranks
        # float16 loss scaling overflows now and then by design: the scaler skips that step and
        # lowers its scale, so only an overflow without a scaler is an error.
        scaler_overflow = bad_grad and self.scaler.is_enabled() and not bad_loss
        if bad_grad and not bad_loss and not scaler_overflow and not self.cfg.skip_nonfinite:
            raise UserError(
                f"the gradient norm became {float(total_norm)} at step {self.step}; {self.checkpoint_note()}. "
                "Lower --lr_main or --clip, or pass --skip_nonfinite"
            )
        skipped = bad_loss or (bad_grad and not scaler_overflow)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self.consecutive_skipped += 1
            if distributed.is_main():
                log.warning(f"step {self.step}: non-finite {'loss' if bad_loss else 'gradient'}, update skipped "
                            f"({self.skipped_steps} skipped so far)")
        else:
            self.consecutive_skipped = 0
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        if skipped:
            self.check_skip_bounds()
        # Optional per-method hook after each optimiser step (e.g. an EMA teacher update).
        after_step = getattr(self.model, "after_step", None)
        if callable(after_step):
            after_step(self.step)
        terms = {k: float(v) for k, v in out["losses"].items()}
        # "lr" is the first group's rate; further groups are logged as lr_<group name or index>.
        extra_lrs = {f"lr_{group.get('name', i)}": lr for i, (group, lr) in enumerate(zip(groups, lrs)) if i > 0}
        return {"loss": float(loss.detach()), **terms, "lr": lrs[0], **extra_lrs, "grad_norm": float(total_norm),
                "skipped_steps": float(self.skipped_steps)}
