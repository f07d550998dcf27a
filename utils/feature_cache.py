"""Frozen-feature cache, the orchestration side: ``--cache_features``, encoding a training set with a
frozen encoder into a cache, and checking a cache against the training flags and encoder.

The cache format and the datasets that read it are in :mod:`datasets.feature_cache`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import Dataset

from datasets.feature_cache import CachedFeatures, CacheWriter, read_metadata, train_views
from datasets.transforms import HFLIP_PROB
from ground.errors import UserError
from models import encoder_fingerprint
from models.encoders import SMALL_ENCODERS, resolve_encoder_name

# Datasets whose samples depend on --data_seed (shapes scenes, MOVi frame sampling).
SEEDED_DATASETS = ("shapes", "movi")


def add_cache_args(parser: argparse.ArgumentParser) -> None:
    """``--cache_features DIR`` for scripts whose models read a frozen encoder."""
    parser.add_argument_group("frozen-feature cache").add_argument(
        "--cache_features", default=None, metavar="DIR",
        help="train from features precomputed by scripts/cache_features.py (same data and encoder flags); "
             "no image is decoded for training, validation still reads images")


def encoder_key(name: str) -> str:
    """One name per architecture: short names resolve to timm names; small test configs stay as they are."""
    return name if name in SMALL_ENCODERS else resolve_encoder_name(name)


def data_seed(args: argparse.Namespace) -> int:
    """``--data_seed``, or ``--seed`` when it is not given."""
    seed = getattr(args, "data_seed", None)
    return args.seed if seed is None else seed


def dataset_record(args: argparse.Namespace) -> dict[str, Any]:
    """What identifies the training samples: the flags that choose them."""
    from datasets import canonical_name

    name = canonical_name(args.dataset)
    movi_paths = getattr(args, "predefined_movi_json_paths", None)
    return {
        "dataset": name,
        "data_path": str(Path(args.data_path).resolve()) if args.data_path else None,
        "split": "train",
        "train_samples": args.train_samples,
        "data_seed": data_seed(args) if name in SEEDED_DATASETS else None,
        "predefined_movi_json_paths": str(Path(movi_paths).resolve()) if movi_paths else None,
    }


def cache_metadata(args: argparse.Namespace, encoder: Any, num_samples: int, views: list[str]) -> dict[str, Any]:
    """The metadata of a cache of ``num_samples`` training samples encoded by ``encoder``."""
    grid = encoder.token_grid(args.image_size)
    return {
        "encoder": {
            "name": args.which_encoder, "key": encoder_key(args.which_encoder), "cache_tag": encoder.cache_tag,
            "weights_source": encoder.weights_source, "fingerprint": encoder_fingerprint(encoder),
            "final_norm": bool(encoder.final_norm), "depth": encoder.depth, "patch_size": encoder.patch_size,
        },
        "image_size": args.image_size,
        "token_grid": list(grid),
        "num_tokens": grid[0] * grid[1],
        "dim": encoder.embed_dim,
        **dataset_record(args),
        "num_samples": num_samples,
        "views": views,
        "view_rule": f"hflip with probability {HFLIP_PROB}, drawn per sample by datasets.transforms.augmentation_rng"
                     if "hflip" in views else "identity only",
    }


@torch.no_grad()
def write_feature_cache(args: argparse.Namespace, target: str | Path, train_set: Dataset, encoder: Any,
                        device: torch.device, overwrite: bool = False, progress: bool = True) -> Path:
    """Encode every training sample in every training view and write the cache folder ``target``."""
    from tqdm import tqdm

    from utils.train import make_loader

    views = train_views(args.dataset)
    base = getattr(train_set, "dataset", train_set)  # limit() wraps the set in a Subset
    declared = tuple(getattr(base, "augmentation", ()))
    if declared != tuple(views[1:]):  # the registry and the loader must agree on the views
        raise AssertionError(f"{type(base).__name__} declares {declared}, the cache expects {views[1:]}")
    if declared:
        base.augment = False  # identity images; every view is made here
    grid = encoder.token_grid(args.image_size)
    num = len(train_set)  # type: ignore[arg-type]
    shape = (num, len(views), grid[0] * grid[1], encoder.embed_dim)
    encoder = encoder.to(device).eval()
    loader = make_loader(train_set, args.batch_size, args.num_workers, None, 0, drop_last=False)
    with CacheWriter(target, shape, overwrite) as writer:
        start = 0
        for batch in tqdm(loader, desc=f"encoding {num} samples x {len(views)} views", disable=not progress):
            images = batch["image"].to(device)
            for v, view in enumerate(views):
                writer.write(start, v, encoder(view_images(images, view)))
            start += len(images)
        if start != num:
            raise RuntimeError(f"the loader gave {start} samples, the training set has {num}")
        return writer.finish(cache_metadata(args, encoder, num, views))


def view_images(images: torch.Tensor, view: str) -> torch.Tensor:
    """One training view of identity images [B, 3, H, W] (the loaders flip whole crops)."""
    if view == "identity":
        return images
    if view == "hflip":
        return images.flip(-1)
    raise ValueError(f"unknown view {view!r}")


def _mismatch(root: Path, what: str, cached: Any, wanted: Any, fix: str) -> UserError:
    return UserError(f"feature cache {root} was written for {what} {cached}, training asks for {wanted}; {fix}")


def check_cache_flags(directory: str | Path, args: argparse.Namespace, targets_only: bool = False) -> dict[str, Any]:
    """Refuse a cache whose features are not the ones these training flags would compute.

    Everything is checked from the flags (no encoder is built): encoder architecture, final
    norm, a frozen encoder, image size, dataset identity, views and sample count. The weights
    (source and checksum) are compared by :func:`check_cache_encoder` once the encoder exists.
    ``targets_only``: the cache replaces a frozen *target* encoder while the model trains its own
    encoder from the images (FT-DINOSAUR), so trained encoder blocks are allowed.
    """
    root = Path(directory)
    meta = read_metadata(root)
    rewrite = f"rewrite the cache with these flags (scripts/cache_features.py --out {root} --overwrite ...) or drop --cache_features"
    enc = meta["encoder"]
    if encoder_key(args.which_encoder) != enc["key"]:
        raise _mismatch(root, "encoder", enc["name"], args.which_encoder, rewrite)
    if bool(args.encoder_final_norm) != enc["final_norm"]:
        raise _mismatch(root, "--encoder_final_norm", enc["final_norm"], bool(args.encoder_final_norm), rewrite)
    if args.finetune_blocks_after < enc["depth"] and not targets_only:
        raise UserError(f"--finetune_blocks_after {args.finetune_blocks_after} trains encoder blocks, whose features "
                        f"change every step, so they cannot come from a cache; drop --cache_features, or keep the "
                        f"encoder frozen (--finetune_blocks_after {enc['depth']} or more)")
    if args.image_size != meta["image_size"]:
        raise _mismatch(root, "--image_size", meta["image_size"], args.image_size, rewrite)
    record = dataset_record(args)
    for key in ("dataset", "data_path", "data_seed", "predefined_movi_json_paths"):
        if record[key] != meta[key]:
            raise _mismatch(root, key, meta[key], record[key], rewrite)
    views = train_views(args.dataset)
    if views != meta["views"]:
        raise _mismatch(root, "views", "+".join(meta["views"]), "+".join(views), rewrite)
    # A cache of more samples serves a shorter --train_samples (the first N, as ``limit`` takes them).
    cached_limit, wanted = meta["train_samples"], args.train_samples
    if cached_limit is not None and (wanted is None or wanted > meta["num_samples"]):
        raise _mismatch(root, "--train_samples", cached_limit, wanted if wanted is not None else "all (no --train_samples)",
                        rewrite)
    return meta


def check_cache_encoder(meta: dict[str, Any], encoder: Any, directory: str | Path) -> None:
    """Refuse a cache written with other encoder weights than ``encoder``'s (checksum)."""
    if encoder.trainable:
        raise UserError(f"the encoder has trainable blocks, so its features cannot come from the cache {directory}; "
                        "drop --cache_features")
    cached = meta["encoder"]
    if encoder.cache_tag != cached["cache_tag"]:
        raise UserError(f"feature cache {directory} was written by encoder {cached['cache_tag']}, training uses "
                        f"{encoder.cache_tag}; rewrite the cache with the training flags or drop --cache_features")
    expected, actual = cached["fingerprint"], encoder_fingerprint(encoder)
    if abs(actual - expected) > 1e-6 * max(abs(expected), 1.0):
        raise UserError(f"feature cache {directory} was written with other {meta['encoder']['name']} weights "
                        f"({meta['encoder']['weights_source']}, checksum {expected:.6g} vs {actual:.6g}); rewrite "
                        "it with the training flags (the same --seed for random weights) or drop --cache_features")


def open_training_cache(args: argparse.Namespace) -> CachedFeatures:
    """The training set of ``--cache_features`` after checking the cache against the flags."""
    meta = check_cache_flags(args.cache_features, args)
    return CachedFeatures(args.cache_features, meta, args.train_samples)


def check_frozen_encoder(train_set: Iterable | Dataset, encoder: Any) -> None:
    """For a cached training set, refuse an encoder that does not compute its features (no-op otherwise)."""
    if isinstance(train_set, CachedFeatures):
        check_cache_encoder(train_set.meta, encoder, train_set.root)
