"""Frozen-feature cache: scripts/cache_features.py, --cache_features on train_spot.py / train_adaslot.py."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import train_adaslot
import train_spot
import train_spot_2
from ground.errors import UserError
from datasets.feature_cache import METADATA_FILE, CacheWriter, CachedFeatures, read_metadata, train_views
from utils.checkpoint import load_checkpoint
from utils.errors import run_cli
from utils.train import Trainer

from tests.real_data_fixtures import write_coco

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cache_features", REPO / "scripts" / "cache_features.py")
cache_features = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cache_features)  # type: ignore[union-attr]

DATA = ["--dataset", "shapes", "--image_size", "32", "--train_samples", "16", "--num_workers", "0"]
ENCODER = ["--which_encoder", "vit_micro_p8", "--no_pretrained"]
SPOT_TINY = [
    *DATA, *ENCODER, "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1",
    "--num_heads", "2", "--mlp_dec_hidden", "32", "--batch_size", "4", "--eval_batch_size", "8", "--val_samples", "8",
    "--lr_warmup_steps", "4",
]
DINOSAUR = ["--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False"]
SPOT = ["--dec_type", "transformer", "--train_permutations", "random"]
ADASLOT_TINY = [*DATA, *ENCODER, "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
                "--val_samples", "8", "--eval_batch_size", "8", "--lr_warmup_steps", "2", "--batch_size", "4",
                "--num_slots", "3"]


def write_cache(out: Path, *flags: str) -> Path:
    cache_features.main(["--out", str(out), "--batch_size", "8", "--no_progress", *flags])
    return out


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cache(tmp_path_factory.mktemp("cache") / "shapes", *DATA, *ENCODER)


def losses_of(monkeypatch: pytest.MonkeyPatch, run: callable) -> list[float]:
    """The training loss of every step of ``run()`` (the real loop, recorded as it goes)."""
    recorded: list[float] = []
    original = Trainer.train_step

    def record(self: Trainer, batch: dict) -> dict:
        out = original(self, batch)
        recorded.append(out["loss"])
        return out

    monkeypatch.setattr(Trainer, "train_step", record)
    run()
    monkeypatch.setattr(Trainer, "train_step", original)
    return recorded


def newest(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.is_dir())[-1]


@pytest.mark.parametrize("mode", [DINOSAUR, SPOT], ids=["dinosaur", "spot"])
def test_spot_loss_curve_from_cache_equals_images(tmp_path: Path, shapes_cache: Path, mode: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [*SPOT_TINY, *mode, "--epochs", "2", "--log_path", str(tmp_path)]
    images = losses_of(monkeypatch, lambda: train_spot.main(argv))
    cached = losses_of(monkeypatch, lambda: train_spot.main([*argv, "--cache_features", str(shapes_cache)]))
    assert len(images) == len(cached) == 8
    np.testing.assert_allclose(cached, images, rtol=1e-3)  # fp16 features; same views, same RNG draws
    run = newest(tmp_path)
    assert load_checkpoint(run)["args"]["cache_features"] == str(shapes_cache)
    assert (run / "metrics.json").is_file()  # validation ran (on images)


def test_coco_flip_views_follow_the_image_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_coco(tmp_path / "coco", num_train=8)
    data = ["--dataset", "coco", "--data_path", str(root), "--image_size", "32", "--num_workers", "0"]
    cache = write_cache(tmp_path / "cache", *data, *ENCODER)
    meta = read_metadata(cache)
    assert meta["views"] == ["identity", "hflip"] and meta["shape"] == [8, 2, 16, 32]
    features = np.load(cache / "train.npy")
    assert not np.allclose(features[:, 0], features[:, 1])  # a flipped image gives other features
    argv = [*SPOT_TINY[SPOT_TINY.index("--num_slots"):], *ENCODER, *data, *DINOSAUR, "--epochs", "2",
            "--log_path", str(tmp_path / "logs"), "--val_mask_size", "32", "--lr_warmup_steps", "2"]
    images = losses_of(monkeypatch, lambda: train_spot.main(argv))
    cached = losses_of(monkeypatch, lambda: train_spot.main([*argv, "--cache_features", str(cache)]))
    assert len(images) == 4
    np.testing.assert_allclose(cached, images, rtol=1e-3)
    # Both views are drawn (8 samples x 2 epochs at p = 0.5).
    torch.manual_seed(0)
    drawn = {CachedFeatures(cache).view_index(i) for i in range(8) for _ in range(2)}
    assert drawn == {0, 1}


def test_movi_run_from_cache_records_its_frames(tmp_path: Path) -> None:
    # Stage 2 reads train_movi_paths.json from the stage-1 run folder, cached or not.
    from datasets.movi import SAMPLING_FILE
    from tests.real_data_fixtures import write_movi

    movi = write_movi(tmp_path / "MOVi" / "e", num_train=2, train_frames=12)
    data = ["--dataset", "movi", "--data_path", str(movi), "--image_size", "32", "--val_mask_size", "16",
            "--train_samples", "6", "--num_workers", "0"]
    cache = write_cache(tmp_path / "cache", *data, *ENCODER)
    argv = [*SPOT_TINY[SPOT_TINY.index("--num_slots"):], *ENCODER, *data, *DINOSAUR, "--epochs", "1",
            "--val_samples", "2", "--lr_warmup_steps", "0"]
    train_spot.main([*argv, "--log_path", str(tmp_path / "images")])
    train_spot.main([*argv, "--log_path", str(tmp_path / "cached"), "--cache_features", str(cache)])
    by_images, by_cache = (json.loads((newest(tmp_path / d) / SAMPLING_FILE).read_text())
                           for d in ("images", "cached"))
    assert by_cache["frames"] == by_images["frames"] and by_cache["frames"]


def test_adaslot_stage1_stage2_from_cache(tmp_path: Path, shapes_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [*ADASLOT_TINY, "--num_iters", "4"]
    images = losses_of(monkeypatch, lambda: train_adaslot.main([*argv, "--log_path", str(tmp_path / "a")]))
    cached = losses_of(monkeypatch, lambda: train_adaslot.main([*argv, "--log_path", str(tmp_path / "b"),
                                                                "--cache_features", str(shapes_cache)]))
    np.testing.assert_allclose(cached, images, rtol=1e-3)
    # Stage 2 (adaptive, Gumbel draws from the torch RNG) warm-started from the cached stage 1.
    stage2 = [*DATA, "--which_encoder", "vit_micro_p8", "--batch_size", "4", "--val_samples", "8",
              "--num_slots", "5", "--use_adaptive_slot_attention", "--use_sparsity_loss", "--num_iters", "4",
              "--warmstart_checkpoint", str(newest(tmp_path / "b"))]
    images = losses_of(monkeypatch, lambda: train_adaslot.main([*stage2, "--log_path", str(tmp_path / "c")]))
    cached = losses_of(monkeypatch, lambda: train_adaslot.main([*stage2, "--log_path", str(tmp_path / "d"),
                                                                "--cache_features", str(shapes_cache)]))
    np.testing.assert_allclose(cached, images, rtol=1e-3)


def test_resume_of_a_cached_run(tmp_path: Path, shapes_cache: Path) -> None:
    argv = [*SPOT_TINY, *SPOT, "--epochs", "2", "--cache_features", str(shapes_cache)]
    train_spot.main([*argv, "--log_path", str(tmp_path / "full")])
    train_spot.main([*argv, "--log_path", str(tmp_path / "part"), "--max_steps", "3"])
    part = newest(tmp_path / "part")
    train_spot.main(["--resume", str(part)])  # the flag comes from the run's args.yaml
    a, b = load_checkpoint(newest(tmp_path / "full")), load_checkpoint(part)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def _tamper(cache: Path, target: Path, **changes: object) -> Path:
    """A copy of ``cache`` whose metadata says otherwise."""
    target.mkdir()
    os.link(cache / "train.npy", target / "train.npy")
    meta = json.loads((cache / METADATA_FILE).read_text())
    (target / METADATA_FILE).write_text(json.dumps({**meta, **changes}))
    return target


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--which_encoder", "vit_patch_p2"], "written for encoder vit_micro_p8, training asks for vit_patch_p2"),
        (["--encoder_final_norm", "True"], "--encoder_final_norm False, training asks for True"),
        (["--image_size", "48"], "--image_size 32, training asks for 48"),
        (["--data_seed", "5"], "data_seed 0, training asks for 5"),
        (["--train_samples", "20"], "--train_samples 16, training asks for 20"),
        (["--finetune_blocks_after", "0"], "--finetune_blocks_after 0 trains encoder blocks"),
        (["--seed", "3", "--data_seed", "0"], "other vit_micro_p8 weights"),  # random weights follow --seed
    ],
    ids=["encoder", "final_norm", "image_size", "data_seed", "train_samples", "trainable", "weights"],
)
def test_mismatches_are_refused(tmp_path: Path, shapes_cache: Path, flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        train_spot.main([*SPOT_TINY, *DINOSAUR, "--epochs", "1", "--log_path", str(tmp_path),
                         "--cache_features", str(shapes_cache), *flags])


def test_other_refusals(tmp_path: Path, shapes_cache: Path, capsys: pytest.CaptureFixture) -> None:
    base = [*SPOT_TINY, *DINOSAUR, "--epochs", "1", "--log_path", str(tmp_path / "logs")]
    with pytest.raises(UserError, match="not found; write it with scripts/cache_features.py"):
        train_spot.main([*base, "--cache_features", str(tmp_path / "nowhere")])
    views = _tamper(shapes_cache, tmp_path / "views", views=["identity", "hflip"])
    with pytest.raises(UserError, match="views identity\\+hflip, training asks for identity"):
        train_spot.main([*base, "--cache_features", str(views)])
    with pytest.raises(UserError, match="the student fine-tunes encoder blocks"):
        train_spot_2.main([*base, "--teacher_checkpoint_path", str(tmp_path), "--cache_features", str(shapes_cache)])
    with pytest.raises(UserError, match="random_crop draws from too many views"):
        train_views("voc")
    # Through the entry point: one line, exit 2, and no run folder left behind.
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_adaslot.main([*ADASLOT_TINY, "--log_path", str(tmp_path / "cli"), "--image_size", "48",
                                            "--cache_features", str(shapes_cache)]))
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: feature cache") and "--image_size 32, training asks for 48" in last
    assert not any((tmp_path / "cli").iterdir())
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        write_cache(shapes_cache, *DATA, *ENCODER)


def test_interrupted_cache_is_never_taken_as_complete(tmp_path: Path, shapes_cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cache"

    def crash(self: CacheWriter, *args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(CacheWriter, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        write_cache(target, *DATA, *ENCODER)
    assert not tmp_path.joinpath("cache").exists() and not list(tmp_path.iterdir())  # temp folder removed too
    # The hidden folder of a writer killed outright is cleared by the next writer of the same cache.
    stale = tmp_path / ".cache.partial-999999999"
    stale.mkdir()
    monkeypatch.undo()
    write_cache(target, *DATA, *ENCODER)
    assert read_metadata(target)["num_samples"] == 16 and not stale.exists()
    # A killed writer leaves only its hidden temporary folder; one copied without metadata or cut short is refused.
    partial = tmp_path / "partial"
    partial.mkdir()
    os.link(shapes_cache / "train.npy", partial / "train.npy")
    with pytest.raises(UserError, match=f"{partial} is incomplete \\(no metadata.json\\)"):
        read_metadata(partial)
    short = _tamper(shapes_cache, tmp_path / "short", shape=[32, 1, 16, 32])
    with pytest.raises(UserError, match="is incomplete \\(train.npy holds float16 \\[16, 1, 16, 32\\]"):
        read_metadata(short)
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / METADATA_FILE).write_text((shapes_cache / METADATA_FILE).read_text())
    (cut / "train.npy").write_bytes((shapes_cache / "train.npy").read_bytes()[:1000])
    with pytest.raises(UserError, match="is incomplete \\(train.npy"):
        read_metadata(cut)
