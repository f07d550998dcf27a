"""Built-in synthetic multi-object dataset: random 2D shapes on varied backgrounds.

Every sample is a pure function of ``(seed, split, index)``. A scene is continuous
geometry (centres, sizes, rotations in image-relative units) that is rasterised by
evaluating inside-tests at pixel centres, so the image at ``image_size`` and the masks at
``mask_size`` describe the same scene at any resolution. The image is anti-aliased by
supersampling; the masks are hard.

Optionally the samples can be cached in an HDF5 file (see :func:`write_shapes_hdf5` and
``scripts/make_shapes_h5.py``); reading from the cache gives the same data up to uint8
quantisation of the image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ground.errors import UserError

SHAPE_TYPES: tuple[str, ...] = ("circle", "square", "triangle", "ellipse", "star", "heart")
NUM_SHAPE_TYPES: int = len(SHAPE_TYPES)
# Semantic classes in ``mask_class``, background (0) included: 0 = background,
# 1..NUM_SHAPE_TYPES = SHAPE_TYPES[class_id - 1].
NUM_CLASSES: int = NUM_SHAPE_TYPES + 1

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
DEFAULT_NUM_SAMPLES: dict[str, int] = {"train": 10000, "val": 500}
# Bump whenever the generator's output changes, so stale HDF5 caches are rejected.
GENERATOR_VERSION: int = 1

# The scene is validated (visibility of every object) on this fixed grid, so that the
# accepted scene does not depend on the requested image or mask resolution.
REFERENCE_GRID: int = 64
MIN_RESOLUTION: int = 8
MAX_OBJECTS_LIMIT: int = 10  # more objects of this size range do not fit visibly
SUPERSAMPLE: int = 2  # anti-aliasing factor per axis for the image
LABEL_DTYPE = np.uint8  # internal label maps; holds up to MAX_OBJECTS_LIMIT ids cheaply

# Object extent (diameter of the nominal unit shape) as a fraction of the image side.
SIZE_RANGE: tuple[float, float] = (0.12, 0.40)
# Centres keep this many radii from the border, so objects are at most slightly cropped.
CENTER_MARGIN_RADII: float = 0.8
# Every shape lies within this radius (in units of its nominal radius); rasterisation
# only evaluates inside-tests in the corresponding bounding box.
SHAPE_BOUND: float = 1.3
MIN_VISIBLE_FRACTION: float = 0.4
MIN_VISIBLE_PIXELS_REFERENCE: int = 10  # on the REFERENCE_GRID
MIN_VISIBLE_PIXELS_MASK: int = 1  # at mask_size; only binds for masks below the reference
MAX_OBJECT_TRIES: int = 30
MAX_LAYOUT_RESTARTS: int = 200

# Per-shape geometry in local units (nominal radius = 1).
SQUARE_HALF_SIDE: float = 0.88
TRIANGLE_INRADIUS: float = 0.6  # circumradius 1.2
ELLIPSE_SEMI_MAJOR: float = 1.1
ELLIPSE_ASPECT_RANGE: tuple[float, float] = (0.45, 0.7)
STAR_POINTS: int = 5
STAR_OUTER_RADIUS: float = 1.2
STAR_INNER_RADIUS: float = 0.55
HEART_SCALE: float = 1.1  # the implicit heart curve spans about [-1.14, 1.14] x [-1, 1.24]
HEART_Y_SHIFT: float = 0.12  # centres the heart's bounding box on the object centre
HEART_MAX_TILT: float = np.pi / 6  # a heart upside down looks like another shape

# Colours (RGB in [0, 1]); backgrounds are mostly dark or desaturated so objects stand out.
LIGHT_BACKGROUND_PROB: float = 0.15
DARK_BG_VALUE: tuple[float, float] = (0.06, 0.45)
DARK_BG_SATURATION: tuple[float, float] = (0.0, 0.45)
LIGHT_BG_VALUE: tuple[float, float] = (0.75, 0.92)
LIGHT_BG_SATURATION: tuple[float, float] = (0.0, 0.12)
TEXTURE_CONTRAST: float = 0.12  # max value offset of the second texture colour
OBJECT_SATURATION: tuple[float, float] = (0.7, 1.0)
OBJECT_VALUE_ON_DARK: tuple[float, float] = (0.75, 1.0)
OBJECT_VALUE_ON_LIGHT: tuple[float, float] = (0.45, 0.85)
MIN_BACKGROUND_CONTRAST: float = 0.45  # Euclidean RGB distance
MIN_OBJECT_CONTRAST: float = 0.3
COLOUR_TRIES: int = 64

BACKGROUND_TYPES: tuple[str, ...] = ("solid", "gradient", "noise", "stripes")
NOISE_CELLS_RANGE: tuple[int, int] = (2, 8)  # value-noise lattice cells per image side
STRIPE_FREQ_RANGE: tuple[float, float] = (2.0, 8.0)  # cycles per image side


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Object:
    shape: int  # index into SHAPE_TYPES
    cx: float
    cy: float
    radius: float  # nominal radius, fraction of the image side
    angle: float
    aspect: float  # only used by the ellipse


def _inside_circle(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    return u * u + v * v <= 1.0


def _inside_square(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE


def _inside_triangle(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    inside = np.ones(u.shape, dtype=bool)
    for k in range(3):
        normal_angle = np.pi / 2 + k * 2 * np.pi / 3
        inside &= u * np.cos(normal_angle) + v * np.sin(normal_angle) <= TRIANGLE_INRADIUS
    return inside


def _inside_ellipse(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    minor = ELLIPSE_SEMI_MAJOR * obj.aspect
    return (u / ELLIPSE_SEMI_MAJOR) ** 2 + (v / minor) ** 2 <= 1.0


def _inside_star(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    # Fold the plane into one half-sector (tip on the x axis, valley at half the sector
    # angle) and test against the straight edge from tip to valley.
    sector = 2 * np.pi / STAR_POINTS
    rho = np.sqrt(u * u + v * v)
    folded = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)
    px, py = rho * np.cos(folded), rho * np.sin(folded)
    ex = STAR_INNER_RADIUS * np.cos(sector / 2) - STAR_OUTER_RADIUS
    ey = STAR_INNER_RADIUS * np.sin(sector / 2)
    return ex * py - ey * (px - STAR_OUTER_RADIUS) >= 0.0


def _inside_heart(u: np.ndarray, v: np.ndarray, obj: _Object) -> np.ndarray:
    # Implicit heart curve; image rows grow downwards, so flip v to point the tip down.
    x = u * HEART_SCALE
    y = -v * HEART_SCALE + HEART_Y_SHIFT
    return (x * x + y * y - 1.0) ** 3 <= x * x * y**3


_INSIDE_TESTS: tuple[Callable[[np.ndarray, np.ndarray, _Object], np.ndarray], ...] = (
    _inside_circle,
    _inside_square,
    _inside_triangle,
    _inside_ellipse,
    _inside_star,
    _inside_heart,
)
assert len(_INSIDE_TESTS) == NUM_SHAPE_TYPES


def _rasterise(obj: _Object, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """Inside-test of one object at the pixel centres of a ``size`` grid, in its bbox.

    Returns the (rows, cols) slices of the bounding box and the boolean mask inside it.
    """
    bound = SHAPE_BOUND * obj.radius
    # Pixel j has its centre at (j + 0.5) / size; any superset of the bbox is fine.
    x0 = max(0, int(np.floor((obj.cx - bound) * size)))
    x1 = min(size, int(np.ceil((obj.cx + bound) * size)) + 1)
    y0 = max(0, int(np.floor((obj.cy - bound) * size)))
    y1 = min(size, int(np.ceil((obj.cy + bound) * size)) + 1)
    px = ((np.arange(x0, x1) + 0.5) / size - obj.cx) / obj.radius
    py = ((np.arange(y0, y1) + 0.5) / size - obj.cy) / obj.radius
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    # Rotate the grid by -angle into the object's frame.
    u = cos * px[None, :] + sin * py[:, None]
    v = -sin * px[None, :] + cos * py[:, None]
    return (slice(y0, y1), slice(x0, x1)), _INSIDE_TESTS[obj.shape](u, v, obj)


def _render_labels(objects: list[_Object], size: int) -> np.ndarray:
    """Instance ids (0 = background, k = objects[k-1]) in painter's order."""
    labels = np.zeros((size, size), dtype=LABEL_DTYPE)
    for k, obj in enumerate(objects, start=1):
        window, inside = _rasterise(obj, size)
        labels[window][inside] = k
    return labels


def _sample_object(rng: np.random.Generator) -> _Object:
    shape = int(rng.integers(NUM_SHAPE_TYPES))
    radius = float(rng.uniform(*SIZE_RANGE)) / 2
    margin = CENTER_MARGIN_RADII * radius
    cx, cy = (float(c) for c in rng.uniform(margin, 1.0 - margin, size=2))
    name = SHAPE_TYPES[shape]
    if name == "circle":
        angle = 0.0
    elif name == "heart":
        angle = float(rng.uniform(-HEART_MAX_TILT, HEART_MAX_TILT))
    else:
        angle = float(rng.uniform(0.0, 2 * np.pi))
    aspect = float(rng.uniform(*ELLIPSE_ASPECT_RANGE))
    return _Object(shape, cx, cy, radius, angle, aspect)


def _visible_enough(labels: np.ndarray, full_areas: list[int], min_pixels: int) -> bool:
    num = len(full_areas)
    visible = np.bincount(labels.ravel(), minlength=num + 1)[1:]
    full = np.asarray(full_areas)
    return bool(np.all(visible >= MIN_VISIBLE_FRACTION * full) and np.all(visible >= min_pixels))


def _sample_layout(
    rng: np.random.Generator, num_objects: int, mask_size: int
) -> tuple[list[_Object], np.ndarray]:
    """Place objects one by one (later ones on top), resampling any that hide others.

    Returns the objects and the instance labels at ``mask_size``.
    """
    for _ in range(MAX_LAYOUT_RESTARTS):
        objects: list[_Object] = []
        full_areas: list[int] = []
        labels = np.zeros((REFERENCE_GRID, REFERENCE_GRID), dtype=LABEL_DTYPE)
        for k in range(1, num_objects + 1):
            for _ in range(MAX_OBJECT_TRIES):
                obj = _sample_object(rng)
                window, inside = _rasterise(obj, REFERENCE_GRID)
                trial = labels.copy()
                trial[window][inside] = k
                areas = full_areas + [int(inside.sum())]
                # A new object can only occlude earlier ones, so checking all of them
                # after each placement validates the final scene.
                if _visible_enough(trial, areas, MIN_VISIBLE_PIXELS_REFERENCE):
                    objects.append(obj)
                    full_areas = areas
                    labels = trial
                    break
            else:
                break  # this partial layout leaves no room: start over
        if len(objects) < num_objects:
            continue
        if mask_size != REFERENCE_GRID:
            labels = _render_labels(objects, mask_size)
            # Only tiny masks can lose an object entirely; with this check the instance
            # ids at mask_size are always exactly 1..num_objects.
            if not _visible_enough(labels, [0] * num_objects, MIN_VISIBLE_PIXELS_MASK):
                continue
        return objects, labels
    raise RuntimeError(
        f"could not place {num_objects} visible objects after {MAX_LAYOUT_RESTARTS} layouts"
    )


# ---------------------------------------------------------------------------- colours


def _hsv_to_rgb(h: np.ndarray | float, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """HSV in [0, 1] to RGB float32; broadcasts, returning shape (..., 3)."""
    h, s, v = (np.asarray(x, dtype=np.float64)[..., None] for x in (h, s, v))
    rgb = np.clip(np.abs(np.mod(h * 6.0 + np.array([0.0, 4.0, 2.0]), 6.0) - 3.0) - 1.0, 0, 1)
    return (v * (1.0 - s + s * rgb)).astype(np.float32)


def _sample_background_colour(rng: np.random.Generator, light: bool) -> np.ndarray:
    value_range = LIGHT_BG_VALUE if light else DARK_BG_VALUE
    saturation_range = LIGHT_BG_SATURATION if light else DARK_BG_SATURATION
    return _hsv_to_rgb(rng.uniform(), rng.uniform(*saturation_range), rng.uniform(*value_range))


def _sample_object_colours(
    rng: np.random.Generator, num: int, background: list[np.ndarray], light: bool
) -> np.ndarray:
    """Saturated colours, each far from the background colours and from each other.

    Per object, the first of COLOUR_TRIES candidates that meets both contrast thresholds
    is taken (the best one if none does); candidates are drawn in one vectorised batch.
    """
    value_range = OBJECT_VALUE_ON_LIGHT if light else OBJECT_VALUE_ON_DARK
    background_colours = np.stack(background)
    colours = np.zeros((0, 3), dtype=np.float32)
    for _ in range(num):
        candidates = _hsv_to_rgb(
            rng.uniform(size=COLOUR_TRIES),
            rng.uniform(*OBJECT_SATURATION, size=COLOUR_TRIES),
            rng.uniform(*value_range, size=COLOUR_TRIES),
        )
        bg_gap = np.linalg.norm(candidates[:, None] - background_colours[None], axis=-1).min(1)
        obj_gap = np.linalg.norm(candidates[:, None] - colours[None], axis=-1)
        obj_gap = obj_gap.min(1, initial=np.inf)
        # Normalised slack of the worse constraint; >= 0 means both are met.
        score = np.minimum(bg_gap / MIN_BACKGROUND_CONTRAST, obj_gap / MIN_OBJECT_CONTRAST) - 1.0
        ok = np.flatnonzero(score >= 0.0)
        pick = int(ok[0]) if ok.size else int(np.argmax(score))
        colours = np.concatenate([colours, candidates[pick : pick + 1]])
    return colours


# ------------------------------------------------------------------------ backgrounds


@dataclass(frozen=True)
class _Background:
    kind: str
    colour0: np.ndarray
    colour1: np.ndarray
    angle: float = 0.0
    frequency: float = 0.0
    phase: float = 0.0
    lattice: np.ndarray | None = None  # value-noise lattice, (cells + 1, cells + 1)


def _sample_background(rng: np.random.Generator, light: bool) -> _Background:
    kind = BACKGROUND_TYPES[int(rng.integers(len(BACKGROUND_TYPES)))]
    colour0 = _sample_background_colour(rng, light)
    if kind == "gradient":
        colour1 = _sample_background_colour(rng, light)
    else:
        # Textures stay low-contrast: a slightly brighter or darker version of colour0.
        offset = rng.uniform(-TEXTURE_CONTRAST, TEXTURE_CONTRAST)
        colour1 = np.clip(colour0 + offset, 0.0, 1.0).astype(np.float32)
    cells = int(rng.integers(NOISE_CELLS_RANGE[0], NOISE_CELLS_RANGE[1] + 1))
    return _Background(
        kind=kind,
        colour0=colour0,
        colour1=colour1,
        angle=float(rng.uniform(0.0, 2 * np.pi)),
        frequency=float(rng.uniform(*STRIPE_FREQ_RANGE)),
        phase=float(rng.uniform(0.0, 2 * np.pi)),
        lattice=rng.uniform(size=(cells + 1, cells + 1)).astype(np.float32),
    )


def _value_noise(lattice: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at (coords[i], coords[j]), continuous in position."""
    cells = lattice.shape[0] - 1
    g = coords * cells
    i = np.minimum(np.floor(g).astype(np.int64), cells - 1)
    f = g - i
    f = f * f * (3.0 - 2.0 * f)  # smoothstep hides the lattice
    rows = lattice[i] * (1.0 - f)[:, None] + lattice[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1.0 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _render_background(bg: _Background, size: int) -> np.ndarray:
    """Background as (3, size, size) float32, evaluated at pixel centres."""
    coords = ((np.arange(size) + 0.5) / size).astype(np.float32)
    if bg.kind == "solid":
        return np.broadcast_to(bg.colour0[:, None, None], (3, size, size)).copy()
    if bg.kind == "gradient":
        cos, sin = np.cos(bg.angle), np.sin(bg.angle)
        proj = cos * (coords[None, :] - 0.5) + sin * (coords[:, None] - 0.5)
        weight = np.clip(proj / (abs(cos) + abs(sin)) + 0.5, 0.0, 1.0)  # corners -> 0, 1
    elif bg.kind == "noise":
        assert bg.lattice is not None
        weight = _value_noise(bg.lattice, coords)
    else:  # stripes
        proj = np.cos(bg.angle) * coords[None, :] + np.sin(bg.angle) * coords[:, None]
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * bg.frequency * proj + bg.phase)
    weight = weight.astype(np.float32)
    return bg.colour0[:, None, None] * (1.0 - weight) + bg.colour1[:, None, None] * weight


# ------------------------------------------------------------------------- generation


def render_image(
    objects: list[_Object], colours: np.ndarray, background: _Background, image_size: int
) -> np.ndarray:
    """Anti-aliased RGB float32 (3, S, S) of ``objects`` (painter's order) over ``background``."""
    # Anti-alias by averaging the colours of SUPERSAMPLE^2 sub-pixel labels per pixel (a
    # box filter). The background is smooth, so evaluating it once per pixel suffices and
    # saves most of the cost at large sizes.
    labels = _render_labels(objects, image_size * SUPERSAMPLE)
    subpixels = [
        np.ascontiguousarray(labels[dy::SUPERSAMPLE, dx::SUPERSAMPLE])
        for dy in range(SUPERSAMPLE)
        for dx in range(SUPERSAMPLE)
    ]
    background_weight = sum((sub == 0).astype(np.float32) for sub in subpixels)
    image = _render_background(background, image_size) * background_weight
    # Per-channel 1-D lookups are ~3x faster than gathering RGB rows from a palette.
    palette = np.concatenate([np.zeros((1, 3), dtype=np.float32), colours])
    for c in range(3):
        channel_palette = np.ascontiguousarray(palette[:, c])
        for sub in subpixels:
            image[c] += channel_palette[sub]
    image /= SUPERSAMPLE**2
    return image


def generate_sample(
    index: int,
    split: str = "train",
    image_size: int = 64,
    mask_size: int | None = None,
    min_objects: int = 2,
    max_objects: int = 6,
    seed: int = 0,
) -> dict[str, Any]:
    """Render one scene as numpy arrays (no validation; see :class:`ShapesDataset`).

    Returns ``image`` float32 (3, H, W) in [0, 1], ``mask_instance`` and ``mask_class``
    int64 (M, M), and ``num_objects``.
    """
    mask_size = image_size if mask_size is None else mask_size
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    num_objects = int(rng.integers(min_objects, max_objects + 1))
    light = bool(rng.uniform() < LIGHT_BACKGROUND_PROB)
    background = _sample_background(rng, light)
    objects, mask_instance = _sample_layout(rng, num_objects, mask_size)
    colours = _sample_object_colours(
        rng, num_objects, [background.colour0, background.colour1], light
    )

    image = render_image(objects, colours, background, image_size)

    mask_instance = mask_instance.astype(np.int64)
    class_of_id = np.array([0] + [obj.shape + 1 for obj in objects], dtype=np.int64)
    return {
        "image": image,
        "mask_instance": mask_instance,
        "mask_class": class_of_id[mask_instance],
        "num_objects": num_objects,
    }


def _validate_params(
    split: str, num_samples: int | None, image_size: int, mask_size: int,
    min_objects: int, max_objects: int, seed: int,
) -> None:
    if split not in SPLIT_CODES:
        raise UserError(f"unknown shapes split {split!r}; use one of {sorted(SPLIT_CODES)}")
    if num_samples is not None and num_samples < 1:
        raise UserError(f"num_samples must be >= 1, got {num_samples}")
    for name, value in (("image_size", image_size), ("mask_size", mask_size)):
        if value < MIN_RESOLUTION:
            raise UserError(f"{name} must be >= {MIN_RESOLUTION}, got {value}")
    if not 1 <= min_objects <= max_objects <= MAX_OBJECTS_LIMIT:
        raise UserError(
            f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS_LIMIT}, "
            f"got min_objects={min_objects}, max_objects={max_objects}"
        )
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")


# ------------------------------------------------------------------------------ HDF5

# File attributes that must equal the requested parameters (num_samples may be smaller).
_CACHE_PARAMS: tuple[str, ...] = (
    "generator_version", "split", "image_size", "mask_size", "min_objects", "max_objects", "seed",
)
_HDF5_COMPRESSION: str = "gzip"
_HDF5_COMPRESSION_LEVEL: int = 4


def _regenerate_hint(path: str, params: dict[str, Any]) -> str:
    return (
        f"python scripts/make_shapes_h5.py --out {path} --split {params['split']} "
        f"--num_samples {params['num_samples']} --image_size {params['image_size']} "
        f"--mask_size {params['mask_size']} --min_objects {params['min_objects']} "
        f"--max_objects {params['max_objects']} --seed {params['seed']}"
    )


def write_shapes_hdf5(
    path: str,
    split: str = "train",
    num_samples: int | None = None,
    image_size: int = 64,
    mask_size: int | None = None,
    min_objects: int = 2,
    max_objects: int = 6,
    seed: int = 0,
    progress: bool = False,
) -> None:
    """Generate a split and cache it at ``path`` (images and masks as uint8).

    Written to a temporary file and renamed at the end, so an interrupted run never
    leaves a file that looks complete.
    """
    import h5py
    from tqdm import tqdm

    mask_size = image_size if mask_size is None else mask_size
    _validate_params(split, num_samples, image_size, mask_size, min_objects, max_objects, seed)
    num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else num_samples
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp{os.getpid()}"
    compression = {"compression": _HDF5_COMPRESSION, "compression_opts": _HDF5_COMPRESSION_LEVEL}
    try:
        with h5py.File(tmp_path, "w") as f:
            images = f.create_dataset(
                "image", (num_samples, 3, image_size, image_size), dtype=np.uint8,
                chunks=(1, 3, image_size, image_size), **compression,
            )
            instances = f.create_dataset(
                "mask_instance", (num_samples, mask_size, mask_size), dtype=np.uint8,
                chunks=(1, mask_size, mask_size), **compression,
            )
            classes = f.create_dataset(
                "mask_class", (num_samples, mask_size, mask_size), dtype=np.uint8,
                chunks=(1, mask_size, mask_size), **compression,
            )
            counts = f.create_dataset("num_objects", (num_samples,), dtype=np.uint8)
            for i in tqdm(range(num_samples), desc=f"shapes {split}", disable=not progress):
                sample = generate_sample(
                    i, split, image_size, mask_size, min_objects, max_objects, seed
                )
                images[i] = np.round(sample["image"] * 255.0).astype(np.uint8)
                instances[i] = sample["mask_instance"].astype(np.uint8)
                classes[i] = sample["mask_class"].astype(np.uint8)
                counts[i] = sample["num_objects"]
            attrs = {
                "generator_version": GENERATOR_VERSION, "split": split, "num_samples": num_samples,
                "image_size": image_size, "mask_size": mask_size, "min_objects": min_objects,
                "max_objects": max_objects, "seed": seed,
            }
            f.attrs.update(attrs)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


# --------------------------------------------------------------------------- dataset


class ShapesDataset(Dataset):
    """Random 2D shapes scenes with instance and class masks, generated on the fly.

    Items: ``image`` float (3, S, S) in [0, 1]; ``mask_instance`` long (M, M) with
    0 = background and 1..num_objects; ``mask_class`` long (M, M) with 0 = background and
    1..NUM_SHAPE_TYPES; ``mask_ignore`` bool (M, M), all False; ``num_objects``; ``index``.
    With ``hdf5_path`` the items are read from a cache written by :func:`write_shapes_hdf5`;
    ``num_samples=None`` then uses the whole file.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        image_size: int = 64,
        mask_size: int | None = None,
        min_objects: int = 2,
        max_objects: int = 6,
        seed: int = 0,
        hdf5_path: str | None = None,
    ) -> None:
        mask_size = image_size if mask_size is None else mask_size
        _validate_params(split, num_samples, image_size, mask_size, min_objects, max_objects, seed)
        self.split = split
        self.image_size = image_size
        self.mask_size = mask_size
        self.min_objects = min_objects
        self.max_objects = max_objects
        self.seed = seed
        self.hdf5_path = hdf5_path
        self._h5: Any = None
        self._h5_pid: int | None = None
        if hdf5_path is None:
            self.num_samples = DEFAULT_NUM_SAMPLES[split] if num_samples is None else num_samples
        else:
            self.num_samples = self._check_cache(hdf5_path, num_samples)

    def _params(self, num_samples: int | None) -> dict[str, Any]:
        return {
            "generator_version": GENERATOR_VERSION, "split": self.split,
            "num_samples": DEFAULT_NUM_SAMPLES[self.split] if num_samples is None else num_samples,
            "image_size": self.image_size, "mask_size": self.mask_size,
            "min_objects": self.min_objects, "max_objects": self.max_objects, "seed": self.seed,
        }

    def _check_cache(self, path: str, num_samples: int | None) -> int:
        """Check the cache's attributes against the requested parameters; return its length."""
        import h5py

        params = self._params(num_samples)
        hint = _regenerate_hint(path, params)
        if not os.path.isfile(path):
            raise UserError(f"shapes HDF5 cache {path} not found; create it with: {hint}")
        try:
            with h5py.File(path, "r") as f:
                attrs = {key: f.attrs[key] for key in f.attrs}
        except OSError as err:
            raise UserError(
                f"cannot read shapes HDF5 cache {path} ({err}); regenerate it with: {hint}"
            ) from err
        for name in _CACHE_PARAMS:
            cached = attrs.get(name)
            if isinstance(cached, bytes):
                cached = cached.decode()
            if cached is None or cached != params[name]:
                raise UserError(
                    f"shapes HDF5 cache {path} has {name}={cached} but {name}={params[name]} "
                    f"was requested; regenerate it with: {hint}"
                )
        available = int(attrs.get("num_samples", 0))
        if num_samples is None:
            return available
        if num_samples > available:
            raise UserError(
                f"shapes HDF5 cache {path} has num_samples={available} but num_samples="
                f"{num_samples} was requested; regenerate it with: {hint}"
            )
        return num_samples  # samples are index-deterministic, so a prefix is exact

    def _file(self) -> Any:
        # Open lazily and once per process: h5py handles must not cross a fork.
        if self._h5 is None or self._h5_pid != os.getpid():
            import h5py

            self._h5 = h5py.File(self.hdf5_path, "r")
            self._h5_pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_h5"], state["_h5_pid"] = None, None  # spawned workers reopen the file
        return state

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        if self.hdf5_path is None:
            sample = generate_sample(
                index, self.split, self.image_size, self.mask_size,
                self.min_objects, self.max_objects, self.seed,
            )
            image = torch.from_numpy(sample["image"])
            mask_instance = torch.from_numpy(sample["mask_instance"])
            mask_class = torch.from_numpy(sample["mask_class"])
            num_objects = sample["num_objects"]
        else:
            f = self._file()
            image = torch.from_numpy(np.divide(f["image"][index], 255.0, dtype=np.float32))
            mask_instance = torch.from_numpy(f["mask_instance"][index].astype(np.int64))
            mask_class = torch.from_numpy(f["mask_class"][index].astype(np.int64))
            num_objects = int(f["num_objects"][index])
        return {
            "image": image,
            "mask_instance": mask_instance,
            "mask_class": mask_class,
            # Build tensors in numpy: in the main process (num_workers=0) torch fills
            # large tensors with its intra-op thread pool, which can cost milliseconds.
            "mask_ignore": torch.from_numpy(np.zeros((self.mask_size, self.mask_size), dtype=bool)),
            "num_objects": num_objects,
            "index": index,
        }
