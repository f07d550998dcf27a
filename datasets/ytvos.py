"""YouTube-VOS training clips for self-supervised video training (SMTC, docs/methods/smtc.md).

Layout: ``<basepath>/JPEGImages/<video>/<frame>.jpg`` where ``basepath`` is the split folder
(e.g. ``YTVOS/train``); annotations are never read. A clip is ``num_frames`` frames at offsets
``(k - T//2) * gap`` around a centre frame drawn uniformly from the valid range; a video too short
for ``gap`` is sampled with ``gap - 1`` (as the original does). Unlike the original, videos too
short even for ``gap - 1`` are reported before training instead of crashing mid-run, and clip
choice is a pure function of ``(seed, index)`` so runs are reproducible. Frames are resized to
``image_size`` x ``image_size`` (aspect not kept, no crop or flip, as the original).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ground.errors import UserError

DEFAULT_NUM_CLIPS = 10000  # the original's constant dataset length


def clip_span(num_frames: int, gap: int) -> int:
    """Frames a clip needs: the centre must lie in [gap*(T//2), len - gap*(T//2) - 1]."""
    return 2 * gap * (num_frames // 2) + 1


def clip_indices(num_video_frames: int, num_frames: int, gap: int, rng: np.random.Generator) -> list[int]:
    """Frame indices of one clip from a video of ``num_video_frames`` frames.

    Raises ``ValueError`` when the video is too short even with ``gap - 1``.
    """
    for g in (gap, gap - 1):
        half = g * (num_frames // 2)
        if g >= 0 and num_video_frames - half - 1 >= half:
            centre = int(rng.integers(half, num_video_frames - half))  # inclusive upper bound - 1
            return [centre + (k - num_frames // 2) * g for k in range(num_frames)]
    raise ValueError(
        f"a video of {num_video_frames} frames is too short for {num_frames} frames at gap {gap} "
        f"(needs {clip_span(num_frames, max(gap - 1, 0))})"
    )


def _load_frame(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


class YtvosClips(Dataset):
    """Random clips of YouTube-VOS training videos: ``video`` float (T, 3, S, S) in [0, 1]."""

    def __init__(
        self,
        basepath: str,
        num_frames: int = 4,
        gap: int = 4,
        image_size: int = 256,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(basepath) / "JPEGImages"
        if not root.is_dir():
            raise UserError(
                f"{root} not found: --basepath must be the YouTube-VOS split folder holding "
                "JPEGImages/<video>/<frame>.jpg (e.g. YTVOS/train)"
            )
        if num_frames < 1 or gap < 1:
            raise UserError(f"--num_frames and --gap must be >= 1, got {num_frames} and {gap}")
        self.videos: list[tuple[str, list[Path]]] = []
        short = []
        for video in sorted(p for p in root.iterdir() if p.is_dir()):
            frames = sorted(video.glob("*.jpg"))
            if len(frames) < clip_span(num_frames, gap - 1):
                short.append(f"{video.name} ({len(frames)} frames)")
            self.videos.append((video.name, frames))
        if not self.videos:
            raise UserError(f"no video folders under {root}")
        if short:
            shown = ", ".join(short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
            raise UserError(
                f"{len(short)} video(s) too short for --num_frames {num_frames} --gap {gap} "
                f"(need >= {clip_span(num_frames, gap - 1)} frames): {shown}; lower --gap or --num_frames"
            )
        self.num_frames, self.gap, self.image_size, self.seed = num_frames, gap, image_size, seed
        self.num_samples = DEFAULT_NUM_CLIPS if num_samples is None else num_samples

    def __len__(self) -> int:
        return self.num_samples

    def clip(self, index: int) -> tuple[int, list[int]]:
        """The video number and frame indices of clip ``index`` (uniform over videos)."""
        rng = np.random.default_rng([self.seed, int(index)])
        video = int(rng.integers(len(self.videos)))
        return video, clip_indices(len(self.videos[video][1]), self.num_frames, self.gap, rng)

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, ids = self.clip(index)
        name, frames = self.videos[video]
        clip = np.stack([_load_frame(frames[i], self.image_size) for i in ids])
        return {"video": torch.from_numpy(clip), "index": int(index), "video_name": name}
