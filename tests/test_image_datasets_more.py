"""Original CLEVR, 3D Shapes, RAVENS and Sketchy: loaders on tiny fixtures in the real on-disk
formats, their pitfalls (docs/data.md), the RAVENS preparation script, and short CLI runs."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_dataset, check_layout
from datasets.ravens import crop_box
from ground.errors import UserError
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------- fixtures


def clevr_count(index: int) -> int:
    return 3 + index % 8  # CLEVR scenes hold 3..10 objects


def write_clevr_v1(root: Path, sizes: dict[str, int] | None = None, height: int = 32, width: int = 48) -> Path:
    """``CLEVR_v1.0/`` with RGBA PNGs (left third red, rest blue, alpha 255) and train/val scene files."""
    sizes = sizes or {"train": 12, "val": 8, "test": 4}
    base = root / "CLEVR_v1.0"
    (base / "scenes").mkdir(parents=True)
    pixels = np.zeros((height, width, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, : width // 3, 0] = 255
    pixels[:, width // 3 :, 2] = 255
    for split, count in sizes.items():
        folder = base / "images" / split
        folder.mkdir(parents=True)
        scenes = []
        for i in range(count):
            name = f"CLEVR_{split}_{i:06d}.png"
            Image.fromarray(pixels, "RGBA").save(folder / name)
            objects = [{"3d_coords": [0.0, 0.0, 0.0], "pixel_coords": [1, 1, 1.0], "rotation": 0.0, "size": "large",
                        "color": "red", "material": "rubber", "shape": "cube"}] * clevr_count(i)
            scenes.append({"image_index": i, "image_filename": name, "objects": objects, "relations": {},
                           "directions": {}, "split": split})
        if split != "test":  # CLEVR v1.0 has no test scene file
            scenes.reverse()  # the loader must sort by name, whatever the file order
            (base / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"info": {}, "scenes": scenes}))
    return base


SHAPES3D_FACTORS = (10, 2, 2, 2, 2, 3)  # floor, wall, object hue, scale, shape, orientation (real: 10,10,10,8,4,15)


def write_3dshapes(root: Path) -> Path:
    """``3dshapes.h5`` with 480 images stored as the real file (orientation fastest, floor hue slowest);
    pixel [0, 0, 0] holds the index mod 256."""
    root.mkdir(parents=True, exist_ok=True)
    grids = np.meshgrid(*[np.arange(n) for n in SHAPES3D_FACTORS], indexing="ij")
    labels = np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.float64)
    labels[:, 0] /= 9.0  # floor hue in [0, 1] as in the real file
    count = len(labels)
    images = np.full((count, 64, 64, 3), 90, dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    path = root / "3dshapes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    return path


def ravens_arrays(scenes: int, height: int = 48, width: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """One generator chunk: 3 views per scene (front, left, right); red channel = 40 * camera + scene."""
    color = np.zeros((3 * scenes, height, width, 3), dtype=np.uint8)
    segm = np.zeros((3 * scenes, height, width), dtype=np.uint8)
    counts = np.resize(np.roll([8, 3, 6, 4, 7, 5], seed), scenes).astype(np.int64)  # 3..8 objects
    counts[0] = 8  # an 8-object scene uses ids up to 12 (plane, workspace, 3 robot parts, 8 objects)
    for scene in range(scenes):
        for camera in range(3):
            row = 3 * scene + camera
            color[row, ..., 0] = 40 * camera + scene
            color[row, :23, :, 1] = 200  # above the alternative crop (rows 23:47 of 48)
            segm[row, : height // 2] = 0
            segm[row, height // 2 :] = 1
            for obj in range(counts[scene]):
                segm[row, height // 2 + 2 : height // 2 + 6, 4 + 6 * obj : 8 + 6 * obj] = 5 + obj
            segm[row, 38:42, 28:34] = 255  # "no body hit", inside the alternative crop
    return {"color": color, "segm": segm, "num_objects_on_table": counts}


def write_ravens_chunk(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """An HDF5 file as the RAVENS fork writes it: one gzip dataset per key, growable first axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, values in arrays.items():
            f.create_dataset(key, data=values, chunks=True, compression="gzip", maxshape=(None, *values.shape[1:]))
    return path


def write_ravens(root: Path, train_scenes: int = 6, test_scenes: int = 4) -> Path:
    write_ravens_chunk(root / "ravens_robot_data_train.h5", ravens_arrays(train_scenes))
    write_ravens_chunk(root / "ravens_robot_data_test.h5", ravens_arrays(test_scenes, seed=1))
    return root


SKETCHY_VIEWS = ("full", "c0", "c1", "c2", "c3", "c4", "c5")


def write_sketchy(root: Path, episodes: dict[str, list[int]] | None = None, timesteps: int = 1) -> Path:
    """``sketchy/processed/{split}/epXXXXXX/`` with 14 128x128 PNGs and a state file per timestep;
    episodes are numbered across splits as the preparation does."""
    episodes = episodes or {"train": [0, 1], "valid": [2], "test": [3]}
    processed = root / "processed"
    for split, numbers in episodes.items():
        for number in numbers:
            folder = processed / split / f"ep{number:06d}"
            folder.mkdir(parents=True)
            for t in range(timesteps):
                stem = f"ep{number:06d}_t{t:03d}"
                (folder / f"{stem}_state.pt").write_bytes(b"not an image")
                for camera in ("fl", "fr"):
                    for view in SKETCHY_VIEWS:
                        value = 10 * number + (camera == "fr")
                        Image.new("RGB", (128, 128), (value, 0, 0)).save(folder / f"{stem}_{camera}_{view}.png")
    return root


# ----------------------------------------------------------------------------- original CLEVR


def test_clevr_images_splits_sorting_and_squash(tmp_path: Path) -> None:
    base = write_clevr_v1(tmp_path)
    train = build_dataset("clevr_images", "train", 24, data_path=str(tmp_path))  # the parent of CLEVR_v1.0 works
    assert len(train) == 12 and train.paths == sorted(train.paths)
    item = train[0]
    assert item["image"].shape == (3, 24, 24) and "mask_instance" not in item  # RGBA -> RGB, no masks
    # The whole 32 x 48 frame is squashed (no crop): the red left third stays a third of the width.
    red = (item["image"][0, 12] > 0.5).sum().item()
    assert 7 <= red <= 9
    assert item["num_objects"] == clevr_count(0)
    assert len(build_dataset("clevr_images", "val", 24, data_path=str(base))) == 8


def test_clevr_images_object_filter_and_test_split(tmp_path: Path) -> None:
    base = str(write_clevr_v1(tmp_path))
    six = build_dataset("clevr_images", "train", 16, data_path=base, max_objects=6)
    expected = [i for i in range(12) if clevr_count(i) <= 6]
    assert [int(Path(p).stem.split("_")[-1]) for p in six.paths] == expected
    assert all(six[i]["num_objects"] <= 6 for i in range(len(six)))
    assert len(build_dataset("clevr_images", "test", 16, data_path=base)) == 4  # listed from the folder
    with pytest.raises(UserError, match="no test scene file"):
        build_dataset("clevr_images", "test", 16, data_path=base, max_objects=6)


def test_clevr_images_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unzip CLEVR_v1.0.zip"):
        build_dataset("clevr_images", "train", 16, data_path=str(tmp_path))
    base = write_clevr_v1(tmp_path / "d")
    (base / "images" / "train" / "CLEVR_train_000003.png").unlink()
    with pytest.raises(UserError, match="1 of 12 CLEVR train images are listed but absent"):
        build_dataset("clevr_images", "train", 16, data_path=str(base))


# --------------------------------------------------------------------------------- 3D Shapes


def test_shapes3d_seed_splits_separate_floor_colours(tmp_path: Path) -> None:
    path = write_3dshapes(tmp_path)
    train, val, test = (build_dataset("shapes3d", s, 64, data_path=str(tmp_path)) for s in ("train", "val", "test"))
    # 480 images split as the 480,000 of the real file: [0, 400), [401, 430), [431, 460).
    assert list(train.indices) == list(range(400)) and list(val.indices) == list(range(401, 430))
    assert list(test.indices) == list(range(431, 460))
    floor = lambda ds: {round(float(ds[i]["factors"][0]) * 9) for i in range(len(ds))}  # noqa: E731
    assert floor(val) == {8} and floor(test) == {8, 9} and 9 not in floor(train)
    item = val[0]
    assert item["image"].shape == (3, 64, 64) and item["index"] == 401
    assert item["image"][0, 0, 0].item() == pytest.approx((401 % 256) / 255)  # image i is row i, not resized
    shuffled = build_dataset("shapes3d", "val", 64, data_path=str(path), shapes3d_splits="shuffled")
    assert len(shuffled) == len(val) and floor(shuffled) != {8}
    shuffled_train = build_dataset("shapes3d", "train", 64, data_path=str(path), shapes3d_splits="shuffled")
    assert not set(shuffled.indices) & set(shuffled_train.indices)
    assert build_dataset("shapes3d", "train", 32, data_path=str(path))[0]["image"].shape == (3, 32, 32)


def test_shapes3d_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="3dshapes.h5 not found; .*storage.googleapis.com/3d-shapes"):
        build_dataset("shapes3d", "train", 64, data_path=str(tmp_path))
    with h5py.File(tmp_path / "3dshapes.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((4, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="no labels dataset"):
        build_dataset("shapes3d", "train", 64, data_path=str(tmp_path))
    with h5py.File(tmp_path / "3dshapes.h5", "a") as f:
        f.create_dataset("labels", data=np.zeros((4, 6)))
        del f["images"]
        f.create_dataset("images", data=np.zeros((4, 64, 64, 3), dtype=np.float32))
    with pytest.raises(UserError, match="needs uint8"):
        build_dataset("shapes3d", "train", 64, data_path=str(tmp_path))


# ------------------------------------------------------------------------------------ RAVENS


def test_ravens_crops_follow_the_seed() -> None:
    assert crop_box(480, 640, True) == (232, 470, 50, 590)  # rows 232:-10, cols 50:-50: 238 x 540
    assert crop_box(480, 640, False) == (0, 480, 70, 570)  # CenterCrop((480, 500))
    assert crop_box(48, 64, True) == (23, 47, 5, 59)  # scaled with smaller frames


def test_ravens_camera_selection_filter_and_masks(tmp_path: Path) -> None:
    root = str(write_ravens(tmp_path))
    front = build_dataset("ravens", "train", 16, data_path=root)  # alternative crop: front camera only
    assert list(front.rows) == [0, 3, 6, 9, 12, 15] and {front[i]["camera"] for i in range(6)} == {0}
    assert "mask_instance" not in front[0]  # training split: images only
    assert round(front[1]["image"][0, 0, 0].item() * 255) == 1  # scene 1, camera 0
    every = build_dataset("ravens", "train", 16, data_path=root, alternative_crop=False)
    assert len(every) == 18 and [every[i]["camera"] for i in range(3)] == [0, 1, 2]
    assert front[0]["image"][1].max() == 0 and every[0]["image"][1].max() > 0.7  # the crops differ as specified
    left = build_dataset("ravens", "train", 16, data_path=root, ravens_camera="left")
    assert round(left[2]["image"][0, 0, 0].item() * 255) == 40 + 2
    counts = h5py.File(tmp_path / "ravens_robot_data_train.h5")["num_objects_on_table"][:]
    few = build_dataset("ravens", "train", 16, data_path=root, max_objects=5, ravens_camera="all")
    assert len(few) == 3 * int((counts <= 5).sum()) and all(few[i]["num_objects"] <= 5 for i in range(len(few)))
    val = build_dataset("ravens", "val", 16, mask_size=64, data_path=root)  # val reads the test file
    assert len(val) == 4 and val.path.name == "ravens_robot_data_test.h5"
    item = val[0]  # an 8-object scene: ids up to 12 survive (no fixed one-hot of 12)
    assert item["mask_instance"].max().item() == 12 and item["mask_ignore"].sum().item() > 0
    assert set(item["mask_instance"][item["mask_ignore"]].tolist()) == {0}


def test_ravens_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no ravens_\\*_train.h5 .*prepare_ravens.py"):
        build_dataset("ravens", "train", 16, data_path=str(tmp_path))
    write_ravens(tmp_path)
    write_ravens_chunk(tmp_path / "ravens_other_train.h5", ravens_arrays(2))
    with pytest.raises(UserError, match="2 files match"):
        build_dataset("ravens", "train", 16, data_path=str(tmp_path))
    (tmp_path / "ravens_other_train.h5").unlink()
    arrays = ravens_arrays(2)
    arrays["num_objects_on_table"] = arrays["num_objects_on_table"][:1]
    write_ravens_chunk(tmp_path / "bad" / "ravens_x_test.h5", arrays)
    with pytest.raises(UserError, match="every scene needs 3 views"):
        build_dataset("ravens", "test", 16, data_path=str(tmp_path / "bad"))


def _prepare_ravens():
    spec = importlib.util.spec_from_file_location("prepare_ravens", REPO / "scripts" / "prepare_ravens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_ravens_merges_chunks_in_order(tmp_path: Path) -> None:
    first, second = ravens_arrays(2, seed=0), ravens_arrays(3, seed=5)
    a = write_ravens_chunk(tmp_path / "ravens_robot_data_train_0.h5", first)
    b = write_ravens_chunk(tmp_path / "ravens_robot_data_train_23334.h5", second)
    t = write_ravens_chunk(tmp_path / "ravens_robot_data_test_1.h5", ravens_arrays(1))
    prepare = _prepare_ravens()
    assert prepare.main(["--train", str(a), str(b), "--test", str(t), "--out", str(tmp_path / "out")]) == {"train": 5, "test": 1}
    with h5py.File(tmp_path / "out" / "ravens_robot_data_train.h5") as f:
        for key in ("color", "segm", "num_objects_on_table"):
            np.testing.assert_array_equal(f[key][:], np.concatenate([first[key], second[key]]))
            assert f[key].maxshape[0] is None
    assert len(build_dataset("ravens", "train", 16, data_path=str(tmp_path / "out"))) == 5
    with pytest.raises(UserError, match="exists"):
        prepare.main(["--train", str(a), "--out", str(tmp_path / "out")])
    with pytest.raises(UserError, match="not found"):
        prepare.main(["--test", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "out2")])


# ----------------------------------------------------------------------------------- Sketchy


def test_sketchy_episode_splits_and_listing(tmp_path: Path) -> None:
    write_sketchy(tmp_path, timesteps=2)
    train = build_dataset("sketchy", "train", 128, data_path=str(tmp_path))  # parent of processed/ works
    assert len(train) == 2 * 2 * 14 and train.paths == sorted(train.paths)  # state files are skipped
    assert all("/train/ep00000" in p for p in train.paths)
    val = build_dataset("sketchy", "val", 32, data_path=str(tmp_path / "processed"))  # val reads valid/
    assert len(val) == 28 and all("/valid/ep000002/" in p for p in val.paths)
    item = val[0]
    assert item["image"].shape == (3, 32, 32) and "mask_instance" not in item
    assert round(item["image"][0, 0, 0].item() * 255) == 20  # episode 2, camera fl
    assert len(build_dataset("sketchy", "test", 128, data_path=str(tmp_path))) == 28


def test_sketchy_rejects_an_episode_in_two_splits(tmp_path: Path) -> None:
    write_sketchy(tmp_path, episodes={"train": [0, 1], "valid": [1]})
    with pytest.raises(UserError, match="episode ep000001 is in both"):
        build_dataset("sketchy", "train", 128, data_path=str(tmp_path))
    with pytest.raises(UserError, match="Sketchy valid folder .* not found"):
        build_dataset("sketchy", "val", 128, data_path=str(write_sketchy(tmp_path / "b", {"train": [0]})))


# ----------------------------------------------------------------------------- options, layout


def test_dataset_options_are_refused_where_ignored(tmp_path: Path) -> None:
    write_3dshapes(tmp_path)
    with pytest.raises(UserError, match="--ravens_camera applies to --dataset ravens, not shapes3d"):
        build_dataset("shapes3d", "train", 64, data_path=str(tmp_path), ravens_camera="left")
    with pytest.raises(UserError, match="--max_n_objects applies .* not clevr6 .*clevr6/clevr10"):
        build_dataset("clevr6", "train", 64, data_path=str(tmp_path), max_objects=3)
    with pytest.raises(UserError, match="--shapes3d_splits applies"):
        build_dataset("sketchy", "train", 64, data_path=str(tmp_path), shapes3d_splits="seed")


@pytest.mark.parametrize("name", ["clevr_images", "shapes3d", "ravens", "sketchy"])
def test_check_layout_names_what_is_missing(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError) as info:
        check_layout(name, str(tmp_path))
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


# -------------------------------------------------------------------------------------- CLI

SA_TINY = ["--image_size", "32", "--decoder_upsamples", "2", "--num_slots", "3", "--slot_size", "16",
           "--mlp_hidden_size", "16", "--encoder_channels", "8", "--decoder_channels", "8", "--kernel_size", "3"]
SLATE_TINY = ["--image_size", "32", "--vocab_size", "32", "--d_model", "32", "--num_heads", "2", "--num_dec_blocks",
              "1", "--slot_size", "16", "--mlp_hidden_size", "16", "--num_slots", "3", "--dvae_hidden_size", "16",
              "--lr_warmup_steps", "2", "--tau_steps", "4"]
GNM_TINY = ["--image_size", "32", "--enc_dim", "16", "--draw_hidden", "16", "--mlp_hidden", "32", "--z_what_dim", "8",
            "--z_global_dim", "4", "--draw_steps", "2"]
COMMON = ["--batch_size", "4", "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4",
          "--num_workers", "0"]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run(module: str, argv: list[str], tmp_path: Path) -> Path:
    import importlib

    importlib.import_module(module).main([*argv, *COMMON, "--log_path", str(tmp_path / "logs")])
    return next((tmp_path / "logs").iterdir())


def test_clevr_images_trains_reporting_reconstruction_only(tmp_path: Path) -> None:
    import eval_spot

    # --max_n_objects 4 keeps 4 of the 12 training scenes: one batch per epoch (3 without the flag).
    data = ["--dataset", "clevr_images", "--data_path", str(write_clevr_v1(tmp_path / "data")), "--max_n_objects", "4"]
    handler = _Lines()
    logging.getLogger("ocl").addHandler(handler)
    try:
        run = _run("train_slot_attention", [*SA_TINY, *data, "--epochs", "2"], tmp_path)
    finally:
        logging.getLogger("ocl").removeHandler(handler)
    assert load_checkpoint(run)["step"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["mse"] >= 0 and "fg_ari" not in r for r in records)
    said = [line for line in handler.lines if "no ARI/mBO is computed" in line]
    assert len(said) == 1 and "original CLEVR (v1.0) has no segmentation masks" in said[0]
    assert list((run / "viz").glob("step_*.png"))  # slot pictures without ground truth
    with pytest.raises(UserError, match="has no segmentation masks, so eval_spot.py has nothing to score"):
        eval_spot.main(["--checkpoint_path", str(run), *data, "--num_workers", "0", "--no_progress"])


def test_shapes3d_trains_with_slate(tmp_path: Path) -> None:
    write_3dshapes(tmp_path / "data")
    run = _run("train_slate", [*SLATE_TINY, "--dataset", "shapes3d", "--data_path", str(tmp_path / "data"),
                               "--epochs", "1"], tmp_path)
    assert load_checkpoint(run)["method"] == "slate"
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "fg_ari" not in record and record["mse"] >= 0


def test_sketchy_trains_with_slot_attention(tmp_path: Path) -> None:
    data = str(write_sketchy(tmp_path / "data"))
    run = _run("train_slot_attention", [*SA_TINY, "--dataset", "sketchy", "--data_path", data, "--epochs", "1"], tmp_path)
    assert load_checkpoint(run)["step"] == 2


def test_ravens_trains_with_gnm_and_evaluates(tmp_path: Path) -> None:
    import eval_spot

    data = ["--dataset", "ravens", "--data_path", str(write_ravens(tmp_path / "data", train_scenes=8)),
            "--ravens_camera", "all"]
    run = _run("train_gnm", [*GNM_TINY, *data, "--epochs", "1"], tmp_path)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert -100 <= record["fg_ari"] <= 100  # RAVENS has masks: ARI is scored
    result = eval_spot.main(["--checkpoint_path", str(run), *data, "--split", "test", "--val_samples", "4",
                             "--num_workers", "0", "--no_progress", "--log_path", str(tmp_path / "eval")])
    assert result["split"] == "test" and 0 <= result["mbo_i"] <= 100


@pytest.mark.parametrize("name", ["clevr_images", "shapes3d", "ravens", "sketchy"])
def test_wrong_layout_stops_before_a_run_folder(tmp_path: Path, name: str) -> None:
    import train_slot_attention

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        train_slot_attention.main([*SA_TINY, "--dataset", name, "--data_path", str(tmp_path / "empty"),
                                   "--log_path", str(tmp_path / "logs")])
    assert "\n" not in str(info.value)
    assert not (tmp_path / "logs").exists()


def test_images_are_float_in_unit_range(tmp_path: Path) -> None:
    write_3dshapes(tmp_path)
    image = build_dataset("shapes3d", "train", 64, data_path=str(tmp_path))[3]["image"]
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1


def test_data_flags_reach_the_datasets(tmp_path: Path) -> None:
    """--ravens_camera, --alternative_crop, --max_n_objects and --shapes3d_splits as typed on a training script."""
    import train_slot_attention
    from utils.cli import build_datasets

    ravens, shapes = str(write_ravens(tmp_path / "ravens")), str(write_3dshapes(tmp_path / "shapes").parent)

    def sets(*flags: str):
        args = train_slot_attention.build_parser().parse_args(list(flags))
        return build_datasets(args, None)

    train, val = sets("--dataset", "ravens", "--data_path", ravens, "--ravens_camera", "left")
    assert {train[i]["camera"] for i in range(len(train))} == {1} and val[0]["camera"] == 1
    train, _ = sets("--dataset", "ravens", "--data_path", ravens, "--alternative_crop", "False")
    assert len(train) == 18 and train.crop == crop_box(48, 64, False)
    counts = h5py.File(tmp_path / "ravens" / "ravens_robot_data_train.h5")["num_objects_on_table"][:]
    train, _ = sets("--dataset", "ravens", "--data_path", ravens, "--max_n_objects", "5")
    assert len(train) == int((counts <= 5).sum())
    seed_val = sets("--dataset", "shapes3d", "--data_path", shapes)[1]
    shuffled_val = sets("--dataset", "shapes3d", "--data_path", shapes, "--shapes3d_splits", "shuffled")[1]
    assert list(seed_val.indices) == list(range(401, 430)) and list(shuffled_val.indices) != list(seed_val.indices)


def test_hdf5_datasets_survive_pickling_for_workers(tmp_path: Path) -> None:
    """DataLoader workers get a pickled copy: the open HDF5 handle must not travel, the copy reopens it."""
    import pickle

    for dataset in (build_dataset("shapes3d", "train", 64, data_path=str(write_3dshapes(tmp_path / "s"))),
                    build_dataset("ravens", "val", 16, data_path=str(write_ravens(tmp_path / "r")))):
        first = dataset[1]  # opens the file in this process
        copy = pickle.loads(pickle.dumps(dataset))
        assert torch.equal(copy[1]["image"], first["image"])
