"""scripts/plot_metrics.py: evaluation curves from metrics.jsonl, one clear line on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scripts import plot_metrics
from ground.errors import UserError


def write_records(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_draws_one_panel_per_metric(tmp_path: Path) -> None:
    write_records(tmp_path, [{"step": s, "epoch": s // 4, "mse": 1 / s, "fg_ari": 10.0 * s} for s in (4, 8, 12)])
    out = plot_metrics.main([str(tmp_path), "--metrics", "mse", "fg_ari"])
    picture = np.asarray(Image.open(out))
    assert picture.shape == (180, 2 * 260, 3)
    blue = (picture[..., 2] > 150) & (picture[..., 0] < 80)
    assert blue[:, :260].any() and blue[:, 260:].any()  # a curve in each panel
    # fg_ari rises: its curve's right end is higher (smaller row) than its left end.
    rows, cols = np.nonzero(blue[:, 260:])
    assert rows[cols.argmax()] < rows[cols.argmin()]


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        plot_metrics.main([str(tmp_path / "missing")])
    write_records(tmp_path, [{"step": 1, "mse": 0.5}])
    with pytest.raises(UserError, match="fg_ari not in .* it records mse"):
        plot_metrics.main([str(tmp_path), "--metrics", "fg_ari"])
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "mse": 0.5}\n{"step": 2, "ms')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        plot_metrics.main([str(tmp_path)])
