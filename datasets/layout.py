"""Checks of a dataset's on-disk layout, run once before training, and corrupt-image handling.

Every layout problem becomes one :class:`UserError` line that names the path and the fix:
missing folder or annotation file, empty split, images listed but absent (count and an
example). Images whose header cannot be read are dropped with one warning (count and an
example), or are an error with ``--strict_data``. An image that passes the header check but
fails to decode later (truncated data) is replaced by the next sample with a warning, or
raises with ``--strict_data``.
"""
from __future__ import annotations

import abc
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from datasets.transforms import IMAGE_ERRORS, CorruptImageError
from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

# Header reads are I/O bound; threads overlap the file opens even on few cores.
SCAN_THREADS = 16
MAX_SUBSTITUTIONS = 16  # consecutive corrupt samples before giving up


def require_dir(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a folder, else a UserError naming it and ``hint``."""
    if not path.is_dir():
        raise UserError(f"{what} folder {path} not found; {hint}")
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} {path} not found; {hint}")
    return path


def require_nonempty(items: Sequence[Any], what: str, hint: str) -> None:
    if len(items) == 0:
        raise UserError(f"{what} is empty; {hint}")


def check_present(paths: Sequence[str], what: str, hint: str) -> None:
    """Error if any listed file is absent, giving the count and one example path.

    Lists each folder once instead of calling ``stat`` per file (118k files in COCO train).
    """
    listings: dict[str, set[str]] = {}
    missing: list[str] = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder or "."))
            except OSError:
                listings[folder] = set()
        if name not in listings[folder]:
            missing.append(path)
    if missing:
        raise UserError(
            f"{len(missing)} of {len(paths)} {what} are listed but absent on disk (e.g. {missing[0]}); {hint}"
        )


def _header_error(path: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - opening parses the header; size proves it has one
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def scan_headers(paths: Sequence[str], strict: bool, what: str) -> np.ndarray:
    """Indices of ``paths`` whose image header PIL can read; the rest are reported.

    Without ``strict`` the unreadable ones are dropped with one warning (count, example);
    with ``strict`` they are an error before training starts.
    """
    with ThreadPoolExecutor(max_workers=SCAN_THREADS) as pool:
        errors = list(pool.map(_header_error, paths, chunksize=256))
    bad = [i for i, err in enumerate(errors) if err is not None]
    if bad:
        example = f"{paths[bad[0]]} ({errors[bad[0]]})"
        if strict:
            raise UserError(
                f"{len(bad)} of {len(paths)} {what} cannot be read (e.g. {example}); "
                "replace or delete them, or drop --strict_data to skip them"
            )
        log.warning(f"skipping {len(bad)} of {len(paths)} {what} that cannot be read (e.g. {example})")
    keep = np.ones(len(paths), dtype=bool)
    keep[bad] = False
    return np.flatnonzero(keep)


class CheckedImageDataset(Dataset, abc.ABC):
    """Base of the real-image datasets: ``_load(index)`` builds a sample; decoding failures of a
    file that passed the header scan are skipped (next sample) or raised (``strict``)."""

    strict: bool = False
    # Random view changes of the training split, named so that a frozen-feature cache knows
    # which views it would have to store (DESIGN.md); empty for evaluation splits.
    augmentation: tuple[str, ...] = ()
    # False: training samples without their random view changes (the feature cache makes each view itself).
    augment: bool = True
    _skipped: int = 0  # corrupt samples met by this process (each DataLoader worker counts its own)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abc.abstractmethod
    def _load(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as a dict; file reads go through ``transforms.decoding``, so a corrupt
        file raises :class:`CorruptImageError`."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        for attempt in range(MAX_SUBSTITUTIONS):
            current = (index + attempt) % len(self)
            try:
                sample = self._load(current)
            except CorruptImageError as err:
                if self.strict:
                    raise RuntimeError(
                        f"corrupt data in sample {current} of {type(self).__name__}: {err}; "
                        "replace the file or drop --strict_data to skip it"
                    ) from err
                self._skipped += 1
                log.warning(f"skipping corrupt sample {current} ({err}); {self._skipped} skipped in this worker")
                continue
            sample["index"] = index
            return sample
        raise RuntimeError(f"{MAX_SUBSTITUTIONS} consecutive corrupt samples from index {index}; check the dataset files")
