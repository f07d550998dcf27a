"""predict.py keeps earlier results apart (--overwrite) and keeps a camera-sized photo cheap (--max_side)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import predict
import train_spot
from ground.errors import UserError

TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--batch_size", "4",
    "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4", "--num_workers", "0",
    "--lr_warmup_steps", "0", "--epochs", "1", "--dec_type", "mlp", "--train_permutations", "standard",
    "--use_slot_proj", "False", "--mlp_dec_hidden", "32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    train_spot.main([*TINY, "--log_path", str(logs)])
    return next(logs.iterdir())


def photos(folder: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (width, height) in sizes.items():
        x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
        rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                              np.broadcast_to((x + y) / 2, (height, width, 1))], axis=2).astype(np.uint8)
        Image.fromarray(rgb).save(folder / name, quality=90)
    return folder


def run(trained: Path, inputs: Path, out: Path, *extra: str) -> dict:
    return predict.main(["--checkpoint", str(trained), "--input", str(inputs), "--output", str(out), "--device", "cpu",
                         "--no_progress", *extra])


def test_a_camera_sized_photo_is_downscaled_first(trained: Path, tmp_path: Path) -> None:
    inputs = photos(tmp_path / "in", {"big.jpg": (6000, 4000)})
    started = time.monotonic()
    run(trained, inputs, tmp_path / "out")
    seconds = time.monotonic() - started
    overlay = Image.open(tmp_path / "out" / "big" / "overlay.png")
    assert overlay.size == (1024, 683)  # aspect ratio kept, longer side --max_side
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written < 8 * 2**20, written  # proportionate to the output size, not to 24 megapixels
    assert seconds < 15, seconds
    run(trained, inputs, tmp_path / "small", "--max_side", "256")  # the flag sets the size
    assert Image.open(tmp_path / "small" / "big" / "labels.png").size == (256, 171)


def test_an_existing_output_needs_overwrite(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(trained, photos(tmp_path / "first", {"a.png": (40, 30), "b.png": (30, 40)}), out)
    (out / "notes.txt").write_text("mine")
    second = photos(tmp_path / "second", {"c.png": (40, 40)})
    with pytest.raises(UserError, match="already holds files, which new predictions would mix with"):
        run(trained, second, out)
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "notes.txt", "summary.png"]  # untouched
    run(trained, second, out, "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["c", "notes.txt", "summary.png"]  # no old prediction left
