"""World-size invariance: one process with the global batch and N processes with 1/N of it train
the same model, also when the step draws random numbers (keyed by models/noise.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import noise
from tests.test_distributed import torchrun
from utils.checkpoint import load_checkpoint

# SPOT with the default stochastic parts: shared-Gaussian slot noise and one random ordering per batch.
SPOT_TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "1",
    "--num_heads", "2", "--init_method", "shared_gaussian", "--train_permutations", "random",
    "--lr_warmup_steps", "0", "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4",
    "--num_workers", "0", "--epochs", "1", "--device", "cpu",
]


def only_run(root: Path) -> Path:
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def train(tmp_path: Path, name: str, nproc: int, batch_size: int, args: list[str], script: str,
          out_flag: str = "--log_path") -> dict:
    result = torchrun(nproc, *args, "--batch_size", str(batch_size), out_flag, str(tmp_path / name), script=script)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_checkpoint(only_run(tmp_path / name))


# Weights whose true gradient is zero, so that Adam turns rounding noise into updates of up to the
# LR: a bias shared by every slot cancels in the softmax over slots (one-head slot attention's query
# LayerNorm bias; Slot Attention's alpha-logit bias, channel 3 of the decoder's last layer).
ZERO_GRADIENT: tuple[tuple[str, int | None], ...] = (
    ("slot_attention.norm_slots.bias", None), ("student.slot_attention.norm_slots.bias", None),
    ("decoder.layers.6.bias", 3),
)


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5, ignore: tuple[tuple[str, int | None], ...] = ()) -> None:
    """Final weights equal to ``atol``, except the ``ignore`` entries (key, index or None for all)."""
    assert a["step"] == b["step"] > 0 and a["world_size"] != b["world_size"]
    assert a["model"].keys() == b["model"].keys()
    for key, index in ignore:
        for checkpoint in (a, b):
            if key in checkpoint["model"]:
                checkpoint["model"][key][... if index is None else index] = 0.0
    worst, key = max((float((a["model"][k].double() - b["model"][k].double()).abs().max()), k)
                     for k in a["model"] if a["model"][k].is_floating_point() and a["model"][k].numel())
    assert worst <= atol, f"max |difference| of the final weights {worst:.3g} > {atol} (in {key})"


def test_keys_depend_on_seed_step_and_global_position_only() -> None:
    # Rank r of W holds global positions r, r + W, ...: the keys of 1 x 4 are those of 2 x 2 interleaved.
    one = noise.sample_seeds(3, 7, range(4))
    assert torch.equal(noise.sample_seeds(3, 7, [0, 2]), one[[0, 2]])
    assert torch.equal(noise.sample_seeds(3, 7, [1, 3]), one[[1, 3]])
    assert len(set(one.tolist())) == 4 and one.dtype == torch.int64 and bool((one >= 0).all())
    assert not torch.equal(noise.sample_seeds(3, 8, range(4)), one)  # a new step: new keys
    assert not torch.equal(noise.sample_seeds(4, 7, range(4)), one)  # a new seed: new keys
    assert noise.step_seed(3, 7) != noise.step_seed(3, 8)


def test_keyed_draws_follow_the_sample_not_the_batch_it_is_in() -> None:
    keys = noise.sample_seeds(0, 5, range(4))
    with noise.keyed({"sample_seed": keys, "step_seed": torch.tensor(noise.step_seed(0, 5))}):
        whole = noise.randn(4, (3, 2), "slot_init")
        second = noise.randn(4, (3, 2), "slot_init")  # a second draw of the site: fresh numbers
        order = noise.step_randint(9, "spot_ordering")
    for rank in range(2):
        with noise.keyed({"sample_seed": keys[rank::2], "step_seed": torch.tensor(noise.step_seed(0, 5))}):
            torch.testing.assert_close(noise.randn(2, (3, 2), "slot_init"), whole[rank::2], rtol=0, atol=0)
            assert torch.equal(noise.step_randint(9, "spot_ordering"), order)
    assert not torch.allclose(whole, second)
    # Without keys nothing is keyed: the models fall back to their plain torch draws.
    assert noise.randn(4, (3, 2), "slot_init") is None and noise.step_randint(9, "x") is None
    torch.manual_seed(0)
    plain = torch.nn.functional.gumbel_softmax(torch.zeros(2, 5), tau=1.0, hard=True, dim=1)
    torch.manual_seed(0)
    assert torch.equal(noise.gumbel_softmax(torch.zeros(2, 5), 1.0, True, 1, "g"), plain)


def test_spot_shared_gaussian_random_orderings_two_processes_equal_one(tmp_path: Path) -> None:
    # Failed before the keyed draws: each rank drew its own slot noise and its own ordering.
    one = train(tmp_path, "one", 1, 4, SPOT_TINY, "train_spot.py")
    two = train(tmp_path, "two", 2, 2, SPOT_TINY, "train_spot.py")
    assert_same_weights(one, two, ignore=ZERO_GRADIENT[:2])


# Every other training script at tiny size: 1 process x batch 4 against 2 processes x batch 2, every
# stochastic part at its default (the slot noise, Gumbel draws, latents, dropout, augmentations).
SCRIPTS = {
    "spot_dropout": ("train_spot.py", "--log_path", [*SPOT_TINY, "--dropout", "0.1"]),
    "dinosaur": ("train_spot.py", "--log_path", [
        *SPOT_TINY, "--dec_type", "mlp", "--mlp_dec_hidden", "32", "--train_permutations", "standard",
        "--use_slot_proj", "False"]),
    "adaslot": ("train_adaslot.py", "--model_save_path", [
        "--dataset", "shapes", "--encoder", "vit_micro_p8", "--resize_to", "32", "32", "--train_workers", "0",
        "--val_workers", "0", "--no_pretrained", "--slot_size", "16", "--mlp_hidden_size", "32",
        "--mlp_dec_hidden", "32", "--train_samples", "8", "--val_samples", "4", "--eval_batch_size", "4",
        "--lr_warmup_steps", "0", "--num_iters", "2", "--num_slots", "3", "--device", "cpu"]),
    "slot_attention": ("train_slot_attention.py", "--log_path", [
        "--dataset", "shapes", "--image_size", "32", "--decoder_upsamples", "2", "--num_slots", "3",
        "--slot_size", "16", "--mlp_hidden_size", "16", "--encoder_channels", "8", "--decoder_channels", "8",
        "--kernel_size", "3", "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4",
        "--num_workers", "0", "--epochs", "1", "--device", "cpu",
        # Schedule lengths in whole steps of --batch_size: the same in samples only when they divide.
        "--warmup_steps_pct", "0", "--decay_steps_pct", "1"]),
    "slate": ("train_slate.py", "--log_path", [
        "--dataset", "shapes", "--image_size", "32", "--vocab_size", "32", "--d_model", "32", "--num_heads", "2",
        "--num_dec_blocks", "1", "--slot_size", "16", "--mlp_hidden_size", "16", "--num_slots", "3",
        "--dvae_hidden_size", "16", "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4",
        "--num_workers", "0", "--lr_warmup_steps", "0", "--tau_steps", "8", "--epochs", "1", "--device", "cpu"]),
    "gnm": ("train_gnm.py", "--log_path", [
        "--dataset", "shapes", "--image_size", "32", "--enc_dim", "16", "--draw_hidden", "16", "--mlp_hidden", "32",
        "--z_what_dim", "8", "--z_global_dim", "4", "--draw_steps", "2", "--eval_batch_size", "4",
        "--train_samples", "8", "--val_samples", "4", "--num_workers", "0", "--epochs", "1", "--device", "cpu"]),
    "ftdinosaur": ("train_ftdinosaur.py", "--log_path", [
        "--dataset", "shapes", "--image_size", "56", "--which_encoder", "vit_dinov2_tiny_p14", "--no_pretrained",
        "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
        "--eval_batch_size", "4", "--train_samples", "8", "--val_samples", "4", "--num_workers", "0",
        "--lr_warmup_steps", "0", "--num_steps", "2", "--device", "cpu"]),
    "smtc": ("train_smtc.py", "--output_path", [
        "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained", "--num_slots", "4",
        "--num_instance", "2", "--num_frames", "2", "--gap", "1", "--train_samples", "8", "--num_train_steps", "2",
        "--grad_iter", "1", "--lr", "1e-4", "--entro_cons", "--bi_cons", "--device", "cpu"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_two_processes_equal_one_for_every_training_script(tmp_path: Path, name: str) -> None:
    """About 40-60 s each on 2 cores (two torchrun launches)."""
    script, out_flag, args = SCRIPTS[name]
    one = train(tmp_path, "one", 1, 4, args, script, out_flag)
    two = train(tmp_path, "two", 2, 2, args, script, out_flag)
    assert_same_weights(one, two, ignore=ZERO_GRADIENT if name == "slot_attention" else ZERO_GRADIENT[:2])


@pytest.mark.slow
def test_spot_four_processes_equal_one(tmp_path: Path) -> None:
    """1 x 4 against 4 x 1 (about 60 s on 2 cores): positions r, r + 4, ... of the global batch per rank."""
    one = train(tmp_path, "one", 1, 4, [*SPOT_TINY, "--dropout", "0.1"], "train_spot.py")
    four = train(tmp_path, "four", 4, 1, [*SPOT_TINY, "--dropout", "0.1"], "train_spot.py")
    assert_same_weights(one, four, ignore=ZERO_GRADIENT[:2])
