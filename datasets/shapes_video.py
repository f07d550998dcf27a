"""Synthetic video variant of ``shapes``: the same scenes with objects moving over frames.

Frame 0 is a ``shapes`` layout (every object visible); each object then moves with its own
constant velocity, bouncing off the image borders, and objects drawn later occlude earlier ones
(painter's order), so occlusions appear and disappear over time. Instance ids are the same in
every frame (id k = k-th object), so per-frame masks give ground-truth tracks. Every clip is a
pure function of ``(seed, split, index)``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.shapes import (
    DEFAULT_NUM_SAMPLES,
    LIGHT_BACKGROUND_PROB,
    SPLIT_CODES,
    _Object,
    _render_labels,
    _sample_background,
    _sample_layout,
    _sample_object_colours,
    render_image,
)
from ground.errors import UserError

# Speed of every object, as a fraction of the image side per frame.
SPEED_RANGE: tuple[float, float] = (0.02, 0.06)
VIDEO_SEED_TAG = 7  # separates the video stream of random numbers from the image dataset's


def _bounce(position: float, low: float, high: float) -> float:
    """Fold a free 1-D position into [low, high] by reflecting at both ends."""
    span = high - low
    if span <= 0:
        return low
    t = (position - low) % (2 * span)
    return low + (t if t <= span else 2 * span - t)


def _object_at(obj: _Object, velocity: np.ndarray, frame: int) -> _Object:
    margin = obj.radius * 0.8
    cx = _bounce(obj.cx + velocity[0] * frame, margin, 1.0 - margin)
    cy = _bounce(obj.cy + velocity[1] * frame, margin, 1.0 - margin)
    return replace(obj, cx=cx, cy=cy)


def generate_clip(
    index: int,
    split: str = "train",
    num_frames: int = 4,
    image_size: int = 64,
    mask_size: int | None = None,
    min_objects: int = 2,
    max_objects: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Render one clip: ``video`` float32 (T, 3, S, S) in [0, 1], ``mask_instance`` int64 (T, M, M)."""
    mask_size = image_size if mask_size is None else mask_size
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index, VIDEO_SEED_TAG])
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    light = bool(rng.uniform() < LIGHT_BACKGROUND_PROB)
    background = _sample_background(rng, light)
    objects, _ = _sample_layout(rng, num_objects, mask_size)
    colours = _sample_object_colours(rng, num_objects, [background.colour0, background.colour1], light)
    angles = rng.uniform(0.0, 2 * np.pi, size=num_objects)
    speeds = rng.uniform(*SPEED_RANGE, size=num_objects)
    velocities = np.stack([np.cos(angles), np.sin(angles)], axis=1) * speeds[:, None]
    frames, masks = [], []
    for t in range(num_frames):
        moved = [_object_at(o, v, t) for o, v in zip(objects, velocities)]
        frames.append(render_image(moved, colours, background, image_size))
        masks.append(_render_labels(moved, mask_size).astype(np.int64))
    return {"video": np.stack(frames), "mask_instance": np.stack(masks), "num_objects": num_objects}


class ShapesVideoDataset(Dataset):
    """Moving-shapes clips: ``video`` float (T, 3, S, S), ``mask_instance`` long (T, M, M)
    (0 = background, ids constant over time), ``mask_ignore`` bool (T, M, M) all False,
    ``num_objects`` and ``index``."""

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        num_frames: int = 4,
        image_size: int = 64,
        mask_size: int | None = None,
        min_objects: int = 2,
        max_objects: int = 4,
        seed: int = 0,
    ) -> None:
        if split not in SPLIT_CODES:
            raise UserError(f"unknown shapes_video split {split!r}; use one of {sorted(SPLIT_CODES)}")
        if num_frames < 1:
            raise UserError(f"--num_frames must be >= 1, got {num_frames}")
        if not 1 <= min_objects <= max_objects:
            raise UserError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.split, self.num_frames, self.seed = split, num_frames, seed
        self.image_size = image_size
        self.mask_size = image_size if mask_size is None else mask_size
        self.min_objects, self.max_objects = min_objects, max_objects
        self.num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} clips")
        clip = generate_clip(index, self.split, self.num_frames, self.image_size, self.mask_size,
                             self.min_objects, self.max_objects, self.seed)
        masks = torch.from_numpy(clip["mask_instance"])
        return {
            "video": torch.from_numpy(clip["video"]),
            "mask_instance": masks,
            "mask_ignore": torch.zeros(masks.shape, dtype=torch.bool),
            "num_objects": clip["num_objects"],
            "index": index,
        }
