"""Dataset registry: one place maps ``--dataset`` names to loaders."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset, Subset

from utils.errors import UserError

DATASETS: tuple[str, ...] = ("shapes",)


def default_mask_size(dataset: str, image_size: int) -> int:
    """Resolution at which metrics are computed when ``--val_mask_size`` is not given."""
    return {"coco": 320, "voc": 320, "movi": 128}.get(dataset, image_size)


def build_dataset(
    name: str,
    split: str,
    image_size: int,
    mask_size: int | None = None,
    data_path: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Build split ``train`` or ``val`` of dataset ``name``.

    ``num_samples`` limits the split (the first N samples); for the synthetic ``shapes`` data
    it sets how many scenes exist. Returns items as dicts (see DESIGN.md).
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; available here: {', '.join(DATASETS)}")
    mask_size = mask_size or default_mask_size(name, image_size)
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
    raise AssertionError(name)  # unreachable: DATASETS lists the implemented names


def limit(dataset: Dataset, num_samples: int | None) -> Dataset:
    """The first ``num_samples`` items of a dataset (all when None)."""
    if num_samples is None or num_samples >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(num_samples))
