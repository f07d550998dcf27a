"""The one training loop shared by every method.

A method provides a model whose ``forward(batch)`` returns a dict with ``loss`` (scalar to
minimise), ``losses`` (detached scalars to log) and ``masks`` (dict of [B, K, h, w] soft masks).
The loop handles the LR schedule per step, gradient clipping, periodic evaluation and mask
visualisations, TensorBoard and ``metrics.jsonl``, atomic checkpoints and exact resume.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from utils.checkpoint import CHECKPOINT_NAME, load_model_state, model_state, save_checkpoint
from utils.errors import UserError
from utils.evaluation import evaluate, move_to
from utils.logging import METRICS_JSON, RunLogger, get_logger, write_json
from utils.visualize import save_mask_grid, save_prediction_grid

log = get_logger()


class EpochSampler(Sampler[int]):
    """A random order that depends only on (seed, epoch), optionally starting mid-epoch.

    Resuming at step s of an epoch skips the first ``s * batch_size`` indices without loading
    them, so a resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, num_samples: int, seed: int, epoch: int, start: int = 0) -> None:
        self.num_samples, self.seed, self.epoch, self.start = num_samples, seed, epoch, start

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=generator)[self.start :].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order())

    def __len__(self) -> int:
        return self.num_samples - self.start


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


def capture_rng() -> dict[str, Any]:
    """Every RNG state that training draws from."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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


class Trainer:
    """Runs ``model`` on ``train_set`` for ``cfg.epochs`` epochs, writing into ``run_dir``.

    ``checkpoint_meta`` (method name, model config, encoder identity, args) is stored in every
    checkpoint so that evaluation can rebuild the model without retyping flags.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_schedule: Callable[[int], float],
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
        self.steps_per_epoch = len(train_set) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the training set has {len(train_set)} samples, fewer than one batch of {cfg.batch_size}; "
                "lower --batch_size"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.step = 0
        self.last_metrics: dict[str, Any] = {}

    # --- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            **self.meta,
            "model": model_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": capture_rng(),
            "last_metrics": self.last_metrics,
        }

    def save(self) -> Path:
        path = self.run_dir / CHECKPOINT_NAME
        save_checkpoint(path, self.state())
        return path

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Restore model, optimizer, step and RNG states from a checkpoint of this run."""
        load_model_state(self.model, checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = int(checkpoint["step"])
        self.last_metrics = checkpoint.get("last_metrics", {})
        restore_rng(checkpoint["rng"])

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, visualize: bool) -> dict[str, Any]:
        assert self.val_set is not None
        loader = make_loader(self.val_set, self.cfg.eval_batch_size, self.cfg.num_workers, None, self.cfg.seed, False)
        result = evaluate(self.model, loader, self.device, seed=self.cfg.seed, primary_masks=self.cfg.primary_masks)
        metrics = result["metrics"]
        epoch = self.step // self.steps_per_epoch
        record = {"step": self.step, "epoch": epoch, **metrics}
        self.logger.eval_record(record)
        self.logger.scalars("VAL", {k: v for k, v in metrics.items() if isinstance(v, float)}, self.step)
        if visualize:
            self.visualize(result["examples"], result.get("visuals"))
        summary = " ".join(f"{k}={v:.2f}" for k, v in metrics.items() if k in ("fg_ari", "mbo_i", "mbo_c", "miou"))
        log.info(f"eval step {self.step} (epoch {epoch}): mse={metrics['mse']:.4f} {summary}")
        self.last_metrics = record
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

    # --- training ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the end (or ``max_steps``); returns the last evaluation record."""
        cfg = self.cfg
        self.logger = RunLogger(self.run_dir)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        log.info(
            f"run folder {self.run_dir} | {len(self.train_set)} training samples, batch {cfg.batch_size}, "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps | "
            f"{sum(p.numel() for p in trainable) / 1e6:.2f}M trainable parameters on {self.device}"
        )
        stop_at = min(self.total_steps, cfg.max_steps) if cfg.max_steps else self.total_steps
        self.model.train()
        try:
            while self.step < stop_at:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                sampler = EpochSampler(len(self.train_set), cfg.seed, epoch, start=offset * cfg.batch_size)
                loader = make_loader(self.train_set, cfg.batch_size, cfg.num_workers, sampler, cfg.seed + epoch, True)
                bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
                for batch in bar:
                    loss_terms = self.train_step(move_to(batch, self.device))
                    bar.set_postfix(loss=f"{loss_terms['loss']:.4f}")
                    if self.step % cfg.log_every == 0:
                        self.logger.scalars("TRAIN", loss_terms, self.step)
                    if self.step >= stop_at:
                        break
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        self.save()
                bar.close()
                epoch_done = self.step % self.steps_per_epoch == 0
                epochs_done = self.step // self.steps_per_epoch
                if epoch_done and self.val_set is not None:
                    last = self.step == self.total_steps
                    if last or epochs_done % cfg.eval_every == 0:
                        self.evaluate(visualize=last or epochs_done % cfg.viz_every == 0)
                self.save()
        finally:
            self.logger.close()
        if self.step == self.total_steps and self.last_metrics:
            write_json(self.run_dir / METRICS_JSON, self.last_metrics)
        log.info(f"stopped at step {self.step}/{self.total_steps}; checkpoint {self.run_dir / CHECKPOINT_NAME}")
        return self.last_metrics

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        lr = self.lr_schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self.model(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise UserError(
                f"the loss became {loss.item()} at step {self.step}; the last good checkpoint in "
                f"{self.run_dir} is untouched. Lower --lr_main or --clip, or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        total_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.clip, norm_type=self.cfg.clip_norm_type)
        self.optimizer.step()
        self.step += 1
        terms = {k: float(v) for k, v in out["losses"].items()}
        return {"loss": float(loss.detach()), **terms, "lr": lr, "grad_norm": float(total_norm)}
