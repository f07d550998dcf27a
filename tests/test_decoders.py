"""Tests for models.decoders (docs/methods/dinosaur.md)."""
from __future__ import annotations

import pytest
import torch

from models.decoders import AutoregressiveDecoder, MLPDecoder
from models.permutations import patch_orderings

D, DS, K = 32, 16, 3


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------ MLP decoder


@pytest.mark.parametrize("use_slot_proj", [False, True])
def test_mlp_shapes_and_masks(use_slot_proj):
    torch.manual_seed(0)
    dec = MLPDecoder(DS, D, num_tokens=15, hidden_dim=64, use_slot_proj=use_slot_proj)
    slots = torch.randn(2, K, DS, requires_grad=True)
    out = dec(slots)
    assert out["reconstruction"].shape == (2, 15, D)
    assert out["masks"].shape == (2, K, 15)
    assert out["slot_reconstructions"].shape == (2, K, 15, D)
    torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 15))
    # reconstruction is the alpha-weighted sum of per-slot features
    manual = (out["masks"].unsqueeze(-1) * out["slot_reconstructions"]).sum(1)
    torch.testing.assert_close(out["reconstruction"], manual)
    out["reconstruction"].sum().backward()
    assert slots.grad is not None and slots.grad.abs().sum() > 0


def test_mlp_masks_are_alpha():
    torch.manual_seed(0)
    dec = MLPDecoder(DS, D, num_tokens=6, hidden_dim=64, num_hidden_layers=2)
    slots = torch.randn(2, K, DS)
    out = dec(slots)
    x = slots.unsqueeze(2) + dec.pos_embed.unsqueeze(0)
    logits = dec.mlp(x)[..., -1]  # [B, K, N]
    torch.testing.assert_close(out["masks"], logits.softmax(dim=1))
    # zero-initialised biases
    for m in dec.mlp.modules():
        if isinstance(m, torch.nn.Linear):
            assert torch.count_nonzero(m.bias) == 0


def test_mlp_param_counts():
    with torch.device("meta"):
        assert n_params(MLPDecoder(256, 768, 196)) == 10_544_897
        with_proj = MLPDecoder(256, 768, 196, use_slot_proj=True)
    # Parameter count of the official code: "MLP decoder with slot_proj: pos 150,528 + MLP 11,543,297 = 11,693,825"; the
    # slot_proj (198,144) is counted separately there, as in SPOT it is a shared module.
    assert n_params(with_proj.slot_proj) == 198_144
    assert with_proj.pos_embed.numel() == 150_528 and n_params(with_proj.mlp) == 11_543_297
    assert n_params(with_proj) == 11_693_825 + 198_144


# ---------------------------------------------------------------------- autoregressive decoder


def make_ar(num_orderings=9, **kw):
    torch.manual_seed(0)
    return AutoregressiveDecoder(D, DS, num_tokens=15, num_blocks=2, num_heads=4, num_orderings=num_orderings, **kw).eval()


def test_ar_shapes_and_masks():
    dec = make_ar()
    slots, targets = torch.randn(2, K, DS), torch.randn(2, 15, D)
    for i, perm in enumerate(patch_orderings(3, 5)):
        out = dec(slots, targets, perm, ordering_index=i)
        assert out["reconstruction"].shape == (2, 15, D)
        assert out["masks"].shape == (2, K, 15)
        torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 15))
        assert (out["masks"] >= 0).all()


def test_ar_none_equals_raster():
    dec = make_ar()
    slots, targets = torch.randn(2, K, DS), torch.randn(2, 15, D)
    a = dec(slots, targets)
    b = dec(slots, targets, torch.arange(15), 0)
    torch.testing.assert_close(a["reconstruction"], b["reconstruction"])
    torch.testing.assert_close(a["masks"], b["masks"])


@pytest.mark.parametrize("idx", [0, 1, 4, 8])
def test_ar_causality_under_ordering(idx):
    """Changing token ordering[j] only affects predictions at positions > j in that ordering."""
    dec = make_ar()
    perm = patch_orderings(3, 5)[idx]
    slots, targets = torch.randn(1, K, DS), torch.randn(1, 15, D)
    base = dec(slots, targets, perm, idx)
    for j in [0, 3, 7, 13, 14]:
        t2 = targets.clone()
        t2[:, perm[j]] += 5.0 * torch.randn(D)
        out = dec(slots, t2, perm, idx)
        earlier = perm[: j + 1]  # tokens predicted at positions 0..j (token ordering[j] itself included)
        later = perm[j + 1 :]
        torch.testing.assert_close(out["reconstruction"][:, earlier], base["reconstruction"][:, earlier])
        torch.testing.assert_close(out["masks"][:, :, earlier], base["masks"][:, :, earlier])
        if len(later):
            # the token right after j in the ordering does see the change
            nxt = perm[j + 1]
            assert not torch.allclose(out["reconstruction"][:, nxt], base["reconstruction"][:, nxt])


def test_ar_first_prediction_depends_only_on_bos_and_slots():
    dec = make_ar()
    perm = patch_orderings(3, 5)[8]
    slots = torch.randn(1, K, DS)
    a = dec(slots, torch.randn(1, 15, D), perm, 8)
    b = dec(slots, torch.randn(1, 15, D), perm, 8)
    first = perm[0]
    torch.testing.assert_close(a["reconstruction"][:, first], b["reconstruction"][:, first])


def test_ar_ordering_index_selects_bos():
    dec = make_ar()
    slots, targets = torch.randn(1, K, DS), torch.randn(1, 15, D)
    perm = patch_orderings(3, 5)[2]
    a = dec(slots, targets, perm, 2)
    b = dec(slots, targets, perm, 3)
    assert not torch.allclose(a["reconstruction"], b["reconstruction"])
    # making the BOS tokens equal makes the outputs equal
    with torch.no_grad():
        dec.bos_tokens[3] = dec.bos_tokens[2]
    c = dec(slots, targets, perm, 3)
    torch.testing.assert_close(a["reconstruction"], c["reconstruction"])
    with pytest.raises(ValueError):
        dec(slots, targets, perm, 9)
    with pytest.raises(ValueError):
        make_ar(num_orderings=1)(slots, targets, None, 1)


def test_ar_state_dict_has_no_mask_and_grad_flows():
    dec = make_ar()
    assert not any("mask" in k for k in dec.state_dict())
    assert dec.bos_tokens.shape == (9, D)
    dec.train()
    slots = torch.randn(2, K, DS, requires_grad=True)
    out = dec(slots, torch.randn(2, 15, D), patch_orderings(3, 5)[5], 5)
    (out["reconstruction"].square().mean() + out["masks"][:, 0].mean()).backward()
    assert slots.grad is not None and slots.grad.abs().sum() > 0


def test_ar_cross_heads_and_first_block():
    dec = AutoregressiveDecoder(D, DS, 15, num_blocks=3, num_heads=4, num_cross_heads=2)
    assert dec.blocks[0].cross_attn.num_heads == 4
    assert all(b.cross_attn.num_heads == 2 for b in dec.blocks[1:])
    assert dec.blocks[0].is_first and not any(b.is_first for b in dec.blocks[1:])
    out = dec(torch.randn(2, K, DS), torch.randn(2, 15, D))
    assert out["reconstruction"].shape == (2, 15, D)


def test_ar_param_count_spec():
    with torch.device("meta"):
        dec = AutoregressiveDecoder(768, 256, 196, num_blocks=4, num_heads=6, num_orderings=9)
        one_bos = AutoregressiveDecoder(768, 256, 196, num_blocks=4, num_heads=6, num_orderings=1)
    assert n_params(dec.blocks[0]) == 9_445_632
    assert n_params(dec.blocks) + n_params(dec.final_norm) == 37_784_064
    assert n_params(dec.input_proj) == 591_360
    assert n_params(dec.slot_proj) == 198_144
    assert dec.bos_tokens.numel() == 6_912
    assert n_params(dec) == 37_784_064 + 591_360 + 198_144 + 6_912
    assert n_params(one_bos) == 37_784_064 + 591_360 + 198_144 + 768
    assert not any("mask" in k for k in dec.state_dict())


def test_outputs_fp32_under_autocast():
    dec = make_ar()
    mlp = MLPDecoder(DS, D, num_tokens=15, hidden_dim=64)
    slots, targets = torch.randn(2, K, DS), torch.randn(2, 15, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = dec(slots, targets, patch_orderings(3, 5)[8], 8)
        m = mlp(slots)
    for out in (a, m):
        assert out["reconstruction"].dtype == torch.float32
        assert out["masks"].dtype == torch.float32
        torch.testing.assert_close(out["masks"].sum(1), torch.ones(2, 15))
