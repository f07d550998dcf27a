"""SlotCon's two-view augmentation with overlap-aware crops (docs/methods/slotfa.md).

Crop 1 is a RandomResizedCrop draw; crop 2 is redrawn (up to ``MAX_OVERLAP_TRIES`` times) until
its intersection with crop 1 covers at least ``MIN_OVERLAP`` of crop 2's area, else one
unconstrained draw is used (its overlap may be empty). Each view carries the intersection box
in its own normalised coordinates (mirrored when the view is flipped) for ``align_maps``.
All randomness comes from torch's global RNG, so the trainer's seeding and resume cover it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ground.constants import IMAGENET_MEAN, IMAGENET_STD

MIN_OVERLAP = 0.01
MAX_OVERLAP_TRIES = 10

Crop = tuple[int, int, int, int]  # top, left, height, width (torchvision's order)


def sample_crop(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float]) -> Crop:
    """One RandomResizedCrop draw (torchvision's sampler, torch RNG)."""
    probe = Image.new("L", (width, height))
    return tuple(int(v) for v in transforms.RandomResizedCrop.get_params(probe, list(scale), list(ratio)))  # type: ignore[return-value]


def intersection(c1: Crop, c2: Crop) -> tuple[float, float, float, float]:
    """Absolute (x1, y1, x2, y2) of the two crops' overlap; x2 < x1 or y2 < y1 when they are disjoint."""
    (t1, l1, h1, w1), (t2, l2, h2, w2) = c1, c2
    return max(l1, l2), max(t1, t2), min(l1 + w1, l2 + w2), min(t1 + h1, t2 + h2)


def overlap_fraction(c1: Crop, c2: Crop) -> float:
    """Intersection area over crop 2's area."""
    x1, y1, x2, y2 = intersection(c1, c2)
    return max(x2 - x1, 0) * max(y2 - y1, 0) / (c2[2] * c2[3])


def sample_crop_pair(width: int, height: int, scale: tuple[float, float],
                     ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[Crop, Crop]:
    """Crop 1, then crop 2 conditioned on >= 1% overlap (10 tries, then an unconstrained draw)."""
    c1 = sample_crop(width, height, scale, ratio)
    for _ in range(MAX_OVERLAP_TRIES):
        c2 = sample_crop(width, height, scale, ratio)
        if overlap_fraction(c1, c2) >= MIN_OVERLAP:
            return c1, c2
    return c1, sample_crop(width, height, scale, ratio)


def view_box(crop: Crop, inter: tuple[float, float, float, float], flipped: bool) -> torch.Tensor:
    """The intersection in the view's normalised (x1, y1, x2, y2); empty overlaps become zero-area boxes."""
    top, left, h, w = crop
    x1, y1, x2, y2 = inter
    x2, y2 = max(x2, x1), max(y2, y1)
    box = [(x1 - left) / w, (y1 - top) / h, (x2 - left) / w, (y2 - top) / h]
    if flipped:
        box = [1 - box[2], box[1], 1 - box[0], box[3]]
    return torch.tensor(box, dtype=torch.float32)


class GaussianBlur:
    """PIL Gaussian blur with sigma ~ U(0.1, 2), applied with probability ``p``."""

    def __init__(self, p: float, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.p, self.sigma = p, sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()) >= self.p:
            return image
        radius = self.sigma[0] + float(torch.rand(())) * (self.sigma[1] - self.sigma[0])
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


class Solarize:
    def __init__(self, p: float, threshold: int = 128) -> None:
        self.p, self.threshold = p, threshold

    def __call__(self, image: Image.Image) -> Image.Image:
        return ImageOps.solarize(image, self.threshold) if torch.rand(()) < self.p else image


def colour_transforms() -> tuple[Callable, Callable]:
    """The two views' photometric pipelines (blur p 1.0 / 0.1, solarize only on view 2), then normalise."""
    common = [transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
              transforms.RandomGrayscale(p=0.2)]
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    view1 = transforms.Compose([*common, GaussianBlur(1.0), *tail])
    view2 = transforms.Compose([*common, GaussianBlur(0.1), Solarize(0.2), *tail])
    return view1, view2


class TwoViewDataset(Dataset):
    """Wraps a dataset of PIL images into SlotCon's two-view samples.

    Items: ``view1``/``view2`` [3,S,S] normalised, ``box1``/``box2`` [4] intersection boxes,
    ``flip1``/``flip2`` bool tensors.
    """

    def __init__(self, images: Dataset, image_size: int = 224, min_scale: float = 0.08) -> None:
        self.images, self.image_size, self.scale = images, image_size, (min_scale, 1.0)
        self.colour = colour_transforms()

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image: Image.Image = self.images[index]
        crops = sample_crop_pair(image.width, image.height, self.scale)
        inter = intersection(*crops)
        out: dict[str, Any] = {}
        for i, (crop, colour) in enumerate(zip(crops, self.colour), start=1):
            view = TF.resized_crop(image, *crop, [self.image_size, self.image_size],
                                   interpolation=InterpolationMode.BICUBIC)
            flipped = bool(torch.rand(()) < 0.5)
            if flipped:
                view = TF.hflip(view)
            out[f"view{i}"] = colour(view)
            out[f"box{i}"] = view_box(crop, inter, flipped)
            out[f"flip{i}"] = torch.tensor(flipped)
        return out


def crop_side(image_size: int) -> int:
    """Side at which synthetic source images are rendered before cropping (a bit larger than the view)."""
    return int(math.ceil(image_size * 1.25))
