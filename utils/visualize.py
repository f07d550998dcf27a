"""Mask visualisations: coloured label maps, overlays and image grids written as PNG."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ground.palette import palette

_PALETTE = palette()


def colorize(labels: torch.Tensor) -> torch.Tensor:
    """Label map [H, W] (int) -> RGB float [3, H, W] in [0, 1]; label i gets palette colour i+1."""
    rgb = torch.from_numpy(_PALETTE[(labels.cpu().numpy() + 1) % 256]).float() / 255
    return rgb.permute(2, 0, 1)


def overlay(image: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5, background: bool = False) -> torch.Tensor:
    """Blend a label map [h, w] (resized with nearest to the image) over an image [3, H, W].

    With ``background=True`` label 0 is ground-truth background: left unblended, and object i
    gets the same colour as slot i - 1 would.
    """
    labels = _resize_labels(labels, image.shape[-2:])
    blended = (1 - alpha) * image.cpu() + alpha * colorize(labels - 1 if background else labels)
    if background:
        blended = torch.where(labels == 0, image.cpu(), blended)
    return blended


def _resize_labels(labels: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels.cpu()
    return F.interpolate(labels[None, None].float().cpu(), size=tuple(size), mode="nearest")[0, 0].long()


LABEL_FONT_SIZE = 13
# Row names of mask pictures, for the models' mask sources (``outputs["masks"]`` keys).
MASK_ROW_NAMES = {"decoder": "decoder masks", "slots": "slot-attention masks"}


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=LABEL_FONT_SIZE)


def labelled(
    grid: torch.Tensor | np.ndarray,
    row_labels: list[str] | None = None,
    row_height: int | None = None,
    column_labels: list[str] | None = None,
    column_width: int | None = None,
) -> Image.Image:
    """A grid picture with its rows named in a left margin and its columns in a top margin.

    ``grid`` is [3, H, W] float in [0, 1] or an [H, W, 3] uint8 array of equal-sized cells
    (``row_height`` x ``column_width`` pixels each); labels are drawn in black on white.
    """
    if isinstance(grid, torch.Tensor):
        grid = (grid.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(grid)
    font = _font()
    measure = ImageDraw.Draw(picture)
    pad = 4
    left = max((measure.textlength(t, font=font) for t in row_labels or []), default=0)
    left = int(left) + 2 * pad if row_labels else 0
    top = LABEL_FONT_SIZE + 2 * pad if column_labels else 0
    canvas = Image.new("RGB", (picture.width + left, picture.height + top), "white")
    canvas.paste(picture, (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(row_labels or []):
        y = top + i * (row_height or picture.height) + (row_height or picture.height) // 2 - LABEL_FONT_SIZE // 2
        draw.text((pad, y), text, fill="black", font=font)
    for j, text in enumerate(column_labels or []):
        width = column_width or picture.width
        text = _shorten(text, width)
        x = left + j * width + max(0, (width - int(draw.textlength(text, font=font))) // 2)
        draw.text((x, pad), text, fill="black", font=font)
    return canvas


def save_mask_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    rows: dict[str, torch.Tensor],
    max_images: int = 8,
    ground_truth_rows: tuple[str, ...] = ("ground truth",),
    min_tile: int = 128,
) -> None:
    """Write a PNG with one column per image: the image, then one overlay per label-map row.

    Each row is named in the left margin ("image", then the keys of ``rows``).

    images [B, 3, H, W] in [0, 1]; rows maps a name (e.g. "ground truth", "decoder masks") to a
    label map [B, h, w]. The row order is the dict order; rows named in ``ground_truth_rows``
    treat 0 as background. Small images are enlarged (nearest) so that a tile is at least
    ``min_tile`` pixels high.
    """
    n = min(max_images, images.shape[0])
    scale = max(1, -(-min_tile // images.shape[-2]))
    tiles = []
    for i in range(n):
        image = images[i].detach().float().cpu().clamp(0, 1)
        if scale > 1:
            image = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0]
        column = [image] + [
            overlay(image, labels[i].detach(), background=name in ground_truth_rows) for name, labels in rows.items()
        ]
        tiles.append(torch.cat(column, dim=1))  # stack vertically
    grid = torch.cat(tiles, dim=2)  # images side by side
    names = ["image", *(MASK_ROW_NAMES.get(name, name) for name in rows)]
    labelled(grid, names, row_height=tiles[0].shape[1] // (len(rows) + 1)).save(path)


def save_reconstruction_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    reconstructions: dict[str, torch.Tensor],
    attention: torch.Tensor | None = None,
    max_images: int = 8,
    min_tile: int = 128,
) -> None:
    """Write a PNG with one row per image: input, each reconstruction, then one tile per slot.

    images [B, 3, H, W] and reconstructions (name -> [B, 3, H, W]) in [0, 1]; attention
    [B, K, h, w] is upsampled (nearest) to the image and shown as ``x * a + (1 - a)``: the image
    where the slot attends, white elsewhere (SLATE's picture, docs/methods/slate.md#evaluation).
    Tiles are separated by a grey line; small images are enlarged (nearest). Columns are named
    in a top margin (input, each reconstruction's name, slot k).
    """
    n = min(max_images, images.shape[0])
    scale = max(1, -(-min_tile // images.shape[-2]))
    size = (images.shape[-2] * scale, images.shape[-1] * scale)

    def tile(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.detach().float().cpu()[None], size=size, mode="nearest")[0].clamp(0, 1)
        return F.pad(x, (1, 1, 1, 1), value=0.5)

    rows = []
    for i in range(n):
        row = [tile(images[i])] + [tile(recon[i]) for recon in reconstructions.values()]
        if attention is not None:
            image = images[i].detach().float().cpu()
            a = F.interpolate(attention[i].detach().float().cpu()[:, None], size=image.shape[-2:], mode="nearest")
            row += [tile(image * a_k + (1 - a_k)) for a_k in a]  # a_k [1, H, W]
        rows.append(torch.cat(row, dim=2))  # tiles side by side
    grid = torch.cat(rows, dim=1)  # images stacked vertically
    num_slots = attention.shape[1] if attention is not None else 0
    names = ["input", *reconstructions, *(f"slot {k}" for k in range(num_slots))]
    labelled(grid, column_labels=names, column_width=size[1] + 2).save(path)


# ------------------------------------------------------------------ predictions on user images
# Slot i is drawn in palette colour i + 1 everywhere (overlays, label PNGs, grids), so that slot 0
# is not the black "background" entry of the VOC/DAVIS palette.


def label_png(labels: torch.Tensor) -> Image.Image:
    """Indexed ("P" mode) PNG of a label map [H, W]: pixel values are slot indices.

    The embedded palette is the VOC/DAVIS palette shifted by one, so that a viewer shows slot i in
    the colour the overlays use (VOC colour i + 1); tools that read the raw indices get slot ids.
    """
    array = labels.cpu().numpy()
    if array.min() < 0 or array.max() > 254:
        raise ValueError("label PNGs hold slot indices 0..254")
    picture = Image.fromarray(array.astype(np.uint8), mode="P")
    picture.putpalette(np.roll(_PALETTE, -1, axis=0).reshape(-1).tolist())
    return picture


def contours(labels: torch.Tensor, thickness: int = 1) -> torch.Tensor:
    """Bool [H, W]: pixels whose label differs from a 4-neighbour, grown to ``thickness`` pixels."""
    edge = torch.zeros(labels.shape, dtype=torch.bool)
    labels = labels.cpu()
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if thickness > 1:
        size = 2 * (thickness // 2) + 1
        edge = F.max_pool2d(edge[None, None].float(), size, stride=1, padding=size // 2)[0, 0].bool()
    return edge


def overlay_with_contours(image: torch.Tensor, labels: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """Image [3, H, W] in [0, 1] with slots blended in their colours and their borders in white.

    Borders are about 1 px per 256 px of the shorter side, so they stay visible on large photos.
    """
    labels = _resize_labels(labels, image.shape[-2:])
    blended = overlay(image, labels, alpha=alpha)
    edge = contours(labels, thickness=max(1, round(min(labels.shape) / 256)))
    return torch.where(edge, torch.ones(3, 1, 1), blended)


def slot_cutout(image: torch.Tensor, labels: torch.Tensor, slot: int) -> Image.Image:
    """RGBA picture of the pixels slot ``slot`` claims (opaque) over a transparent rest."""
    rgb = (image.cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    alpha = ((labels.cpu() == slot).numpy() * 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] float in [0, 1] -> RGB PIL image."""
    return Image.fromarray((image.cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _letterbox(image: torch.Tensor, side: int) -> torch.Tensor:
    """Fit [C, H, W] into a [C, side, side] tile (aspect kept, centred, grey border)."""
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)
    tile = torch.full((image.shape[0], side, side), 0.5)
    top, left = (side - size[0]) // 2, (side - size[1]) // 2
    tile[:, top : top + size[0], left : left + size[1]] = resized
    return tile


def grid_column(image: torch.Tensor, overlay_image: torch.Tensor, tile: int = 192) -> torch.Tensor:
    """[3, 2 * tile, tile]: an image of any size above its overlay, each letterboxed into a square."""
    return torch.cat([_letterbox(image.cpu(), tile), _letterbox(overlay_image.cpu(), tile)], dim=1)


def save_overlay_grid(path: str | os.PathLike, columns: list[torch.Tensor], names: list[str] | None = None) -> None:
    """Write columns made by :func:`grid_column` side by side as one PNG, rows named "input" and
    "slots" and columns by ``names`` (e.g. the input files)."""
    tile = columns[0].shape[-1]
    labelled(torch.cat(columns, dim=2), ["input", "slots"], row_height=tile,
             column_labels=[_shorten(n, tile) for n in names] if names else None, column_width=tile).save(path)


def _shorten(text: str, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels in the label font."""
    font = _font()
    if font.getlength(text) <= width - 4:
        return text
    while text and font.getlength(text + "...") > width - 4:
        text = text[:-1]
    return text + "..."


def save_prototype_grid(path: str | os.PathLike, images: torch.Tensor, claimed: torch.Tensor,
                        alpha: float = 0.6, tint: tuple[float, float, float] = (1.0, 0.0, 0.0),
                        column_labels: list[str] | None = None) -> None:
    """Rows x columns of images [R, C, 3, H, W] in [0, 1] with the pixels claimed by the column's
    prototype (``claimed`` [R, C, H, W] bool) tinted red (SlotCon's viz_slots figure); columns
    named by ``column_labels`` (e.g. "prototype 17"), rows by rank ("top 1", ...)."""
    rows, cols, _, h, w = images.shape
    colour = images.new_tensor(tint).view(1, 1, 3, 1, 1)
    mask = claimed[:, :, None].float()
    tinted = images * (1 - alpha * mask) + colour * alpha * mask
    pad = 2
    canvas = torch.ones(3, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            canvas[:, top : top + h, left : left + w] = tinted[r, c]
    labelled(canvas, [f"top {r + 1}" for r in range(rows)], row_height=h + pad,
             column_labels=column_labels, column_width=w + pad).save(path)


def save_image_grid(path: str | os.PathLike, rows: dict[str, torch.Tensor], max_images: int = 8, min_tile: int = 128) -> None:
    """Write a PNG with one row per entry of ``rows`` (name -> images [B, 3, H, W] in [0, 1]),
    images side by side, each row named in the left margin; small images are enlarged (nearest)
    to at least ``min_tile`` pixels."""
    lines = []
    for images in rows.values():
        images = images[:max_images].detach().float().cpu().clamp(0, 1)
        scale = max(1, -(-min_tile // images.shape[-2]))
        if scale > 1:
            images = F.interpolate(images, scale_factor=scale, mode="nearest")
        lines.append(torch.cat(list(images), dim=2))
    grid = torch.cat(lines, dim=1)
    labelled(grid, list(rows), row_height=lines[0].shape[1]).save(path)


def segmentation_maps(slot_masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and processed label maps from soft masks [B, K, H, W] (the seed's ``sa_segment``).

    Raw: argmax over slots (0..K-1). Processed: the same, but -1 where no slot reaches
    ``threshold`` (pixels spread over several slots), drawn black.
    """
    confidence, raw = slot_masks.max(dim=1)
    processed = torch.where(confidence >= threshold, raw, torch.full_like(raw, -1))
    return raw, processed


def save_prediction_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    visuals: dict[str, torch.Tensor],
    max_images: int = 8,
    threshold: float = 0.5,
    min_tile: int = 64,
) -> None:
    """Write the seed's prediction picture: one row per image.

    Columns: original, reconstruction (if ``visuals`` has ``reconstruction`` [B, 3, H, W]),
    raw segmentation, processed segmentation (see :func:`segmentation_maps`), then one image per
    slot: ``rgb_k * m_k + (1 - m_k)`` (white where the slot is absent), with ``m_k`` from
    ``slot_masks`` [B, K, H, W] and ``rgb_k`` from ``slot_rgb`` [B, K, 3, H, W] (the image itself
    when absent). All images in [0, 1]; masks are resized to the image size. Columns are named
    in a top margin.
    """
    n = min(max_images, images.shape[0])
    height, width = images.shape[-2:]
    scale = max(1, -(-min_tile // height))
    masks = visuals["slot_masks"][:n].detach().float().cpu()
    if tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
    raw, processed = segmentation_maps(masks, threshold)
    rows = []
    for i in range(n):
        image = images[i].detach().float().cpu().clamp(0, 1)
        tiles = [image]
        if "reconstruction" in visuals:
            tiles.append(visuals["reconstruction"][i].detach().float().cpu().clamp(0, 1))
        tiles += [colorize(raw[i]), colorize(processed[i])]
        colours = visuals["slot_rgb"][i].detach().float().cpu().clamp(0, 1) if "slot_rgb" in visuals else None
        for k in range(masks.shape[1]):
            rgb = colours[k] if colours is not None else image
            tiles.append(rgb * masks[i, k] + (1 - masks[i, k]))
        rows.append(torch.cat(tiles, dim=2))  # side by side
    grid = torch.cat(rows, dim=1)  # one row per image
    if scale > 1:
        grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    names = ["image", *(["reconstruction"] if "reconstruction" in visuals else []), "raw", "processed",
             *(f"slot {k}" for k in range(masks.shape[1]))]
    labelled(grid, column_labels=names, column_width=width * scale).save(path)


def save_curves(path: str | os.PathLike, records: list[dict], names: list[str], panel: tuple[int, int] = (260, 180)) -> None:
    """Plot metrics over training steps: one panel per name in ``names``, side by side.

    ``records`` are ``metrics.jsonl`` lines (each with ``step``); a record without a metric (or
    with a non-finite one) is skipped for that panel. Drawn with PIL: axis ranges are written at
    the ends of the axes and the last value next to the title.
    """
    width, height = panel
    font = _font()
    canvas = Image.new("RGB", (width * len(names), height), "white")
    draw = ImageDraw.Draw(canvas)
    margin_left, margin_right, margin_top, margin_bottom = 44, 12, 24, 30
    for index, name in enumerate(names):
        points = [(float(r["step"]), float(r[name])) for r in records
                  if isinstance(r.get(name), (int, float)) and np.isfinite(r[name]) and "step" in r]
        x0 = index * width
        title = f"{name}: {points[-1][1]:.3g}" if points else f"{name}: no values"
        draw.text((x0 + margin_left, 4), title, fill="black", font=font)
        left, right = x0 + margin_left, x0 + width - margin_right
        top, bottom = margin_top, height - margin_bottom
        draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
        if not points:
            continue
        steps, values = zip(*points)
        s_lo, s_hi = min(steps), max(steps)
        v_lo, v_hi = min(values), max(values)
        if v_hi == v_lo:
            v_lo, v_hi = v_lo - 1, v_hi + 1
        s_span = (s_hi - s_lo) or 1.0

        def xy(step: float, value: float) -> tuple[float, float]:
            return (left + (step - s_lo) / s_span * (right - left),
                    bottom - (value - v_lo) / (v_hi - v_lo) * (bottom - top))

        coords = [xy(s, v) for s, v in points]
        if len(coords) > 1:
            draw.line(coords, fill=(31, 119, 180), width=2)
        for cx, cy in coords:
            draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=(31, 119, 180))
        draw.text((x0 + 2, top - 6), f"{v_hi:.3g}", fill="black", font=font)
        draw.text((x0 + 2, bottom - 8), f"{v_lo:.3g}", fill="black", font=font)
        draw.text((left, bottom + 4), f"{s_lo:g}", fill="black", font=font)
        label = f"step {s_hi:g}"
        draw.text((right - draw.textlength(label, font=font), bottom + 4), label, fill="black", font=font)
    canvas.save(path)
