"""train_spot.py then eval_spot.py on the CLEVR, Tetrominoes and ClevrTex fixtures (tiny random encoder)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import eval_spot
import train_spot
from ground.errors import UserError
from utils.checkpoint import load_checkpoint
from tests.fixtures_pixel import write_clevr_h5, write_clevrtex_folder, write_tetrominoes_h5

TINY = [
    "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained", "--num_slots", "4",
    "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1", "--num_heads", "2",
    "--mlp_dec_hidden", "32", "--batch_size", "4", "--eval_batch_size", "4", "--train_samples", "8",
    "--val_samples", "4", "--num_workers", "0", "--lr_warmup_steps", "1", "--dec_type", "mlp",
    "--train_permutations", "standard", "--use_slot_proj", "False", "--epochs", "1",
]
FIXTURES = {
    "clevr6": (write_clevr_h5, 128),
    "tetrominoes": (write_tetrominoes_h5, 35),
    "clevrtex": (write_clevrtex_folder, 128),
}


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_train_then_eval(tmp_path: Path, monkeypatch, dataset: str) -> None:
    monkeypatch.setenv("OCL_CACHE_DIR", str(tmp_path / "cache"))  # ClevrTex's index, not ~/.cache
    writer, mask_size = FIXTURES[dataset]
    data_path = str(writer(tmp_path / "data"))
    data = ["--dataset", dataset, "--data_path", data_path]
    train_spot.main([*TINY, *data, "--log_path", str(tmp_path / "logs")])
    run = next((tmp_path / "logs").iterdir())
    assert load_checkpoint(run)["step"] == 2
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert -100 <= record["fg_ari"] <= 100
    result = eval_spot.main(["--checkpoint_path", str(run), *data, "--split", "test", "--val_samples", "4",
                             "--num_workers", "0", "--no_progress", "--log_path", str(tmp_path / "eval")])
    assert result["split"] == "test" and 0 <= result["mbo_i"] <= 100
    assert (tmp_path / "eval" / "masks.png").is_file()
    if dataset == "clevrtex":
        assert len(list((tmp_path / "cache").glob("clevrtex_full_*.json"))) == 1


def test_layout_error_is_one_line_before_training(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    args = [*TINY, "--dataset", "clevr", "--data_path", str(tmp_path / "data"), "--log_path", str(tmp_path / "logs")]
    with pytest.raises(UserError, match="clevr_with_masks.h5 not found") as info:
        train_spot.main(args)
    assert "\n" not in str(info.value)  # run_cli prints it as one "error:" line
    assert not list((tmp_path / "logs").rglob("checkpoint.pt.tar"))


# Pixel-space methods on the CLEVR fixture, each evaluated by the one evaluator (eval_spot.py).
PIXEL_METHODS = {
    "slot_attention": ("train_slot_attention", [
        "--image_size", "32", "--decoder_upsamples", "2", "--num_slots", "4", "--slot_size", "16",
        "--mlp_hidden_size", "16", "--encoder_channels", "8", "--decoder_channels", "8", "--kernel_size", "3"]),
    "slate": ("train_slate", [
        "--image_size", "32", "--vocab_size", "32", "--d_model", "32", "--num_heads", "2", "--num_dec_blocks", "1",
        "--slot_size", "16", "--mlp_hidden_size", "16", "--num_slots", "4", "--dvae_hidden_size", "16",
        "--lr_warmup_steps", "2", "--tau_steps", "4"]),
    "gnm": ("train_gnm", [
        "--image_size", "32", "--enc_dim", "16", "--draw_hidden", "16", "--mlp_hidden", "32", "--z_what_dim", "8",
        "--z_global_dim", "4", "--draw_steps", "2"]),
}


@pytest.mark.parametrize("method", sorted(PIXEL_METHODS))
def test_pixel_methods_train_and_evaluate_on_clevr(tmp_path: Path, method: str) -> None:
    import importlib

    module, flags = PIXEL_METHODS[method]
    data = ["--dataset", "clevr6", "--data_path", str(write_clevr_h5(tmp_path / "data"))]
    common = ["--batch_size", "4", "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4",
              "--num_workers", "0", "--epochs", "1"]
    importlib.import_module(module).main([*flags, *common, *data, "--log_path", str(tmp_path / "logs")])
    run = next((tmp_path / "logs").iterdir())
    assert load_checkpoint(run)["method"] == method
    result = eval_spot.main(["--checkpoint_path", str(run), *data, "--val_samples", "4", "--num_workers", "0",
                             "--no_progress", "--baselines", "--log_path", str(tmp_path / "eval")])
    assert result["method"] == method and 0 <= result["mbo_i"] <= 100 and "one_slot_fg_ari" in result
    assert (tmp_path / "eval" / "masks.png").is_file()
