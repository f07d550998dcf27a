"""MOVi-C / MOVi-E (docs/data.md#real-datasets) in the PNG layout of SPOT's download script.

Layout under ``--data_path`` (one level, e.g. ``MOVi/c`` or ``MOVi/e``; written by
``scripts/download_movi.py``)::

    train/<video:08d>/<frame:08d>_image.png
    validation/<video:08d>/<frame:08d>_image.png, <frame:08d>_mask_<id:02d>.png  (id 0 = background)

Training (split ``train``) uses 9 frames per video, drawn without replacement from a
generator seeded by ``(seed, video name)``, so the choice is reproducible and independent of
which other videos exist. The chosen frames are written to ``train_movi_paths.json`` in the
run folder; any script can reuse them with ``--predefined_movi_json_paths`` (SPOT's stage 2
does). Such a file may also be SPOT's own list of frame paths.

Evaluation (split ``val``, the ``validation`` folder) uses every frame. Images are resized to
``image_size`` (bicubic) without augmentation. ``mask_instance`` is id ``n`` where binary mask
``n >= 1`` is on (nearest resize to ``mask_size``); ``mask_class`` is all zeros (MOVi has no
semantic classes here); ``mask_ignore`` marks pixels claimed by two masks (none in MOVi).
"""
from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets.layout import CheckedImageDataset, check_present, require_dir, require_nonempty, scan_headers
from datasets.transforms import bool_to_tensor, crop_view, decoding, label_window, labels_to_tensor, load_short_side
from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

FRAMES_PER_VIDEO = 9  # of 24, per video, for training (SPOT, OCLF)
SAMPLING_FILE = "train_movi_paths.json"
SPLIT_FOLDERS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
IMAGE_RE = re.compile(r"^(\d+)_image\.png$")
MASK_RE = re.compile(r"^(\d+)_mask_(\d+)\.png$")
LAYOUT_HINT = (
    "--data_path must be one MOVi level folder (e.g. MOVi/c) holding train/ and validation/ with "
    "<video>/<frame>_image.png (and <frame>_mask_<id>.png for validation), as scripts/download_movi.py writes"
)


def _video_rng(seed: int, video: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(video.encode())])


def sample_frames(frames: list[str], video: str, seed: int, count: int = FRAMES_PER_VIDEO) -> list[str]:
    """``count`` of a video's frame names (all if it has fewer), in frame order."""
    if len(frames) <= count:
        return sorted(frames)
    chosen = _video_rng(seed, video).choice(len(frames), size=count, replace=False)
    ordered = sorted(frames)
    return [ordered[i] for i in sorted(chosen)]


def read_sampling(path: str | Path, split_dir: Path) -> list[str]:
    """Frame paths (relative to ``split_dir``) from a ``train_movi_paths.json``.

    Accepts this project's file (a dict with ``frames`` relative to the split folder) and
    SPOT's (a list of frame paths, absolute or ending in ``<video>/<frame>_image.png``).
    """
    hint = f"--predefined_movi_json_paths must be a {SAMPLING_FILE} written by a training run"
    source = Path(path)
    if not source.is_file():
        raise UserError(f"{source} not found; {hint}")
    try:
        data = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"cannot parse {source} ({err}); {hint}") from err
    entries = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise UserError(f"{source} holds no list of frame paths; {hint}")
    require_nonempty(entries, f"the frame list {source}", hint)
    # The last two components (<video>/<frame>) locate a frame in this split folder, so a list
    # written on another machine (absolute paths) still works.
    return [str(Path(*Path(e).parts[-2:])) for e in entries]


def write_sampling(path: Path, frames: list[str], split_dir: Path, seed: int | None, source: str | None) -> None:
    """Record the training frames in a run folder (atomically: temp file + rename)."""
    record = {
        "dataset": "movi",
        "split_dir": str(split_dir.resolve()),
        "seed": seed,
        "frames_per_video": FRAMES_PER_VIDEO,
        "source": source,
        "frames": frames,
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # distributed ranks write the same file
    tmp.write_text(json.dumps(record, indent=0))
    os.replace(tmp, path)


def _list_videos(split_dir: Path) -> dict[str, list[str]]:
    """Video name -> file names in its folder, for every video folder of a split."""
    videos = {}
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.is_dir():
            videos[entry.name] = os.listdir(entry.path)
    return videos


class MoviDataset(CheckedImageDataset):
    """MOVi frames: ``train`` (9 sampled frames per video, images only) or ``val`` (all frames, masks)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int,
        mask_size: int = 128,
        seed: int = 0,
        strict: bool = False,
        predefined_paths: str | Path | None = None,
        run_dir: str | Path | None = None,
    ) -> None:
        if split not in SPLIT_FOLDERS:
            raise UserError(f"MOVi has splits train, val, test, not {split!r}")
        self.split, self.image_size, self.mask_size, self.strict = split, image_size, mask_size, strict
        self.training = split == "train"
        root = require_dir(Path(root), "MOVi", LAYOUT_HINT)
        split_dir = root / SPLIT_FOLDERS[split]
        if not split_dir.is_dir():
            levels = [p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()] if root.is_dir() else []
            where = f"; point --data_path at one level: {', '.join(str(root / lv) for lv in levels)}" if levels else ""
            raise UserError(f"MOVi {split} folder {split_dir} not found{where}; {LAYOUT_HINT}")
        self.split_dir = split_dir
        if self.training and predefined_paths:
            frames = read_sampling(predefined_paths, split_dir)
            source = str(predefined_paths)
        else:
            frames, source = self._index(_list_videos(split_dir), seed), None
        require_nonempty(frames, f"MOVi {split} ({split_dir})", LAYOUT_HINT)
        paths = [str(split_dir / f) for f in frames]
        check_present(paths, f"MOVi {split} frames", f"is {split_dir} complete? ({LAYOUT_HINT})")
        keep = scan_headers(paths, strict, f"MOVi {split} frames")
        require_nonempty(keep, f"MOVi {split} (no readable frame)", LAYOUT_HINT)
        self.frames = np.asarray(frames)[keep]
        if self.training and run_dir is not None:
            write_sampling(Path(run_dir) / SAMPLING_FILE, self.frames.tolist(), split_dir, None if source else seed, source)

    def _index(self, videos: dict[str, list[str]], seed: int) -> list[str]:
        """Frame paths (``<video>/<frame>_image.png``); for evaluation also the mask ids per frame."""
        frames: list[str] = []
        mask_ids: list[np.ndarray] = []
        missing: list[str] = []
        for video, names in videos.items():
            images = [n for n in names if IMAGE_RE.match(n)]
            if self.training:
                frames += [f"{video}/{n}" for n in sample_frames(images, video, seed)]
                continue
            masks: dict[str, list[int]] = {}
            for name in names:
                match = MASK_RE.match(name)
                if match:
                    masks.setdefault(match.group(1), []).append(int(match.group(2)))
            for name in sorted(images):
                frame = IMAGE_RE.match(name).group(1)  # type: ignore[union-attr]
                if frame not in masks:
                    missing.append(f"{self.split_dir / video / frame}_mask_00.png")
                frames.append(f"{video}/{name}")
                mask_ids.append(np.asarray(sorted(i for i in masks.get(frame, []) if i > 0), dtype=np.int64))
        if missing:
            raise UserError(
                f"{len(missing)} MOVi {self.split} frames have no mask PNGs (e.g. {missing[0]}); "
                "export the evaluation split with its masks (scripts/download_movi.py --split validation)"
            )
        self._mask_ids = dict(zip(frames, mask_ids))
        return frames

    def __len__(self) -> int:
        return len(self.frames)

    def _load(self, index: int) -> dict[str, Any]:
        frame = str(self.frames[index])
        image, _ = load_short_side(self.split_dir / frame, self.image_size, Image.Resampling.BICUBIC)
        sample = {"image": crop_view(image, self.image_size)}
        if self.training:
            return sample
        stem = frame[: -len("_image.png")]
        size = (self.mask_size, self.mask_size)
        instance = np.zeros(size, dtype=np.int64)
        covered = np.zeros(size, dtype=np.uint8)
        window = None
        for object_id in self._mask_ids[frame]:
            path = self.split_dir / f"{stem}_mask_{object_id:02d}.png"
            with decoding(path), Image.open(path) as mask_image:
                on = np.asarray(mask_image.convert("L")) > 127
            if window is None:
                window = np.ix_(*label_window(on.shape[0], on.shape[1], self.mask_size))
            on = on[window]
            covered += on
            instance[on] = object_id
        sample["mask_instance"] = labels_to_tensor(instance)
        sample["mask_class"] = labels_to_tensor(np.zeros(size, dtype=np.int64))
        sample["mask_ignore"] = bool_to_tensor(covered >= 2)
        return sample
