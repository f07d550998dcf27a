"""Tests for models/encoders.py: tiny random ViTs only, nothing is downloaded."""
from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from ground.errors import UserError
from models.encoders import (
    ENCODER_ALIASES,
    SMALL_ENCODERS,
    FrozenViT,
    resolve_encoder_name,
)

TINY = dict(depth=1, embed_dim=32, num_heads=2)


def _tiny(name: str, **kw) -> FrozenViT:
    torch.manual_seed(0)
    return FrozenViT(name, pretrained=False, model_overrides=dict(TINY, **kw.pop("over", {})), **kw)


# ---------------------------------------------------------------- names
def test_aliases_resolve_to_registered_timm_names():
    pretrained = set(timm.list_models(pretrained=True))
    for short in ["dino_vitb16", "dino_vits16", "dino_vits8", "dino_vitb8", "dinov2_vitb14", "dinov2_vits14",
                  "dinov2_vitb14_reg", "dinov2_vits14_reg", "mae_vitb16", "dino-vitb-16", "dino-vitb-8",
                  "dino-vits-8", "dino-vits-16", "dinov2-vitb-14", "dinov2-vits-14", "sup-vitb-16"]:
        assert short in ENCODER_ALIASES
        assert resolve_encoder_name(short) in pretrained, short
    assert resolve_encoder_name("dino-vitb-16") == "vit_base_patch16_224.dino"
    assert resolve_encoder_name("dinov2_vitb14_reg") == "vit_base_patch14_reg4_dinov2.lvd142m"
    assert resolve_encoder_name("sup-vitb-16") == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    # timm names pass through, small configs map to their architecture
    assert resolve_encoder_name("vit_small_patch16_224.dino") == "vit_small_patch16_224.dino"
    assert resolve_encoder_name("vit_tiny_p4") == SMALL_ENCODERS["vit_tiny_p4"][0]


@pytest.mark.parametrize("bad", ["dino_vitx16", "resnet50", "vit_base_patch16_224.nope", ""])
def test_unknown_name_is_user_error(bad):
    with pytest.raises(UserError, match="unknown encoder.*dino_vitb16"):
        resolve_encoder_name(bad)
    with pytest.raises(UserError):
        FrozenViT(bad, pretrained=False)


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "name,patch,sizes",
    [
        ("dino_vits8", 8, [(64, 64), (48, 80)]),
        ("dinov2_vits14", 14, [(224, 224), (112, 70)]),
        ("dino_vitb16", 16, [(224, 224), (160, 96)]),
    ],
)
def test_token_grid_and_output_shapes(name, patch, sizes):
    enc = _tiny(name)
    assert enc.patch_size == patch and enc.embed_dim == 32 and enc.num_prefix_tokens == 1
    for h, w in sizes:
        gh, gw = enc.token_grid((h, w))
        assert (gh, gw) == (h // patch, w // patch)
        out = enc(torch.rand(2, 3, h, w))
        assert out.shape == (2, gh * gw, 32)
        assert torch.isfinite(out).all()
    assert enc.token_grid(224 // patch * patch) == (224 // patch, 224 // patch)


def test_dinov2_224_gives_256_tokens_and_registers_dropped():
    enc = _tiny("dinov2_vitb14_reg")
    assert enc.num_prefix_tokens == 5  # CLS + 4 registers
    out = enc(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 256, 32)


def test_prefix_tokens_dropped_matches_timm_forward_features():
    """At the native grid the manual token path equals timm's forward_features minus prefix tokens."""
    enc = _tiny("dinov2_vits14_reg", final_norm=True, over=dict(img_size=56))
    x = torch.rand(2, 3, 56, 56)
    ref = enc.vit.forward_features((x - enc.mean) / enc.std)[:, enc.num_prefix_tokens:]
    torch.testing.assert_close(enc(x), ref)


def test_final_norm_off_by_default():
    enc = _tiny("dino_vits16", over=dict(depth=2))
    x = torch.rand(1, 3, 32, 32)
    torch.manual_seed(0)
    normed = FrozenViT("dino_vits16", pretrained=False, final_norm=True, model_overrides=dict(TINY, depth=2))
    normed.load_state_dict(enc.state_dict())
    raw = enc(x)
    torch.testing.assert_close(normed(x), enc.vit.norm(raw))
    assert not torch.allclose(raw, normed(x))


def test_pos_embed_interpolation_follows_dino():
    """Off the native grid the pos-embed is resized like DINO's interpolate_pos_encoding."""
    enc = _tiny("dino_vits16")  # native grid 14x14
    pos = enc.vit.pos_embed
    same = enc._interpolated_pos_embed(14, 14)
    assert same is pos
    new = enc._interpolated_pos_embed(10, 6)
    assert new.shape == (1, 1 + 60, 32)
    torch.testing.assert_close(new[:, :1], pos[:, :1])
    # DINO's formula, written out independently
    grid = pos[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(10.1 / 14, 6.1 / 14), mode="bicubic")
    torch.testing.assert_close(new[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 60, 32))


def test_patch_not_dividing_is_user_error():
    enc = _tiny("dino_vitb16")
    with pytest.raises(UserError, match="image size 225 is not a multiple.*patch size 16.*use e.g. 224"):
        enc.token_grid(225)
    with pytest.raises(UserError, match="patch size 16"):
        enc(torch.rand(1, 3, 224, 225))
    enc14 = _tiny("dinov2_vitb14")
    with pytest.raises(UserError, match="image size 320 .*patch size 14"):  # pitfall 23
        enc14.token_grid(320)


def test_small_configs():
    for name, (arch, over) in SMALL_ENCODERS.items():
        enc = FrozenViT(name, pretrained=False)
        assert enc.patch_size == over["patch_size"] and enc.embed_dim == over["embed_dim"]
        assert enc.weights_source == "random" and not enc.is_pretrained
        side = 32 if 32 % enc.patch_size == 0 else 4 * enc.patch_size
        assert enc(torch.rand(1, 3, side, side)).shape == (1, (side // enc.patch_size) ** 2, enc.embed_dim)
        with pytest.raises(UserError, match="--no_pretrained"):
            FrozenViT(name, pretrained=True)


# ---------------------------------------------------------------- weights files
def test_weights_file_round_trip(tmp_path):
    src = _tiny("dinov2_vits14_reg", over=dict(img_size=56))
    x = torch.rand(2, 3, 56, 84)
    expected = src(x)

    plain = tmp_path / "plain.pth"
    torch.save(src.vit.state_dict(), plain)
    # DINO full-checkpoint layout: {"teacher": {"backbone.*", "head.*"}, "student": ..., "args": ...}
    wrapped = tmp_path / "dino_full.pth"
    teacher = {f"backbone.{k}": v for k, v in src.vit.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.zeros(4, 32)  # DINO projection head: dropped
    torch.save({"teacher": teacher, "student": {f"module.{k}": v for k, v in teacher.items()}, "epoch": 3},
               wrapped)
    own = tmp_path / "frozenvit.pt"
    torch.save(src.state_dict(), own)
    st = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.vit.state_dict().items()}, str(st))

    for path in [plain, wrapped, own, st]:
        torch.manual_seed(123)  # different random init: the file must overwrite everything
        enc = FrozenViT("dinov2_vits14_reg", pretrained=True, weights_path=str(path),
                        model_overrides=dict(TINY, img_size=56))
        assert enc.weights_source == str(path) and enc.is_pretrained
        torch.testing.assert_close(enc(x), expected)


def test_original_dinov2_checkpoint_layout(tmp_path):
    """Original DINOv2 keys (register_tokens, mask_token, CLS pos in pos_embed) convert via timm."""
    src = _tiny("dinov2_vits14_reg", over=dict(img_size=56))
    sd = src.vit.state_dict()
    orig = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    cls_pos = torch.randn(1, 1, 32)
    orig["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    orig["cls_token"] = sd["cls_token"] - cls_pos
    orig["register_tokens"] = sd["reg_token"]
    orig["mask_token"] = torch.zeros(1, 32)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(orig, path)
    enc = FrozenViT("dinov2_vits14_reg", weights_path=str(path), model_overrides=dict(TINY, img_size=56))
    x = torch.rand(1, 3, 56, 56)
    torch.testing.assert_close(enc(x), src(x))


def test_wrong_weights_file_is_user_error(tmp_path):
    other = _tiny("dino_vits16", over=dict(embed_dim=48, num_heads=2))
    path = tmp_path / "wrong.pth"
    torch.save(other.vit.state_dict(), path)
    with pytest.raises(UserError, match=r"wrong\.pth.*(shape|keys)"):
        FrozenViT("dino_vits16", weights_path=str(path), model_overrides=TINY)

    deeper = _tiny("dino_vits16", over=dict(depth=2))
    path2 = tmp_path / "deeper.pth"
    torch.save(deeper.vit.state_dict(), path2)
    with pytest.raises(UserError, match=r"unexpected keys, e\.g\. blocks\.1\."):
        FrozenViT("dino_vits16", weights_path=str(path2), model_overrides=TINY)

    p8 = _tiny("dino_vits8")
    path3 = tmp_path / "p8.pth"
    torch.save(p8.vit.state_dict(), path3)
    with pytest.raises(UserError, match="patch size"):
        FrozenViT("dino_vits16", weights_path=str(path3), model_overrides=TINY)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pth is unreadable"):
        FrozenViT("dino_vits16", weights_path=str(junk), model_overrides=TINY)


def test_missing_weights_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        FrozenViT("dino_vitb16", weights_path=str(tmp_path / "nope.pth"), model_overrides=TINY)


def test_pretrained_fetch_failure_is_user_error(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")
        return real(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserError, match=r"could not fetch pretrained weights for dino_vitb16 \(OSError.*"
                                        r"--encoder_weights PATH.*--no_pretrained"):
        FrozenViT("dino_vitb16", pretrained=True, model_overrides=TINY)
    assert FrozenViT("dino_vitb16", pretrained=False, model_overrides=TINY).weights_source == "random"


# ---------------------------------------------------------------- freezing and modes
def test_all_frozen_by_default_and_eval_mode():
    enc = _tiny("dino_vits16", over=dict(depth=2, drop_rate=0.5, drop_path_rate=0.5))
    assert not enc.trainable
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training  # the module flag follows, the ViT does not
    assert not any(m.training for m in enc.vit.modules())
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), enc(x))  # no dropout / drop-path
    out = enc(x)
    assert not out.requires_grad


def test_finetune_blocks_after():
    enc = _tiny("dino_vits16", finetune_blocks_after=2, over=dict(depth=4))
    assert enc.trainable
    for name, p in enc.vit.named_parameters():
        expect = name.startswith("blocks.2.") or name.startswith("blocks.3.")
        assert p.requires_grad == expect, name
    enc.train()
    assert not any(m.training for m in enc.vit.modules())
    out = enc(torch.rand(2, 3, 32, 32))
    assert out.requires_grad
    out.square().mean().backward()
    assert all(p.grad is not None for p in enc.vit.blocks[2].parameters())
    assert enc.vit.patch_embed.proj.weight.grad is None
    # a deep copy (SPOT stage 2's trainable encoder) is independent and keeps the pattern
    twin = copy.deepcopy(enc)
    assert [p.requires_grad for p in twin.parameters()] == [p.requires_grad for p in enc.parameters()]
    with torch.no_grad():
        assert not enc(torch.rand(1, 3, 32, 32)).requires_grad


def test_normalisation_applied():
    enc = _tiny("dino_vits16", final_norm=True, over=dict(img_size=32))
    torch.testing.assert_close(enc.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(enc.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(2, 3, 32, 32)
    ref = enc.vit.forward_features((x - enc.mean) / enc.std)[:, 1:]
    torch.testing.assert_close(enc(x), ref)
    unnormalised = enc.vit.forward_features(x)[:, 1:]
    assert not torch.allclose(enc(x), unnormalised)
    # supervised augreg weights use their own statistics (0.5, 0.5)
    sup = _tiny("sup-vitb-16")
    torch.testing.assert_close(sup.mean.flatten(), torch.full((3,), 0.5))
