"""Running a trained slot model on arbitrary images: reading, resizing, label maps, slot statistics.

Geometry (``RESIZE_MODES``): models are trained on square ``S x S`` inputs (``image_size`` of the
checkpoint). An input of ``H x W`` pixels becomes the model input in one of two ways, and the
model's soft masks are mapped back through the same geometry, upsampled bilinearly *before* the
argmax as the evaluator does (``metrics.masks_to_labels``), so that every original pixel gets a slot:

- ``stretch``: the whole image is resized to ``S x S`` (aspect ratio changes when H != W); the
  masks are resized from the token grid straight to ``H x W``.
- ``pad``: the image is centred on an ``L x L`` canvas (``L = max(H, W)``) filled with its mean
  colour, and the canvas is resized to ``S x S`` (aspect ratio kept); the masks are resized to
  ``L x L`` and the canvas border is cropped away.

Images are resized with antialiased bicubic interpolation and clamped to [0, 1] (the OCLF/DINOSAUR
image pipeline; the built-in ``shapes`` data is rendered anti-aliased at ``S`` directly). Models
normalise their [0, 1] inputs themselves (e.g. the ViT encoders' ImageNet statistics).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from scipy.optimize import linear_sum_assignment

from ground.errors import UserError
from metrics import masks_to_labels
from utils.logging import write_json
from utils.visualize import label_png, overlay_with_contours, slot_cutout, to_pil

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
RESIZE_MODES: tuple[str, ...] = ("stretch", "pad")


class UnreadableImage(Exception):
    """An input file that is not a readable image (reported and skipped, not fatal)."""


def list_inputs(path: str | Path) -> tuple[list[Path], bool]:
    """Image files to process and whether they look like video frames (all names numbers).

    A file is taken as given; a folder contributes its files with image extensions (not its
    sub-folders), sorted by name, or by frame number when every name is a number.
    """
    path = Path(path)
    if path.is_file():
        return [path], False
    if not path.is_dir():
        raise UserError(f"--input {path} does not exist; pass an image file or a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"--input folder {path} holds no image files ({' '.join(IMAGE_EXTENSIONS)}); "
                        "point it at a folder of images")
    numbered = len(files) > 1 and all(p.stem.isdigit() for p in files)
    if numbered:
        files.sort(key=lambda p: (int(p.stem), p.name))
    return files, numbered


def read_image(path: Path, max_side: int | None = None) -> torch.Tensor:
    """RGB float image [3, H, W] in [0, 1], as a viewer shows it (EXIF rotation applied).

    Grayscale and palette images are converted to RGB; images with transparency are composited
    over white; 16-bit and float images are scaled to [0, 1]. With ``max_side``, an image whose
    longer side is larger is downscaled first (aspect ratio kept; JPEGs are decoded at a reduced
    scale), so a 6000 x 4000 photo costs time and memory in proportion to the model, not the
    camera. Raises :class:`UnreadableImage`.
    """
    try:
        with Image.open(path) as opened:
            if max_side:
                opened.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            picture = ImageOps.exif_transpose(opened)
            picture.load()
        if max_side and max(picture.size) > max_side:
            scale = max_side / max(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        if picture.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            gray = np.asarray(picture, dtype=np.float32)
            gray = gray / (65535.0 if gray.max() > 255 else 255.0)
            array = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
            return torch.from_numpy(array).permute(2, 0, 1).contiguous()
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            white = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(white, picture.convert("RGBA"))
        array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        # PIL raises OSError subclasses for unknown/truncated files, ValueError/SyntaxError for
        # some malformed headers.
        raise UnreadableImage(f"{path.name}: {type(err).__name__}: {err}") from err
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _canvas(height: int, width: int) -> tuple[int, int, int]:
    """Side and top-left offset of the square canvas that ``pad`` centres an image on."""
    side = max(height, width)
    return side, (side - height) // 2, (side - width) // 2


def to_model_input(image: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """Image [3, H, W] in [0, 1] -> model input [3, size, size] (see the module docstring)."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}")
    if resize == "pad":
        height, width = image.shape[-2:]
        side, top, left = _canvas(height, width)
        canvas = image.mean(dim=(1, 2), keepdim=True).expand(3, side, side).clone()
        canvas[:, top : top + height, left : left + width] = image
        image = canvas
    if tuple(image.shape[-2:]) == (size, size):
        return image.clone()
    resized = F.interpolate(image[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return resized[0].clamp(0, 1)


def labels_for_input(
    masks: torch.Tensor, height: int, width: int, resize: str, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft masks [K, h, w] of one model input -> label map [height, width] of the original image.

    Slots with ``keep == 0`` (AdaSlot's dropped slots) can never win the argmax, unless every
    slot was dropped.
    """
    masks = masks.float()
    if keep is not None and bool(keep.any()):
        # Masks are normalised over slots (>= 0), so -1 loses everywhere, also after bilinear.
        masks = torch.where(keep.bool().view(-1, 1, 1), masks, torch.full_like(masks, -1.0))
    if resize == "stretch":
        return masks_to_labels(masks[None], (height, width))[0]
    side, top, left = _canvas(height, width)
    return masks_to_labels(masks[None], (side, side))[0, top : top + height, left : left + width]


def slot_records(labels: torch.Tensor, num_slots: int) -> list[dict[str, Any]]:
    """Per slot: its pixel area and bounding box (x, y, width, height in pixels; None if empty)."""
    records = []
    areas = torch.bincount(labels.flatten(), minlength=num_slots)
    for slot in range(num_slots):
        box = None
        if areas[slot] > 0:
            claimed = labels == slot
            rows = torch.nonzero(claimed.any(dim=1)).flatten()
            cols = torch.nonzero(claimed.any(dim=0)).flatten()
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            box = {"x": x0, "y": y0, "width": x1 - x0 + 1, "height": y1 - y0 + 1}
        records.append({"slot": slot, "area": int(areas[slot]), "area_fraction": float(areas[slot]) / labels.numel(),
                        "bbox": box})
    return records


def match_slots(previous: torch.Tensor, labels: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Permutation [K] mapping this frame's slots to the previous frame's slot ids.

    Hungarian matching that maximises the summed IoU between the hard masks of the previous frame
    (already in consistent ids) and this frame; ``new_labels = perm[labels]``. Image models draw
    slots afresh for every frame, so this is what keeps colours stable through a video.
    """
    if previous.shape != labels.shape:
        previous = F.interpolate(previous[None, None].float(), size=tuple(labels.shape), mode="nearest")[0, 0].long()
    joint = torch.bincount((previous * num_slots + labels).flatten(), minlength=num_slots * num_slots)
    intersection = joint.view(num_slots, num_slots).double()  # [previous id, current slot]
    union = intersection.sum(1, keepdim=True) + intersection.sum(0, keepdim=True) - intersection
    iou = (intersection / union.clamp_min(1)).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    perm = torch.empty(num_slots, dtype=torch.long)
    perm[torch.from_numpy(cols)] = torch.from_numpy(rows)
    return perm


def pick_mask_source(out: dict[str, Any], wanted: str | None, method: str, typed: bool = True) -> str:
    """Name of the mask source to render, checked against what the model returns.

    ``wanted`` is the user's ``--masks`` (``typed``) or the method's preferred source, which
    falls back to the first source the model returns when it has no such masks.
    """
    sources = list(out.get("masks") or {})
    if not sources:
        raise UserError(f"the {method} model returns no slot masks, so predict.py cannot render it")
    if wanted is None or (not typed and wanted not in sources):
        return "decoder" if "decoder" in sources else sources[0]
    if wanted not in sources:
        raise UserError(f"--masks {wanted}: this {method} model has mask sources {', '.join(sources)}; pick one")
    return wanted


def write_prediction(
    folder: Path, path: Path, image: torch.Tensor, labels: torch.Tensor, model_slot: torch.Tensor,
    keep: torch.Tensor | None, method: str, source: str, resize: str,
) -> torch.Tensor:
    """overlay.png, labels.png, one slot_XX.png per slot and slots.json for one input; returns the overlay.

    ``labels`` [H, W] hold output slot ids; ``model_slot[id]`` is the model's own index of that slot
    (they differ when video frames are matched); ``keep`` [K] is indexed by model slot.
    """
    folder.mkdir(parents=True, exist_ok=True)
    overlay_image = overlay_with_contours(image, labels)
    to_pil(overlay_image).save(folder / "overlay.png")
    label_png(labels).save(folder / "labels.png")
    records = slot_records(labels, len(model_slot))
    for record in records:
        slot_cutout(image, labels, record["slot"]).save(folder / f"slot_{record['slot']:02d}.png")
        record["model_slot"] = int(model_slot[record["slot"]])
        if keep is not None:
            record["kept"] = bool(keep[record["model_slot"]])
    write_json(folder / "slots.json", {
        "input": str(path), "width": image.shape[2], "height": image.shape[1], "method": method,
        "masks": source, "resize": resize, "num_slots": len(records), "slots": records,
    })
    return overlay_image
