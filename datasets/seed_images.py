"""Builder and layout checks of the object-discovery seed's other image datasets (docs/data.md).

``clevr_images`` (original CLEVR), ``shapes3d``, ``ravens`` and ``sketchy``; their options
(``--max_n_objects``, ``--alternative_crop``, ``--ravens_camera``, ``--shapes3d_splits``) are
refused for datasets that would ignore them.
"""
from __future__ import annotations

from torch.utils.data import Dataset

from ground.errors import UserError
from ground.log import get_logger

log = get_logger()

# Image side of the files (and the only one the seed accepts); other sizes are resized bilinearly.
NATIVE_SIZE: dict[str, int] = {"shapes3d": 64, "sketchy": 128}
# Which dataset reads which option (a typed option for any other dataset is an error).
OPTION_USERS: dict[str, tuple[str, str]] = {
    "max_objects": ("--max_n_objects", "clevr_images ravens"),
    "alternative_crop": ("--alternative_crop", "ravens"),
    "ravens_camera": ("--ravens_camera", "ravens"),
    "shapes3d_splits": ("--shapes3d_splits", "shapes3d"),
}


def build_seed_image_dataset(
    name: str,
    split: str,
    image_size: int,
    mask_size: int | None,
    data_path: str | None,
    num_samples: int | None,
    strict: bool = False,
    max_objects: int | None = None,
    alternative_crop: bool | None = None,
    ravens_camera: str | None = None,
    shapes3d_splits: str | None = None,
) -> Dataset:
    """Split ``split`` of ``name`` with the options that dataset reads."""
    given = {"max_objects": max_objects, "alternative_crop": alternative_crop, "ravens_camera": ravens_camera,
             "shapes3d_splits": shapes3d_splits}
    for option, value in given.items():
        flag, users = OPTION_USERS[option]
        if value is not None and name not in users.split():
            hint = " (use clevr6/clevr10/clevrtex6 for the object limit of those datasets)" if option == "max_objects" else ""
            raise UserError(f"{flag} applies to --dataset {' or '.join(users.split())}, not {name}{hint}")
    if max_objects is not None and max_objects < 1:
        raise UserError(f"--max_n_objects must be >= 1, got {max_objects}")
    if num_samples is not None and num_samples < 1:
        raise UserError(f"the number of samples must be >= 1, got {num_samples}")
    if name in NATIVE_SIZE and image_size != NATIVE_SIZE[name] and split == "train":
        log.info(f"{name} images are {NATIVE_SIZE[name]}x{NATIVE_SIZE[name]}; resizing them to {image_size} "
                 f"(the seed trains at --image_size {NATIVE_SIZE[name]})")
    if name == "clevr_images":
        from datasets.clevr_images import ClevrImages

        return ClevrImages(data_path, split, image_size, max_objects, num_samples, strict=strict)
    if name == "shapes3d":
        from datasets.shapes3d import Shapes3D

        return Shapes3D(data_path, split, image_size, num_samples, splits=shapes3d_splits or "seed")
    if name == "ravens":
        from datasets.ravens import Ravens

        return Ravens(data_path, split, image_size, mask_size, max_objects, num_samples,
                      alternative_crop=True if alternative_crop is None else alternative_crop, camera=ravens_camera)
    if name == "sketchy":
        from datasets.sketchy import Sketchy

        return Sketchy(data_path, split, image_size, num_samples, strict=strict)
    raise AssertionError(name)


def check_seed_image_layout(name: str, data_path: str | None) -> None:
    """The cheap part of each loader's checks (paths, HDF5 keys/shapes/dtypes), for before a run folder exists."""
    if name == "clevr_images":
        from datasets.clevr_images import LAYOUT_HINT, resolve_root
        from datasets.layout import require_dir

        root = resolve_root(data_path)
        for split in ("train", "val"):
            require_dir(root / "images" / split, f"CLEVR {split} images", LAYOUT_HINT)
    elif name == "shapes3d":
        from datasets.shapes3d import check_file, resolve_file

        check_file(resolve_file(data_path))
    elif name == "ravens":
        from datasets.ravens import check_file, find_file

        for split in ("train", "test"):
            check_file(find_file(data_path, split))
    elif name == "sketchy":
        from datasets.layout import require_dir
        from datasets.sketchy import LAYOUT_HINT, SPLIT_FOLDERS, resolve_root

        root = resolve_root(data_path)
        for split in ("train", "val"):
            require_dir(root / SPLIT_FOLDERS[split], f"Sketchy {SPLIT_FOLDERS[split]}", LAYOUT_HINT)
