"""Dataset registry: one place maps ``--dataset`` names to loaders."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset

from ground.errors import UserError

DATASETS: tuple[str, ...] = ("shapes", "coco", "voc", "movi", "clevr", "clevr6", "clevr10", "tetrominoes", "clevrtex", "clevrtex6")
# The object-discovery seed's other image datasets (docs/data.md); only ravens has masks.
SEED_IMAGE_DATASETS: tuple[str, ...] = ("clevr_images", "shapes3d", "ravens", "sketchy")
DATASETS += SEED_IMAGE_DATASETS
# Names a user of the object-discovery seed (HHousen) may type, mapped to ours.
DATASET_ALIASES: dict[str, str] = {
    "clevr_with_masks": "clevr", "clevr6_masks": "clevr6", "clevr10_masks": "clevr10", "clevrtex_full": "clevrtex",
}
# Object-count limits of the pixel-space object-discovery datasets (None: every scene).
PIXEL_DATASET_MAX_OBJECTS: dict[str, int | None] = {
    "clevr": None, "clevr6": 6, "clevr10": 10, "tetrominoes": None, "clevrtex": None, "clevrtex6": 6,
}
# How ground truth is built for COCO/VOC evaluation (docs/metrics.md#reading-results-against-papers): SPOT's code or the
# DINOSAUR paper's OCLF configs. Other datasets are the same under both.
EVAL_PROTOCOLS: tuple[str, ...] = ("spot", "dinosaur")


def canonical_name(dataset: str) -> str:
    """The registry name of ``dataset`` (aliases resolved)."""
    return DATASET_ALIASES.get(dataset, dataset)


def default_mask_size(dataset: str, image_size: int) -> int:
    """Resolution at which metrics are computed when ``--val_mask_size`` is not given.

    COCO, VOC and MOVi: 320, as SPOT's official code (the seed's MOVi commands pass
    ``--val_mask_size 128`` explicitly; docs/methods/spot.md). CLEVR and ClevrTex: 128 (the seed's
    resolution, after the 192-px crop); Tetrominoes: 35, the native size, so the ground truth is
    never resampled.
    """
    sizes = {"coco": 320, "voc": 320, "movi": 320, "tetrominoes": 35}
    sizes.update({name: 128 for name in ("clevr", "clevr6", "clevr10", "clevrtex", "clevrtex6")})
    return sizes.get(canonical_name(dataset), image_size)


def build_dataset(
    name: str,
    split: str,
    image_size: int,
    mask_size: int | None = None,
    data_path: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    *,
    cache_dir: str | None = None,
    eval_protocol: str = "spot",
    strict: bool = False,
    predefined_movi_json_paths: str | None = None,
    run_dir: str | Path | None = None,
    sbd_path: str | None = None,
    max_objects: int | None = None,
    alternative_crop: bool | None = None,
    ravens_camera: str | None = None,
    shapes3d_splits: str | None = None,
) -> Dataset:
    """Build split ``train`` or ``val`` (``test`` too for CLEVR, Tetrominoes, ClevrTex) of dataset ``name``.

    ``num_samples`` limits the split (the first N samples); for the synthetic ``shapes`` data
    it sets how many scenes exist. Returns items as dicts (see DESIGN.md). The keyword
    arguments serve the real datasets (``utils.cli.data_options`` fills them from the flags):
    ``eval_protocol`` (COCO/VOC ground truth), ``strict`` (unreadable images are an error
    instead of skipped), ``predefined_movi_json_paths`` (reuse a MOVi training frame list),
    ``run_dir`` (where the MOVi training frame list is recorded), ``sbd_path`` (SBD, to
    generate VOC's trainaug list), ``cache_dir`` (where ClevrTex keeps its index; default:
    see ``datasets.clevrtex.default_cache_dir``). ``max_objects`` (``--max_n_objects``),
    ``alternative_crop``, ``ravens_camera`` and ``shapes3d_splits`` serve ``SEED_IMAGE_DATASETS``.
    """
    name = canonical_name(name)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available here: {', '.join(DATASETS)}")
    if eval_protocol not in EVAL_PROTOCOLS:
        raise UserError(f"unknown --eval_protocol {eval_protocol!r}; choose one of {', '.join(EVAL_PROTOCOLS)}")
    mask_size = mask_size or default_mask_size(name, image_size)
    seed_options = {"max_objects": max_objects, "alternative_crop": alternative_crop, "ravens_camera": ravens_camera,
                    "shapes3d_splits": shapes3d_splits}
    if name in SEED_IMAGE_DATASETS or any(v is not None for v in seed_options.values()):
        from datasets.seed_images import build_seed_image_dataset

        return build_seed_image_dataset(name, split, image_size, mask_size, data_path, num_samples, strict=strict,
                                        **seed_options)
    if name in ("coco", "voc", "movi") and not data_path:
        raise UserError(f"--dataset {name} needs --data_path (the dataset root; see README, 'Real datasets')")
    if name == "coco":
        from datasets.coco import CocoDataset

        return CocoDataset(data_path, split, image_size, mask_size, eval_protocol=eval_protocol, strict=strict)
    if name == "voc":
        from datasets.voc import VocDataset

        return VocDataset(data_path, split, image_size, mask_size, eval_protocol=eval_protocol, strict=strict,
                          sbd_path=sbd_path)
    if name == "movi":
        from datasets.movi import MoviDataset

        return MoviDataset(data_path, split, image_size, mask_size, seed=seed, strict=strict,
                           predefined_paths=predefined_movi_json_paths, run_dir=run_dir)
    if name == "shapes":
        from datasets.shapes import ShapesDataset

        hdf5_path = None
        if data_path:
            hdf5_path = Path(data_path) / f"{split}.h5"
            if not hdf5_path.is_file():
                raise UserError(
                    f"{hdf5_path} not found: for --dataset shapes, --data_path is optional and must hold "
                    "train.h5/val.h5 written by scripts/make_shapes_h5.py"
                )
        return ShapesDataset(
            split=split,
            num_samples=num_samples,
            image_size=image_size,
            mask_size=mask_size,
            seed=seed,
            hdf5_path=str(hdf5_path) if hdf5_path else None,
        )
    max_objects = PIXEL_DATASET_MAX_OBJECTS[name]
    if name.startswith("clevrtex"):
        from datasets.clevrtex import ClevrTex

        return ClevrTex(data_path or "", split, image_size, mask_size, max_objects, num_samples, cache_dir=cache_dir)
    if name.startswith("clevr"):
        from datasets.clevr import ClevrWithMasks

        return ClevrWithMasks(data_path or "", split, image_size, mask_size, max_objects, num_samples)
    if name == "tetrominoes":
        from datasets.tetrominoes import Tetrominoes

        return Tetrominoes(data_path or "", split, image_size, mask_size, max_objects, num_samples)
    raise AssertionError(name)  # unreachable: DATASETS lists the implemented names


def no_masks_reason(dataset: Dataset) -> str | None:
    """Why ``dataset`` has no ground-truth masks (None when it has them); looks through ``Subset``."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return getattr(dataset, "NO_MASKS_REASON", None)


def check_layout(name: str, data_path: str | None) -> None:
    """Cheap on-disk layout check, run before a run folder is made (only ``SEED_IMAGE_DATASETS`` so far)."""
    if canonical_name(name) in SEED_IMAGE_DATASETS:
        from datasets.seed_images import check_seed_image_layout

        check_seed_image_layout(canonical_name(name), data_path)


def limit(dataset: Dataset, num_samples: int | None) -> Dataset:
    """The first ``num_samples`` items of a dataset (all when None)."""
    if num_samples is None or num_samples >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(num_samples))


# Video clip datasets (self-supervised video training, SMTC); items hold ``video`` [T, 3, H, W].
VIDEO_DATASETS: tuple[str, ...] = ("shapes_video", "ytvos")


def build_video_dataset(
    name: str,
    split: str,
    image_size: int,
    num_frames: int,
    gap: int = 4,
    data_path: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Clips of ``num_frames`` frames: the synthetic ``shapes_video`` (with per-frame instance
    masks) or YouTube-VOS training clips (``data_path`` = the split folder holding JPEGImages)."""
    if name not in VIDEO_DATASETS:
        raise UserError(f"unknown video dataset {name!r}; available here: {', '.join(VIDEO_DATASETS)}")
    if name == "ytvos":
        if not data_path:
            raise UserError("--dataset ytvos needs --basepath (the YouTube-VOS split folder, e.g. YTVOS/train)")
        from datasets.ytvos import YtvosClips

        return YtvosClips(data_path, num_frames, gap, image_size, num_samples, seed)
    from datasets.shapes_video import ShapesVideoDataset

    return ShapesVideoDataset(split, num_samples, num_frames, image_size, seed=seed)
