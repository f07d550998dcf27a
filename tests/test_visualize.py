from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ground.palette import palette
from utils.visualize import colorize, overlay, save_mask_grid


def test_palette_is_voc():
    colors = palette()
    assert colors[0].tolist() == [0, 0, 0] and colors[1].tolist() == [128, 0, 0] and colors[2].tolist() == [0, 128, 0]


def test_ground_truth_background_is_left_unblended():
    image = torch.full((3, 4, 4), 0.5)
    labels = torch.zeros(4, 4, dtype=torch.long)
    labels[0, 0] = 1
    out = overlay(image, labels, background=True)
    assert torch.equal(out[:, 1:, 1:], image[:, 1:, 1:])
    # Object 1 in the ground truth gets the colour of slot 0.
    torch.testing.assert_close(out[:, 0, 0], 0.5 * image[:, 0, 0] + 0.5 * colorize(torch.zeros(1, 1, dtype=torch.long))[:, 0, 0])


def test_grid_layout(tmp_path: Path):
    images = torch.rand(3, 3, 32, 32)
    rows = {"ground truth": torch.randint(0, 3, (3, 32, 32)), "decoder masks": torch.randint(0, 4, (3, 8, 8))}
    save_mask_grid(tmp_path / "g.png", images, rows)
    array = np.asarray(Image.open(tmp_path / "g.png"))
    # 3 rows (image + 2 overlays), tiles enlarged to 128 px, plus a left margin naming the rows.
    margin = array.shape[1] - 3 * 128
    assert array.shape[0] == 3 * 128 and 40 < margin < 200
    for row in range(3):  # every row has its name written (dark pixels) in the margin
        assert (array[row * 128 : (row + 1) * 128, :margin] < 100).any(), row


def test_prediction_grid_layout_and_segmentations(tmp_path: Path):
    from utils.visualize import save_prediction_grid, segmentation_maps

    masks = torch.tensor([[0.6, 0.3], [0.3, 0.4], [0.1, 0.3]]).view(1, 3, 1, 2)  # [B, K, H, W]
    raw, processed = segmentation_maps(masks, threshold=0.5)
    assert raw.tolist() == [[[0, 1]]] and processed.tolist() == [[[0, -1]]]
    assert colorize(processed[0])[:, 0, 1].tolist() == [0.0, 0.0, 0.0]  # spread-out pixels are black

    images = torch.rand(2, 3, 16, 16)
    visuals = {
        "reconstruction": torch.rand(2, 3, 16, 16),
        "slot_rgb": torch.rand(2, 4, 3, 16, 16),
        "slot_masks": torch.softmax(torch.randn(2, 4, 8, 8), dim=1),  # resized to the image
    }
    save_prediction_grid(tmp_path / "p.png", images, visuals, min_tile=32)
    array = np.asarray(Image.open(tmp_path / "p.png"))
    # 2 rows; columns: image, reconstruction, raw and processed segmentation, 4 slots; tiles 32 px;
    # a top margin names the columns.
    top = array.shape[0] - 2 * 32
    assert array.shape[1:] == (8 * 32, 3) and 10 < top < 40
    assert (array[:top] < 100).any()
    del visuals["reconstruction"], visuals["slot_rgb"]
    save_prediction_grid(tmp_path / "q.png", images, visuals, min_tile=16)
    assert np.asarray(Image.open(tmp_path / "q.png")).shape[1:] == (7 * 16, 3)


def test_labelled_keeps_the_grid_and_names_rows_and_columns():
    from utils.visualize import labelled

    grid = torch.rand(3, 40, 60)
    picture = np.asarray(labelled(grid, ["a", "bb"], row_height=20, column_labels=["x", "y", "z"], column_width=20))
    plain = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    top, left = picture.shape[0] - 40, picture.shape[1] - 60
    assert top > 0 and left > 0
    assert np.array_equal(picture[top:, left:], plain)  # the grid itself is untouched
    assert (picture[top:, :left] < 100).any() and (picture[:top, left:] < 100).any()
