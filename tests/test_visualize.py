from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.visualize import colorize, overlay, palette, save_mask_grid


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
    assert array.shape == (3 * 128, 3 * 128, 3)  # 3 rows (image + 2 overlays), tiles enlarged to 128 px


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
    # 2 rows; columns: image, reconstruction, raw and processed segmentation, 4 slots; tiles 32 px.
    assert array.shape == (2 * 32, 8 * 32, 3)
    del visuals["reconstruction"], visuals["slot_rgb"]
    save_prediction_grid(tmp_path / "q.png", images, visuals, min_tile=16)
    assert np.asarray(Image.open(tmp_path / "q.png")).shape == (2 * 16, 7 * 16, 3)
