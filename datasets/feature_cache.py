"""Frozen-feature cache: a frozen encoder's training-set tokens, computed once, read by training.

For models whose encoder is frozen (DINOSAUR, SPOT stage 1, AdaSlot stages 1 and 2) the encoder
forward of every training step can be replaced by a read. ``scripts/cache_features.py`` writes a
cache folder; ``--cache_features DIR`` on ``train_spot.py`` / ``train_adaslot.py`` trains from it:

    DIR/metadata.json   what the features are (encoder identity and weights checksum, image
                        size, token grid, dataset identity, views, sample count, format version)
    DIR/train.npy       float16 [N, V, T, D]: N samples, V views (``identity``, ``hflip``, as the
                        training loader draws them), T tokens, D channels; read as a memmap

A cache is written into a temporary sibling folder and renamed into place when complete, so a
folder at DIR is a finished cache; a missing or short file is refused as incomplete. Training
batches from a cache hold ``features`` (float16 [B, T, D]) instead of ``image``; the view of
each sample is drawn exactly as the image loader draws its flip (``augmentation_rng``), so with
the same seed a run from the cache sees the same views in the same order as a run from images.
Validation keeps using images (it needs the masks).

This module holds the format (writer, reader, datasets); encoding with a model, the flags and the
checks against them are in :mod:`utils.feature_cache`.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.transforms import HFLIP_PROB, augmentation_rng
from ground.errors import UserError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SPLIT_FILE = "{split}.npy"
# Views a cache can hold, named after the loaders' ``augmentation`` entries.
CACHEABLE_AUGMENTATION = ("hflip",)


# --------------------------------------------------------------------------- identity


def train_augmentation(dataset: str) -> tuple[str, ...]:
    """The random view changes the training split of ``dataset`` applies (its loader's declaration)."""
    from datasets import canonical_name

    name = canonical_name(dataset)
    if name == "coco":
        from datasets.coco import CocoDataset

        return CocoDataset.train_augmentation
    if name == "voc":
        from datasets.voc import VocDataset

        return VocDataset.train_augmentation
    return ()  # shapes, MOVi and the pixel datasets train on fixed views


def train_views(dataset: str) -> list[str]:
    """The views of each training image a cache must hold, or a ``UserError`` if it cannot."""
    augmentation = train_augmentation(dataset)
    other = [a for a in augmentation if a not in CACHEABLE_AUGMENTATION]
    if other:
        raise UserError(f"--dataset {dataset} trains with {'+'.join(augmentation)}: {', '.join(other)} draws from "
                        "too many views to cache; train it from images, without a feature cache")
    return ["identity", *augmentation]


# --------------------------------------------------------------------------- writing


def _temporary_sibling(target: Path) -> Path:
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def _remove_stale_partials(target: Path) -> None:
    """Delete temporary folders of ``target`` left by writers that were killed (their process is gone)."""
    for folder in target.parent.glob(f".{target.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class CacheWriter:
    """Writes a cache folder: rows of float16 features into a temporary memmap, then
    ``finish(metadata)`` writes the metadata and renames the folder into place.

    Nothing appears at ``target`` before ``finish``; ``abort`` (or an exception in a ``with``
    block) removes the temporary folder.
    """

    def __init__(self, target: str | Path, shape: tuple[int, int, int, int], overwrite: bool = False) -> None:
        self.target = Path(target)
        if self.target.exists() and not overwrite:
            raise UserError(f"{self.target} already exists; pass --overwrite to replace it, or choose another folder")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.target)
        self.tmp = _temporary_sibling(self.target)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.shape = shape
        self.file = SPLIT_FILE.format(split="train")
        self.array = np.lib.format.open_memmap(self.tmp / self.file, mode="w+", dtype=np.float16, shape=shape)

    def write(self, start: int, view: int, features: torch.Tensor) -> None:
        """Rows ``start..start+B`` of view ``view`` from features [B, T, D]."""
        rows = features.detach().to("cpu", torch.float16).numpy()
        self.array[start : start + len(rows), view] = rows

    def finish(self, metadata: dict[str, Any]) -> Path:
        self.array.flush()
        del self.array
        meta = {**metadata, "format_version": FORMAT_VERSION, "dtype": "float16", "shape": list(self.shape),
                "files": {"train": self.file}, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (self.tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if self.target.exists():  # --overwrite: the old cache goes only once the new one is complete
            shutil.rmtree(self.target)
        os.replace(self.tmp, self.target)
        return self.target

    def abort(self) -> None:
        self.__dict__.pop("array", None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self.abort()


# --------------------------------------------------------------------------- reading


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The metadata of a complete cache folder; a missing or incomplete one is a ``UserError``."""
    root = Path(directory)
    fix = "write it with scripts/cache_features.py (same data and encoder flags as training)"
    if not root.is_dir():
        raise UserError(f"feature cache {root} not found; {fix}")
    meta_file = root / METADATA_FILE
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise UserError(f"feature cache {root} is incomplete (no {METADATA_FILE}); {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"feature cache {root} has an unreadable {METADATA_FILE} ({err}); {fix}") from err
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"feature cache {root} has format version {meta.get('format_version')}, this code reads "
                        f"{FORMAT_VERSION}; {fix}")
    path = root / meta["files"]["train"]
    try:
        array = np.load(path, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UserError(f"feature cache {root} is incomplete ({path.name}: {err}); {fix}") from err
    if list(array.shape) != meta["shape"] or array.dtype != np.float16:
        raise UserError(f"feature cache {root} is incomplete ({path.name} holds {array.dtype} {list(array.shape)}, "
                        f"the metadata says float16 {meta['shape']}); {fix}")
    return meta


class CachedFeatures(Dataset):
    """Training samples from a cache folder: ``{"features": float16 [T, D], "index": i}``.

    The view of sample ``i`` is drawn as the image loader draws its flip: ``augmentation_rng(i)``
    then one uniform number against ``HFLIP_PROB``, so the global RNG (``--num_workers 0``) or
    the worker seed is consumed exactly as by a run from images. ``num_samples`` keeps the
    first N cached samples (``--train_samples``).
    """

    def __init__(self, directory: str | Path, meta: dict[str, Any] | None = None, num_samples: int | None = None) -> None:
        self.root = Path(directory)
        self.meta = read_metadata(self.root) if meta is None else meta
        self.path = self.root / self.meta["files"]["train"]
        total = int(self.meta["num_samples"])
        self.num_samples = total if num_samples is None else min(num_samples, total)
        self.views = list(self.meta["views"])
        self._array: np.ndarray | None = None
        self._pid: int | None = None

    def _features(self) -> np.ndarray:
        # Opened lazily and once per process, so DataLoader workers map the file themselves.
        if self._array is None or self._pid != os.getpid():
            self._array = np.load(self.path, mmap_mode="r")
            self._pid = os.getpid()
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"], state["_pid"] = None, None  # spawned workers reopen the file
        return state

    def __len__(self) -> int:
        return self.num_samples

    def view_index(self, index: int) -> int:
        if len(self.views) == 1:
            return 0  # identity only: the image loader draws nothing either
        flip = float(augmentation_rng(index).random()) < HFLIP_PROB
        return self.views.index("hflip") if flip else 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} cached samples")
        rows = np.array(self._features()[index, self.view_index(index)])  # copy out of the memmap
        return {"features": torch.from_numpy(rows), "index": index}

    @property
    def bytes_per_sample(self) -> int:
        return int(np.prod(self.meta["shape"][1:])) * 2


class ImagesWithCachedTargets(Dataset):
    """Training images with their frozen target features from a cache (FT-DINOSAUR's ``--cache_features``).

    Items are ``{"image": [3, H, W], "target_features": float16 [T, D]}``. The images are loaded
    without the loader's own flip; the view is drawn here once per sample (exactly as
    :class:`CachedFeatures` draws it), and both the image and the cached row follow it.
    """

    def __init__(self, images: Dataset, cache: CachedFeatures) -> None:
        if len(images) != len(cache):  # type: ignore[arg-type]
            raise UserError(f"the feature cache {cache.root} holds {len(cache)} samples, the training set has "
                            f"{len(images)}; rewrite the cache with the training flags")  # type: ignore[arg-type]
        base = getattr(images, "dataset", images)  # limit() wraps the set in a Subset
        if tuple(getattr(base, "augmentation", ())) != tuple(cache.views[1:]):
            raise AssertionError(f"{type(base).__name__} declares {getattr(base, 'augmentation', ())}, the cache "
                                 f"holds {cache.views}")
        if cache.views[1:]:
            base.augment = False  # identity images; the view is chosen below
        self.images, self.cache = images, cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        item = dict(self.images[index])
        view = self.cache.view_index(index)
        rows = np.array(self.cache._features()[index, view])  # noqa: SLF001 - the same reader, one draw
        if self.cache.views[view] == "hflip":
            item["image"] = item["image"].flip(-1)
        item["target_features"] = torch.from_numpy(rows)
        return item
