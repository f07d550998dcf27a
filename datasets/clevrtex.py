"""ClevrTex (Karazija et al., 2021) from its PNG folders, with an index cache.

Layout: below ``--data_path`` (at any depth, e.g. ``clevrtex_full/0/``), every scene
``CLEVRTEX_full_NNNNNN`` has three files: ``CLEVRTEX_full_NNNNNN.png`` (RGB or RGBA, 240 x 320),
``CLEVRTEX_full_NNNNNN_flat.png`` (one-channel index mask, 0 = background, objects 1..10) and
``CLEVRTEX_full_NNNNNN.json`` (metadata with an ``objects`` list).

The scenes are sorted by number and split by fraction: test [0, 0.1), val [0.1, 0.2), train
[0.2, 1.0) (5k / 5k / 40k of the 50k). ``clevrtex6`` keeps scenes with at most 6 objects
(counted from the metadata). Images get a centre crop of side ``0.8 * min(H, W)`` (192) and
bilinear resizing; masks the same crop and nearest-neighbour resizing.

Index cache: finding the scenes and reading 50k JSON files takes minutes, so the index (file
stems and object counts) is written once to ``<cache dir>/clevrtex_<variant>_<hash>.json``,
where the hash covers the data folder's absolute path and variant. It is reused while the
modification times of the indexed folders are unchanged (adding or removing files updates
them) and rebuilt otherwise. The cache dir is ``$OCL_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/object-centric-slots`` (default ``~/.cache/object-centric-slots``): never
the data folder, which may be read-only.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.transforms import centre_crop_box, crop_resize_image, crop_resize_labels, image_to_tensor
from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}
VARIANTS: tuple[str, ...] = ("full", "pbg", "vbg", "grassbg", "camo", "outd")
CROP_FRACTION: float = 0.8  # centre crop side as a fraction of the shorter image side
CACHE_VERSION: int = 1  # bump when the index format changes
CACHE_ENV: str = "OCL_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$OCL_CACHE_DIR``, else ``$XDG_CACHE_HOME/object-centric-slots``, else ``~/.cache/object-centric-slots``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "object-centric-slots"


def _scan(root: Path, variant: str) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Find every scene below ``root``: [(stem relative to root, scene number)] and folder mtimes."""
    pattern = re.compile(rf"^CLEVRTEX_{re.escape(variant)}_(\d+)\.png$")
    scenes: list[tuple[str, int]] = []
    folder_mtimes: dict[str, int] = {}
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        relative = os.path.relpath(folder, root)
        folder_mtimes[relative] = os.stat(folder).st_mtime_ns
        names = set(files)
        for name in files:
            match = pattern.match(name)
            if not match:
                continue
            stem = name[: -len(".png")]
            for suffix in ("_flat.png", ".json"):
                if stem + suffix not in names:
                    raise UserError(
                        f"{os.path.join(folder, stem + suffix)} is missing (every ClevrTex scene needs "
                        f".png, _flat.png and .json); re-extract the ClevrTex archives"
                    )
            scenes.append((os.path.normpath(os.path.join(relative, stem)), int(match.group(1))))
    scenes.sort(key=lambda scene: (scene[1], scene[0]))
    return scenes, folder_mtimes


def _count_objects(meta_path: Path) -> int:
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        return len(meta["objects"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{meta_path}: not ClevrTex metadata with an 'objects' list ({err}); re-extract the archives") from err


def build_index(root: Path, variant: str) -> dict[str, Any]:
    """Scan ``root`` and read every scene's object count (the slow part the cache saves)."""
    scenes, folder_mtimes = _scan(root, variant)
    if not scenes:
        raise UserError(
            f"no CLEVRTEX_{variant}_NNNNNN.png files below {root}; --data_path must be the extracted "
            f"ClevrTex folder (e.g. clevrtex_full/ from clevrtex_full_part*.tar.gz)"
        )
    counts = [_count_objects(root / f"{stem}.json") for stem, _ in scenes]
    return {
        "version": CACHE_VERSION,
        "root": str(root),
        "variant": variant,
        "folder_mtimes": folder_mtimes,
        "stems": [stem for stem, _ in scenes],
        "num_objects": counts,
    }


def _index_is_current(index: dict[str, Any], root: Path, variant: str) -> bool:
    if index.get("version") != CACHE_VERSION or index.get("root") != str(root) or index.get("variant") != variant:
        return False
    for relative, mtime in index["folder_mtimes"].items():
        try:
            if os.stat(root / relative).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def cache_path(root: Path, variant: str, cache_dir: Path) -> Path:
    """Cache file for one data folder and variant (the key includes the absolute path)."""
    key = hashlib.sha1(f"{root}\0{variant}\0{CACHE_VERSION}".encode()).hexdigest()[:16]
    return cache_dir / f"clevrtex_{variant}_{key}.json"


def load_index(root: Path, variant: str, cache_dir: Path | None = None) -> dict[str, Any]:
    """The scene index of ``root``, from the cache when current, else built and cached."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    path = cache_path(root, variant, cache_dir)
    if path.is_file():
        try:
            with open(path) as f:
                index = json.load(f)
            if _index_is_current(index, root, variant):
                return index
            log.info(f"ClevrTex index cache {path} is out of date; re-indexing {root}")
        except (OSError, ValueError) as err:
            log.info(f"ClevrTex index cache {path} is unreadable ({err}); re-indexing {root}")
    else:
        log.info(f"indexing ClevrTex scenes below {root} (once; cached in {path})")
    index = build_index(root, variant)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(index, f)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except OSError as err:
        log.warning(f"could not write the ClevrTex index cache {path} ({err}); set {CACHE_ENV} to a writable folder")
    return index


class ClevrTex(Dataset):
    """One split of a ClevrTex variant, optionally limited to scenes with <= ``max_objects`` objects.

    Items: ``image`` float [3, S, S] in [0, 1]; ``mask_instance`` long [M, M] (0 = background,
    ids of the ``_flat.png``); ``mask_class`` long [M, M] (1 for every object: the mask ids are
    not tied to metadata entries, so no shape class is claimed); ``mask_ignore`` bool (all
    False); ``num_objects`` (metadata count); ``index`` (scene number).
    """

    def __init__(
        self,
        data_path: str,
        split: str = "train",
        image_size: int = 128,
        mask_size: int | None = None,
        max_objects: int | None = None,
        num_samples: int | None = None,
        variant: str = "full",
        cache_dir: str | Path | None = None,
    ) -> None:
        if split not in SPLIT_FRACTIONS:
            raise UserError(f"unknown ClevrTex split {split!r}; use one of {', '.join(SPLIT_FRACTIONS)}")
        if variant not in VARIANTS:
            raise UserError(f"unknown ClevrTex variant {variant!r}; use one of {', '.join(VARIANTS)}")
        if not data_path:
            raise UserError("--data_path is required for ClevrTex: the extracted folder (e.g. clevrtex_full/)")
        root = Path(data_path).resolve()
        if not root.is_dir():
            raise UserError(f"--data_path {data_path} is not a folder; it must hold the extracted ClevrTex PNGs")
        if num_samples is not None and num_samples < 1:
            raise UserError(f"the number of samples must be >= 1, got {num_samples}")
        self.root = root
        self.split = split
        self.image_size = image_size
        self.mask_size = image_size if mask_size is None else mask_size
        index = load_index(root, variant, None if cache_dir is None else Path(cache_dir))
        total = len(index["stems"])
        low, high = SPLIT_FRACTIONS[split]
        start, stop = int(total * low), int(total * high)
        stems = index["stems"][start:stop]
        counts = index["num_objects"][start:stop]
        if max_objects is not None:
            kept = [(s, c) for s, c in zip(stems, counts) if c <= max_objects]
            stems, counts = [s for s, _ in kept], [c for _, c in kept]
        if not stems:
            limit = f" with <= {max_objects} objects" if max_objects is not None else ""
            raise UserError(f"the ClevrTex {split} split of {root} is empty ({total} scenes in all{limit})")
        if num_samples is not None:
            stems, counts = stems[:num_samples], counts[:num_samples]
        self.stems: list[str] = stems
        self.object_counts: list[int] = counts

    def __len__(self) -> int:
        return len(self.stems)

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as picture:
                if picture.mode != "RGB" and not path.name.endswith("_flat.png"):
                    picture = picture.convert("RGB")  # drops ClevrTex's alpha channel
                return np.asarray(picture)
        except OSError as err:
            raise UserError(f"cannot read {path} ({err}); re-extract the ClevrTex archives") from err

    def __getitem__(self, index: int) -> dict[str, Any]:
        stem = self.root / self.stems[index]
        image = self._read(stem.with_name(stem.name + ".png"))
        if image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"{stem}.png is not an RGB(A) image (shape {image.shape})")
        labels = self._read(stem.with_name(stem.name + "_flat.png"))
        if labels.ndim != 2 or labels.shape != image.shape[:2]:
            raise UserError(
                f"{stem}_flat.png must be a one-channel index mask of the image's size "
                f"{image.shape[:2]}, got shape {labels.shape}"
            )
        height, width = labels.shape
        box = centre_crop_box(height, width, int(CROP_FRACTION * min(height, width)))
        labels = crop_resize_labels(labels, box, self.mask_size).astype(np.int64)
        scene_number = int(stem.name.rsplit("_", 1)[1])
        top, bottom, left, right = box
        return {
            "image": crop_resize_image(image_to_tensor(image[top:bottom, left:right]), None, self.image_size, "bilinear"),
            "mask_instance": torch.from_numpy(labels),
            "mask_class": torch.from_numpy((labels > 0).astype(np.int64)),
            "mask_ignore": torch.from_numpy(np.zeros(labels.shape, dtype=bool)),
            "num_objects": self.object_counts[index],
            "index": scene_number,
        }
