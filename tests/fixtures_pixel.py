"""Tiny on-disk fixtures of the pixel-space object-discovery datasets, for any test to reuse.

Plain functions taking a directory (e.g. pytest's ``tmp_path``) and returning what to pass as
``--data_path``:

- :func:`write_clevr_h5` -> folder with ``clevr_with_masks.h5`` (the seed's HDF5 layout, small images);
- :func:`write_tetrominoes_h5` -> folder with ``tetrominoes.h5``;
- :func:`write_clevrtex_folder` -> a ClevrTex PNG folder (``clevrtex_full/<k>/CLEVRTEX_full_NNNNNN*``);
- :func:`write_clevr_tfrecord`, :func:`write_tetrominoes_tfrecord` -> GZIP TFRecord files of
  ``tf.train.Example`` in DeepMind's feature layout (for the converter).

Scenes are axis-aligned blocks on a plain background; objects never overlap, so every object
is visible and the object count of scene ``i`` is known: ``clevr_object_count(i)`` cycles
through 3..10 (CLEVR's range), ``clevrtex_object_count(i)`` through the same counts in another order.

Example::

    from tests.fixtures_pixel import write_clevr_h5
    data_path = write_clevr_h5(tmp_path)          # 40 scenes of 48 x 64
    # python train_slot_attention.py --dataset clevr6 --data_path {data_path} --image_size 32 ...
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datasets import clevr, tetrominoes
from datasets.tfrecord import encode_example, write_records

CLEVR_OBJECT_COUNTS: tuple[int, ...] = tuple(range(3, 11))


def clevr_object_count(index: int) -> int:
    """Objects in fixture scene ``index`` (CLEVR and ClevrTex fixtures): 3, 4, ..., 10, 3, ..."""
    return CLEVR_OBJECT_COUNTS[index % len(CLEVR_OBJECT_COUNTS)]


def clevrtex_object_count(index: int) -> int:
    """Objects in ClevrTex fixture scene ``index``: the CLEVR counts in a stride-3 order, so
    that each 10% split of a 40-scene folder holds a scene with <= 6 objects."""
    return CLEVR_OBJECT_COUNTS[(3 * index) % len(CLEVR_OBJECT_COUNTS)]


def _grid_labels(rng: np.random.Generator, num_objects: int, height: int, width: int) -> np.ndarray:
    """Label map with objects 1..num_objects as rectangles in distinct cells of a 3 x 4 grid."""
    labels = np.zeros((height, width), dtype=np.int64)
    rows, cols = 3, 4
    cell_h, cell_w = height // rows, width // cols
    for obj, cell in enumerate(rng.permutation(rows * cols)[:num_objects], start=1):
        r, c = divmod(int(cell), cols)
        h = int(rng.integers(max(2, cell_h // 2), cell_h))
        w = int(rng.integers(max(2, cell_w // 2), cell_w))
        top = r * cell_h + int(rng.integers(0, cell_h - h + 1))
        left = c * cell_w + int(rng.integers(0, cell_w - w + 1))
        labels[top : top + h, left : left + w] = obj
    return labels


def _paint(rng: np.random.Generator, labels: np.ndarray, num_ids: int) -> np.ndarray:
    """uint8 RGB image: one random colour per id (id 0 = background), plus a little noise."""
    palette = rng.integers(0, 256, size=(num_ids, 3))
    noise = rng.integers(-8, 9, size=(*labels.shape, 3))
    return np.clip(palette[labels] + noise, 0, 255).astype(np.uint8)


def _entity_masks(labels: np.ndarray, num_entities: int) -> np.ndarray:
    """[E, H, W, 1] uint8 masks with values 0/255, entity 0 = background (DeepMind's encoding)."""
    masks = (labels[None] == np.arange(num_entities)[:, None, None]).astype(np.uint8) * 255
    return masks[..., None]


def clevr_arrays(num_samples: int, height: int = 48, width: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """CLEVR-with-masks features for ``num_samples`` scenes: {feature: [N, *shape]}."""
    rng = np.random.default_rng(seed)
    entities = clevr.MAX_NUM_ENTITIES
    out: dict[str, list[np.ndarray]] = {name: [] for name in clevr.FEATURES}
    for i in range(num_samples):
        n = clevr_object_count(i)
        labels = _grid_labels(rng, n, height, width)
        present = np.arange(entities) <= n  # background + n objects
        out["image"].append(_paint(rng, labels, entities))
        out["mask"].append(_entity_masks(labels, entities))
        for name in ("x", "y", "z", "rotation"):
            out[name].append((rng.normal(size=entities) * present).astype(np.float32))
        out["pixel_coords"].append((rng.normal(size=(entities, 3)) * present[:, None]).astype(np.float32))
        for name, high in (("size", 2), ("material", 2), ("shape", 3), ("color", 8)):
            codes = rng.integers(1, high + 1, size=entities) * present
            codes[0] = 0
            out[name].append(codes.astype(np.uint8))
        out["visibility"].append(present.astype(np.float32))
    return {name: np.stack(values) for name, values in out.items()}


# Four-block pieces on a 7 x 7 grid of 5-px blocks (35 px, like Tetrominoes).
_PIECES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 0), (0, 1), (0, 2), (0, 3)),  # I
    ((0, 0), (1, 0), (1, 1), (1, 2)),  # J
    ((0, 0), (0, 1), (1, 0), (1, 1)),  # O
    ((0, 1), (1, 0), (1, 1), (1, 2)),  # T
    ((0, 0), (0, 1), (1, 1), (1, 2)),  # Z
)
_BLOCK = 5


def tetrominoes_arrays(num_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Tetrominoes features for ``num_samples`` scenes of three pieces: {feature: [N, *shape]}."""
    rng = np.random.default_rng(seed)
    entities = tetrominoes.MAX_NUM_ENTITIES
    size = tetrominoes.IMAGE_SHAPE[0]
    grid = size // _BLOCK
    out: dict[str, list[np.ndarray]] = {name: [] for name in tetrominoes.FEATURES}
    for _ in range(num_samples):
        occupied = np.zeros((grid, grid), dtype=np.int64)
        shapes = np.zeros(entities, dtype=np.float32)
        for piece in range(1, entities):
            while True:  # rejection sampling; three pieces always fit on a 7 x 7 grid
                kind = int(rng.integers(len(_PIECES)))
                r0, c0 = (int(v) for v in rng.integers(0, grid - 3, size=2))
                cells = [(r0 + dr, c0 + dc) for dr, dc in _PIECES[kind]]
                if all(occupied[r, c] == 0 for r, c in cells):
                    break
            for r, c in cells:
                occupied[r, c] = piece
            shapes[piece] = kind
        labels = np.kron(occupied, np.ones((_BLOCK, _BLOCK), dtype=np.int64))
        colours = rng.uniform(size=(entities, 3)).astype(np.float32)
        colours[0] = 0.0
        out["image"].append((colours[labels] * 255).round().astype(np.uint8))
        out["mask"].append(_entity_masks(labels, entities))
        out["x"].append(rng.uniform(size=entities).astype(np.float32))
        out["y"].append(rng.uniform(size=entities).astype(np.float32))
        out["shape"].append(shapes)
        out["color"].append(colours)
        out["visibility"].append(np.ones(entities, dtype=np.float32))
    return {name: np.stack(values) for name, values in out.items()}


def write_h5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """One gzip-compressed HDF5 dataset per feature, as the seed's and our converter's files."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, values in arrays.items():
            f.create_dataset(name, data=values, chunks=(1, *values.shape[1:]), compression="gzip")
    return path


def write_clevr_h5(directory: Path, num_samples: int = 40, height: int = 48, width: int = 64, seed: int = 0) -> Path:
    """``directory/clevr_with_masks.h5`` with small scenes; returns ``directory`` (the --data_path)."""
    directory = Path(directory)
    write_h5(directory / clevr.ClevrWithMasks.FILE_NAME, clevr_arrays(num_samples, height, width, seed))
    return directory


def write_tetrominoes_h5(directory: Path, num_samples: int = 36, seed: int = 0) -> Path:
    """``directory/tetrominoes.h5`` (35 x 35, as the real data); returns ``directory``."""
    directory = Path(directory)
    write_h5(directory / tetrominoes.Tetrominoes.FILE_NAME, tetrominoes_arrays(num_samples, seed))
    return directory


def write_tfrecord(path: Path, arrays: dict[str, np.ndarray], specs: dict) -> Path:
    """GZIP TFRecord of one ``tf.train.Example`` per sample, in DeepMind's encoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = len(next(iter(arrays.values())))
    records = (encode_example({k: v[i] for k, v in arrays.items()}, specs) for i in range(count))
    write_records(str(path), records, compression="gzip")
    return path


def write_clevr_tfrecord(path: Path, num_samples: int = 2, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A full-size (240 x 320) CLEVR-with-masks TFRecord; returns the path and the arrays written."""
    arrays = clevr_arrays(num_samples, *clevr.IMAGE_SHAPE, seed=seed)
    return write_tfrecord(Path(path), arrays, clevr.FEATURES), arrays


def write_tetrominoes_tfrecord(path: Path, num_samples: int = 5, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A Tetrominoes TFRecord; returns the path and the arrays written."""
    arrays = tetrominoes_arrays(num_samples, seed)
    return write_tfrecord(Path(path), arrays, tetrominoes.FEATURES), arrays


def write_clevrtex_folder(
    directory: Path, num_samples: int = 40, height: int = 48, width: int = 64, per_folder: int = 20,
    variant: str = "full", rgba: bool = True, seed: int = 0,
) -> Path:
    """ClevrTex scenes under ``directory/clevrtex_<variant>/<k>/``; returns ``directory/clevrtex_<variant>``.

    Images are RGBA (as ClevrTex ships them) unless ``rgba=False``; ``_flat.png`` masks are
    one-channel (mode L) with ids 0..n; the JSON lists n objects.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(directory) / f"clevrtex_{variant}"
    for i in range(num_samples):
        folder = root / str(i // per_folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"CLEVRTEX_{variant}_{i:06d}"
        n = clevrtex_object_count(i)
        labels = _grid_labels(rng, n, height, width)
        image = _paint(rng, labels, n + 1)
        if rgba:
            image = np.concatenate([image, np.full((height, width, 1), 255, dtype=np.uint8)], axis=-1)
        Image.fromarray(image).save(f"{stem}.png")
        Image.fromarray(labels.astype(np.uint8)).save(f"{stem}_flat.png")
        meta = {
            "image_index": i,
            "ground_material": "fixture",
            "objects": [{"shape": "cube", "material": "fixture", "size": 1.0, "rotation": 0.0} for _ in range(n)],
        }
        with open(f"{stem}.json", "w") as f:
            json.dump(meta, f)
    return root
