"""SPOT's ``--eval_permutations all``: the nine orderings are decoded in one batched pass that
equals nine separate passes, and evaluation runs the encoder and slot attention once per batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import eval_spot
import train_spot
from models.decoders import AutoregressiveDecoder
from models.encoders import FrozenViT
from models.permutations import patch_orderings
from models.slot_attention import SlotAttention
from models.spot import SPOT, SPOTConfig

TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--num_dec_blocks", "2",
    "--num_heads", "2", "--batch_size", "4", "--train_samples", "8", "--val_samples", "8", "--num_workers", "0",
    "--lr_warmup_steps", "1", "--dec_type", "transformer", "--train_permutations", "random",
]
# Float sums in a different association order (one matmul over 9B rows against nine over B).
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def loop_over_orderings(decoder: AutoregressiveDecoder, slots: torch.Tensor, targets: torch.Tensor,
                        orderings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: one decoder call per ordering, stacked."""
    outs = [decoder(slots, targets, ordering=orderings[i], ordering_index=i) for i in range(len(orderings))]
    return torch.stack([o["reconstruction"] for o in outs]), torch.stack([o["masks"] for o in outs])


def test_batched_orderings_equal_one_call_per_ordering() -> None:
    torch.manual_seed(0)
    decoder = AutoregressiveDecoder(feature_dim=24, slot_dim=8, num_tokens=16, num_blocks=2, num_heads=2,
                                    num_orderings=9).eval()
    slots, targets = torch.randn(3, 4, 8), torch.randn(3, 16, 24)
    orderings = patch_orderings(4, 4)
    with torch.no_grad():
        recon, masks = loop_over_orderings(decoder, slots, targets, orderings)
        batched = decoder(slots, targets, ordering=orderings, ordering_index=list(range(9)))
        some = decoder(slots, targets, ordering=orderings[[8, 2]], ordering_index=[8, 2])
    assert batched["reconstruction"].shape == (9, 3, 16, 24) and batched["masks"].shape == (9, 3, 4, 16)
    torch.testing.assert_close(batched["reconstruction"], recon, **TOLERANCE)
    torch.testing.assert_close(batched["masks"], masks, **TOLERANCE)
    torch.testing.assert_close(some["masks"], masks[[8, 2]], **TOLERANCE)
    # Every ordering really is different (a bug that decodes ordering 0 nine times would not be).
    assert not torch.allclose(recon[0], recon[5])
    with pytest.raises(ValueError, match="one ordering_index per ordering"):
        decoder(slots, targets, ordering=orderings[:2], ordering_index=0)


@pytest.mark.parametrize("chunk_rows", [512, 4, 1], ids=["one-pass", "chunks-of-2", "one-per-ordering"])
def test_spot_all_mode_matches_the_loop(chunk_rows: int) -> None:
    torch.manual_seed(0)
    encoder = FrozenViT("vit_micro_p8", pretrained=False)
    config = SPOTConfig(image_size=32, num_slots=3, slot_size=16, mlp_hidden_size=32, num_dec_blocks=2,
                        num_heads=2, eval_permutations="all")
    model = SPOT(encoder, config).eval()
    model.decode_chunk_rows = chunk_rows  # 2 images: 4 rows = 2 orderings per pass
    slots, targets = torch.randn(2, 3, 16), torch.randn(2, 16, 32)
    with torch.no_grad():
        recon, masks = loop_over_orderings(model.decoder, slots, targets, model.orderings)
        out = model.decode(slots, targets)
    torch.testing.assert_close(out["reconstruction"], recon.mean(0), **TOLERANCE)
    torch.testing.assert_close(out["masks"], masks.mean(0), **TOLERANCE)


def test_eval_all_runs_encoder_and_slot_attention_once_per_batch(tmp_path: Path, monkeypatch) -> None:
    train_spot.main([*TINY, "--epochs", "1", "--log_path", str(tmp_path)])
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    calls: dict[str, list] = {"encoder": [], "slot_attention": [], "decoder": []}

    def counting(cls: type, name: str, rows) -> None:  # noqa: ANN001
        forward = cls.forward

        def wrapped(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            calls[name].append(rows(*args, **kwargs))
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(cls, "forward", wrapped)

    counting(FrozenViT, "encoder", lambda images: len(images))
    counting(SlotAttention, "slot_attention", lambda inputs, *a, **k: len(inputs))
    # (images, orderings decoded) per decoder pass
    counting(AutoregressiveDecoder, "decoder", lambda slots, targets, ordering=None, ordering_index=0: (
        len(slots), tuple(ordering_index) if isinstance(ordering_index, (list, tuple)) else (ordering_index,)))
    eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8", "--num_workers", "0",
                    "--eval_batch_size", "4", "--eval_permutations", "all", "--no_progress"])
    assert calls["encoder"] == [4, 4]  # two batches of 4 images, each encoded once
    assert calls["slot_attention"] == [4, 4]
    # One decoder pass per batch, over all nine orderings (9 x 4 sequences).
    assert calls["decoder"] == [(4, tuple(range(9)))] * 2


def test_fine_tuned_encoder_shares_the_frozen_prefix_with_its_target_encoder() -> None:
    """Stage 2 (and --use_second_encoder): the frozen stem and blocks run once for both encoders."""
    torch.manual_seed(0)
    encoder = FrozenViT("vit_tiny_p4", pretrained=False)  # 2 blocks
    encoder.set_finetune_blocks_after(1)
    config = SPOTConfig(image_size=16, num_slots=3, slot_size=16, mlp_hidden_size=32, num_dec_blocks=1, num_heads=2,
                        use_second_encoder=True)
    model = SPOT(encoder, config).eval()
    runs: list[str] = []
    for name, enc in (("encoder", model.encoder), ("target", model.target_encoder)):
        for i, block in enumerate(enc.vit.blocks):
            block.register_forward_hook(lambda *_, tag=f"{name}.{i}": runs.append(tag))
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.manual_seed(1)
        out = model({"image": images})
        assert sorted(runs) == ["encoder.1", "target.0", "target.1"]
        runs.clear()
        torch.manual_seed(1)
        reference = model.forward_features(model.encoder(images), model.target_encoder(images))
    torch.testing.assert_close(out["reconstruction"], reference["reconstruction"], rtol=0, atol=0)
    torch.testing.assert_close(out["masks"]["slots"], reference["masks"]["slots"], rtol=0, atol=0)
    # Gradients still reach the fine-tuned block.
    model.train()
    model({"image": images})["loss"].backward()
    assert model.encoder.vit.blocks[1].attn.qkv.weight.grad is not None
    # Frozen weights that no longer agree: nothing is shared, both encoders run in full.
    with torch.no_grad():
        model.target_encoder.vit.blocks[0].attn.qkv.weight.add_(1.0)
    assert model.shared_prefix_blocks() == 0
    runs.clear()
    with torch.no_grad():
        model.eval()({"image": images})
    assert sorted(runs) == ["encoder.0", "encoder.1", "target.0", "target.1"]
