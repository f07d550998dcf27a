"""Shared reading of video datasets stored as folders of frames (SegTrack-v2, FBMS-59, JHMDB, VIP).

The classes here expose the interface of :class:`datasets.davis.DavisSequences` that the
evaluation pipelines use: ``sequences`` (evaluation order), ``frame_names(seq)`` and
``load_frames(seq)``. Nothing is ever written into a dataset folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

FRAME_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp")
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".pgm", ".jpg")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``frame2`` before ``frame10``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def list_files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """Files of ``folder`` with one of ``extensions`` (case-insensitive), keyed by stem, in natural
    order. Two files with the same stem are an error (the pairing by name would be ambiguous)."""
    files: dict[str, Path] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
        if path.is_file() and path.suffix.lower() in extensions:
            if path.stem in files:
                raise UserError(f"{files[path.stem].name} and {path.name} in {folder} share a frame name; keep one")
            files[path.stem] = path
    return dict(sorted(files.items(), key=lambda kv: natural_key(kv[0])))


def read_rgb(path: Path) -> np.ndarray:
    """RGB image float32 [3, H, W] in [0, 1] (alpha dropped, greyscale expanded)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except OSError as err:
        raise UserError(f"cannot read frame {path}: {err}") from None


def stack_frames(paths: list[Path]) -> np.ndarray:
    """Frames [T, 3, H, W] of one video; all frames of a video must share one size."""
    frames = [read_rgb(p) for p in paths]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise UserError(f"frames of {paths[0].parent} differ in size ({sorted(sizes)}); a video must have one size")
    return np.stack(frames)


def read_foreground(path: Path) -> np.ndarray:
    """Binary foreground [H, W] of a mask image: grey level > 127 (any channel converted to grey);
    a mask stored with values 0/1 counts every non-zero pixel."""
    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
            return grey > (0 if grey.max(initial=0) <= 1 else 127)
    except OSError as err:
        raise UserError(f"cannot read mask {path}: {err}") from None


def read_label_ids(path: Path) -> np.ndarray:
    """Class ids [H, W] of a single-channel (L or palette) label PNG; colour images are refused."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16"):
                raise UserError(f"{path} is a {img.mode} image; class-id maps must be single-channel PNGs")
            return np.asarray(img).astype(np.int64)
    except OSError as err:
        raise UserError(f"cannot read label map {path}: {err}") from None


class ForegroundSequences:
    """Videos with binary foreground annotations on some or all frames (unsupervised discovery).

    ``image_dir/<seq>/<frame>.<ext>`` are the frames; ``gt_dir/<seq>/`` holds one mask per
    annotated frame, or (several objects) per-object sub-folders ``1/``, ``2/``, ... whose masks
    are merged into one foreground (their union). A mask is paired with the frame of the same
    name; see :meth:`_pair` for the fallback to file order.
    """

    dataset = "video"
    hint = ""

    def __init__(self, image_dir: Path, gt_dir: Path, sequences: list[str]) -> None:
        self.image_dir, self.gt_dir = image_dir, gt_dir
        self.sequences = sequences
        self._frames: dict[str, dict[str, Path]] = {}
        self._gt: dict[str, dict[str, list[Path]]] = {}
        for seq in sequences:
            frames = list_files(image_dir / seq, FRAME_EXTENSIONS)
            if not frames:
                raise UserError(f"no frames ({'/'.join(FRAME_EXTENSIONS)}) in {image_dir / seq}; {self.hint}")
            self._frames[seq] = frames
            self._gt[seq] = self._pair(seq, list(frames))

    def _pair(self, seq: str, frame_names: list[str]) -> dict[str, list[Path]]:
        """Frame name -> the mask files (one per object folder) annotating it.

        Masks pair with frames by name. When a mask folder's names do not match the frame names
        but it has exactly one mask per frame, it is paired by sorted order (what the usual
        SegTrack-v2 preparation does), with a warning; anything else is a layout error.
        """
        folder = self.gt_dir / seq
        if not folder.is_dir():
            raise UserError(f"annotation folder {folder} not found; {self.hint}")
        object_dirs = [folder] + sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        pairs: dict[str, list[Path]] = {}
        for obj in object_dirs:
            masks = list_files(obj, MASK_EXTENSIONS)
            if not masks:
                continue
            known = set(frame_names)
            unknown = [m for m in masks if m not in known]
            if not unknown:
                mapping = {name: path for name, path in masks.items()}
            elif len(masks) == len(frame_names):
                log.warning(f"{obj}: mask names do not match the frame names; pairing by sorted order")
                mapping = dict(zip(frame_names, masks.values()))
            else:
                raise UserError(f"mask {masks[unknown[0]]} has no frame named {unknown[0]!r} in {self.image_dir / seq} "
                                f"({len(unknown)} unmatched); {self.hint}")
            for name, path in mapping.items():
                pairs.setdefault(name, []).append(path)
        if not pairs:
            raise UserError(f"no masks ({'/'.join(MASK_EXTENSIONS)}) in {folder}; {self.hint}")
        return {name: pairs[name] for name in frame_names if name in pairs}

    def frame_names(self, seq: str) -> list[str]:
        """Frame ids (file stems) of a sequence, in natural order."""
        return list(self._frames[seq])

    def load_frames(self, seq: str) -> np.ndarray:
        """RGB frames float32 [T, 3, H, W] in [0, 1]."""
        return stack_frames(list(self._frames[seq].values()))

    def annotated_names(self, seq: str) -> list[str]:
        """Frame ids that have a mask (the scored frames), in frame order."""
        return list(self._gt[seq])

    def load_foreground(self, seq: str, name: str) -> np.ndarray:
        """Bool [H, W]: the union of all objects' masks of frame ``name``."""
        masks = [read_foreground(p) for p in self._gt[seq][name]]
        if len({m.shape for m in masks}) > 1:
            raise UserError(f"the object masks of frame {name} of {seq} differ in size")
        return np.logical_or.reduce(masks)


def subfolders(folder: Path) -> list[str]:
    """Names of the sub-folders of ``folder`` in natural order."""
    return sorted((p.name for p in folder.iterdir() if p.is_dir()), key=natural_key)


def resolve_root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"dataset folder {path} not found; check --data_path")
    return path
