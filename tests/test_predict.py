"""predict.py: checkpoints of every image method on user image folders, video frames, bad input."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import predict
from ground.errors import UserError
from ground.palette import palette
from models import METHODS
from utils.checkpoint import load_checkpoint
from utils.inference import labels_for_input, match_slots, read_image, to_model_input
from utils.visualize import contours, label_png

REPO = Path(__file__).resolve().parents[1]
NUM_SLOTS = 3
TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", str(NUM_SLOTS), "--slot_size", "16", "--mlp_hidden_size", "32", "--batch_size", "4",
    "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4", "--num_workers", "0",
    "--lr_warmup_steps", "0", "--epochs", "1",
]
# Method -> (training module, flags) for a checkpoint trained for a few steps on shapes. Add a row per
# image method; every test below that takes ``trained`` then runs on it.
TRAIN_COMMANDS: dict[str, tuple[str, list[str]]] = {
    "dinosaur": ("train_spot", [*TINY, "--dec_type", "mlp", "--train_permutations", "standard",
                                "--use_slot_proj", "False", "--mlp_dec_hidden", "32"]),
    "spot": ("train_spot", [*TINY, "--dec_type", "transformer", "--train_permutations", "random",
                            "--num_dec_blocks", "1", "--num_heads", "2"]),
    "slot_attention": ("train_slot_attention", [
        "--dataset", "shapes", "--image_size", "32", "--decoder_upsamples", "2", "--num_slots", str(NUM_SLOTS),
        "--slot_size", "16", "--mlp_hidden_size", "16", "--encoder_channels", "8", "--decoder_channels", "8",
        "--kernel_size", "3", "--batch_size", "4", "--train_samples", "8", "--val_samples", "4", "--num_workers", "0",
        "--epochs", "1"]),
    "slate": ("train_slate", [
        "--dataset", "shapes", "--image_size", "32", "--vocab_size", "32", "--d_model", "32", "--num_heads", "2",
        "--num_dec_blocks", "1", "--slot_size", "16", "--mlp_hidden_size", "16", "--num_slots", str(NUM_SLOTS),
        "--dvae_hidden_size", "16", "--batch_size", "4", "--train_samples", "8", "--val_samples", "4",
        "--num_workers", "0", "--lr_warmup_steps", "2", "--tau_steps", "4", "--epochs", "1"]),
    "adaslot": ("train_adaslot", [
        "--dataset", "shapes", "--encoder", "vit_micro_p8", "--no_pretrained", "--resize_to", "32", "32",
        "--num_slots", str(NUM_SLOTS), "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
        "--batch_size", "4", "--train_samples", "8", "--val_samples", "4", "--train_workers", "0",
        "--val_workers", "0", "--num_iters", "2", "--use_adaptive_slot_attention"]),
}


def train_run(name: str, log_path: Path) -> Path:
    module, flags = TRAIN_COMMANDS[name]
    importlib.import_module(module).main([*flags, "--log_path", str(log_path)])
    return next(p for p in log_path.iterdir() if p.is_dir())


@pytest.fixture(scope="module", params=sorted(TRAIN_COMMANDS))
def trained(request, tmp_path_factory) -> Path:
    """Run folder of a checkpoint of each method in TRAIN_COMMANDS."""
    return train_run(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def dinosaur_run(tmp_path_factory) -> Path:
    return train_run("dinosaur", tmp_path_factory.mktemp("dinosaur_single"))


def write_images(folder: Path) -> dict[str, tuple[int, int]]:
    """RGB PNG, JPEG, grayscale, RGBA, a corrupt file and a text file; returns name -> (H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (50, 30, 3), dtype=np.uint8)).save(folder / "tall.jpg")
    Image.fromarray(rng.integers(0, 256, (33, 47), dtype=np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), mode="RGBA").save(folder / "rgba.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("not an image, ignored")
    return {"wide": (40, 60), "tall": (50, 30), "gray": (33, 47), "rgba": (20, 24)}


def test_predict_on_image_folder(trained: Path, tmp_path: Path) -> None:
    sizes = write_images(tmp_path / "in")
    result = predict.main(["--checkpoint", str(trained), "--input", str(tmp_path / "in"), "--output",
                           str(tmp_path / "out"), "--batch_size", "3", "--no_progress"])
    assert [Path(p).name for p in result["skipped"]] == ["corrupt.jpg"]
    assert sorted(p.name for p in result["written"]) == sorted(sizes) and result["masks"] == METHODS[load_checkpoint(trained)["method"]]().primary_masks
    assert not result["video"]
    for name, (height, width) in sizes.items():
        folder = tmp_path / "out" / name
        overlay = Image.open(folder / "overlay.png")
        assert overlay.size == (width, height) and overlay.mode == "RGB"
        label_picture = Image.open(folder / "labels.png")
        assert label_picture.mode == "P" and label_picture.size == (width, height)
        labels = np.asarray(label_picture)
        assert set(np.unique(labels)) <= set(range(NUM_SLOTS))
        record = json.loads((folder / "slots.json").read_text())
        assert (record["width"], record["height"], record["num_slots"]) == (width, height, NUM_SLOTS)
        assert sum(slot["area"] for slot in record["slots"]) == height * width
        for slot in record["slots"]:
            claimed = labels == slot["slot"]
            assert slot["area"] == claimed.sum()
            cutout = np.asarray(Image.open(folder / f"slot_{slot['slot']:02d}.png"))
            assert cutout.shape == (height, width, 4)
            np.testing.assert_array_equal(cutout[..., 3] > 0, claimed)
            if slot["area"]:
                box = slot["bbox"]
                rows, cols = np.nonzero(claimed)
                assert (box["x"], box["y"]) == (cols.min(), rows.min())
                assert (box["width"], box["height"]) == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
            else:
                assert slot["bbox"] is None
    summary = Image.open(tmp_path / "out" / "summary.png")
    # 4 columns of 192-px tiles (input above overlay) plus margins naming the rows and the inputs.
    width, height = summary.size
    assert 4 * 192 < width < 4 * 192 + 100 and 2 * 192 < height < 2 * 192 + 40


def test_labels_follow_the_model_masks(dinosaur_run: Path, tmp_path: Path) -> None:
    """labels.png is the upsampled argmax of the model's masks on the resized input."""
    write_images(tmp_path / "in")
    predict.main(["--checkpoint", str(dinosaur_run), "--input", str(tmp_path / "in" / "wide.png"),
                  "--output", str(tmp_path / "out"), "--masks", "slots", "--no_progress", "--device", "cpu"])
    args = predict.build_parser().parse_args(["--checkpoint", str(dinosaur_run), "--input", "x", "--output", "y"])
    model, _, size = predict.load_model(args, torch.device("cpu"))
    image = read_image(tmp_path / "in" / "wide.png")
    torch.manual_seed(0)
    with torch.no_grad():
        masks = model({"image": to_model_input(image, size, "stretch")[None]})["masks"]["slots"]
    expected = torch.nn.functional.interpolate(masks, size=(40, 60), mode="bilinear").argmax(1)[0]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "wide" / "labels.png")), expected.numpy())


def test_video_frames_get_consistent_ids(dinosaur_run: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for t in range(3):
        Image.fromarray(np.roll(base, t, axis=1)).save(frames / f"{t:05d}.png")
    result = predict.main(["--checkpoint", str(dinosaur_run), "--input", str(frames), "--output",
                           str(tmp_path / "out"), "--batch_size", "2", "--no_progress"])
    assert result["video"] and [p.name for p in result["written"]] == ["00000", "00001", "00002"]
    for name in ("00000", "00001", "00002"):
        record = json.loads((tmp_path / "out" / name / "slots.json").read_text())
        assert sorted(s["model_slot"] for s in record["slots"]) == list(range(NUM_SLOTS))


def test_match_slots_recovers_a_permutation() -> None:
    previous = torch.zeros(12, 12, dtype=torch.long)
    previous[:, 4:8], previous[:, 8:] = 1, 2
    perm = torch.tensor([2, 0, 1])  # this frame's slot s is the previous frame's id perm[s]
    labels = torch.argsort(perm)[previous]
    labels[0, 0] = 2  # a little noise
    torch.testing.assert_close(match_slots(previous, labels, 3), perm)


def test_bad_inputs(dinosaur_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    common = ["--checkpoint", str(dinosaur_run), "--output", str(tmp_path / "out"), "--no_progress"]
    with pytest.raises(UserError, match="holds no image files"):
        predict.main([*common, "--input", str(tmp_path / "empty")])
    with pytest.raises(UserError, match="does not exist"):
        predict.main([*common, "--input", str(tmp_path / "missing")])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="none of the 1 files"):
        predict.main([*common, "--input", str(tmp_path / "broken")])
    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    with pytest.raises(UserError, match="is a file"):
        predict.main([*common[:2], "--output", str(tmp_path / "one.png"), "--input", str(tmp_path / "one.png")])
    with pytest.raises(UserError, match="mask sources decoder, slots"):
        predict.main([*common, "--input", str(tmp_path / "one.png"), "--masks", "alpha"])


def test_refuses_methods_it_cannot_render(dinosaur_run: Path, tmp_path: Path, monkeypatch) -> None:
    from models import METHODS

    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    state = load_checkpoint(dinosaur_run)
    torch.save({**state, "method": "future_method"}, tmp_path / "other.pt.tar")
    # The CLI prints one error line and exits with status 2.
    proc = subprocess.run([sys.executable, "predict.py", "--checkpoint", str(tmp_path / "other.pt.tar"), "--input",
                           str(tmp_path / "one.png"), "--output", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: checkpoint {tmp_path / 'other.pt.tar'} is a 'future_method' checkpoint, which this version of the "
        f"code cannot build (known: {', '.join(METHODS)})"
    ]
    assert not (tmp_path / "out").exists()

    from models.spot import SPOT

    monkeypatch.setattr(SPOT, "forward", lambda self, batch: {"loss": torch.zeros(())})
    with pytest.raises(UserError, match="returns no slot masks"):
        predict.main(["--checkpoint", str(dinosaur_run), "--input", str(tmp_path / "one.png"),
                      "--output", str(tmp_path / "out2"), "--no_progress"])
    assert not (tmp_path / "out2").exists()


def test_read_image_converts_modes(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 51, dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0], rgba[0, 0, 3] = 255, 255  # red, opaque at (0, 0) only
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (3, 4, 5) and torch.allclose(gray, torch.full_like(gray, 0.2))
    composited = read_image(tmp_path / "rgba.png")
    assert composited[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # opaque red
    assert composited[:, 1, 1].tolist() == [1.0, 1.0, 1.0]  # transparent: white
    assert torch.allclose(read_image(tmp_path / "deep.png"), torch.ones(3, 4, 5))


def test_resize_modes_map_masks_back() -> None:
    # A 20 x 40 image; slot 1 holds the top quarter of the square model input, slot 0 the rest.
    masks = torch.zeros(2, 4, 4)
    masks[1, 0], masks[0, 1:] = 1, 1
    stretched = labels_for_input(masks, 20, 40, "stretch")
    assert stretched.shape == (20, 40) and (stretched[:4] == 1).all() and (stretched[6:] == 0).all()
    # With pad the top quarter of the canvas (rows 0-9 of 40) is padding above the image.
    assert (labels_for_input(masks, 20, 40, "pad") == 0).all()
    image = torch.zeros(3, 20, 40)
    image[:, :, 20:] = 1
    canvas = to_model_input(image, 8, "pad")
    assert canvas.shape == (3, 8, 8)
    torch.testing.assert_close(canvas[:, 0], torch.full((3, 8), 0.5), atol=0.02, rtol=0)  # mean colour above
    assert canvas[:, 4, 0].max() < 0.05 and canvas[:, 4, 7].min() > 0.95
    # AdaSlot: a dropped slot never wins the argmax.
    keep = torch.tensor([1, 0])
    assert (labels_for_input(masks, 20, 40, "stretch", keep) == 0).all()


def test_label_png_palette_and_contours(tmp_path: Path) -> None:
    labels = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    label_png(labels).save(tmp_path / "l.png")
    picture = Image.open(tmp_path / "l.png")
    np.testing.assert_array_equal(np.asarray(picture), labels.numpy())
    # Viewers show slot i in VOC colour i + 1, as the overlays draw it.
    assert np.asarray(picture.convert("RGB"))[0, 0].tolist() == palette()[1].tolist()
    edge = contours(labels)
    assert edge[0, 1] and edge[0, 2] and not edge[0, 0]


def test_adaslot_style_keep_flags(dinosaur_run: Path, tmp_path: Path, monkeypatch) -> None:
    """A model that returns slot_keep (AdaSlot) gets per-slot "kept"; dropped slots claim no pixel."""
    from models.spot import SPOT

    forward = SPOT.forward

    def with_keep(self, batch):
        out = forward(self, batch)
        out["slot_keep"] = torch.tensor([[1.0, 0.0, 1.0]]).expand(batch["image"].shape[0], -1)
        return out

    monkeypatch.setattr(SPOT, "forward", with_keep)
    write_images(tmp_path / "in")
    predict.main(["--checkpoint", str(dinosaur_run), "--input", str(tmp_path / "in"), "--output",
                  str(tmp_path / "out"), "--no_progress"])
    record = json.loads((tmp_path / "out" / "wide" / "slots.json").read_text())
    assert [s["kept"] for s in record["slots"]] == [True, False, True]
    assert record["slots"][1]["area"] == 0 and 1 not in np.unique(np.asarray(Image.open(tmp_path / "out" / "wide" / "labels.png")))
