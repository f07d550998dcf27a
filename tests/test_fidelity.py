"""Behaviour that follows the official code bases (docs/methods/*.md, "Differences from the official
code"): one test per difference that used to exist, plus the legacy path of old checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models import build_model, upgrade_model_config

def test_every_legacy_default_names_a_config_field_and_new_records_are_untouched() -> None:
    import dataclasses

    from models import FIELDS_ADDED_IN_FORMAT_2, method_spec

    for method, legacy in FIELDS_ADDED_IN_FORMAT_2.items():
        config_cls = method_spec(method).config_cls
        names = {f.name for f in dataclasses.fields(config_cls)}
        assert set(legacy) <= names, method
        current = dataclasses.asdict(config_cls())
        assert upgrade_model_config(method, current) == current  # a record that has the keys keeps them
        assert upgrade_model_config(method, {}) == legacy


GNM_TINY = dict(image_size=32, enc_dim=16, draw_hidden=16, mlp_hidden=32, z_what_dim=8, z_global_dim=4, draw_steps=2)


# --- GNM ---------------------------------------------------------------------------------------
def test_gnm_struct_draw_map_ends_with_celu_and_layernorm_old_checkpoints_keep_linear() -> None:
    from models.gnm import GNM, GNMConfig

    new = GNM(GNMConfig(**GNM_TINY))
    last = list(new.draw.z_to_map)[-3:]
    assert [type(m) for m in last] == [nn.Linear, nn.CELU, nn.LayerNorm]
    assert last[2].normalized_shape == (GNM_TINY["enc_dim"] * 16,)
    # A checkpoint written before the field existed rebuilds its plain final Linear and loads.
    old_record = {k: v for k, v in new.config.to_dict().items() if k not in ("draw_map_norm", "paste_premultiplied")}
    old = build_model("gnm", upgrade_model_config("gnm", old_record), None)  # as a format-1 record loads
    assert isinstance(old.draw.z_to_map[-1], nn.Linear)
    n_new, n_old = (sum(p.numel() for p in m.parameters()) for m in (new, old))
    assert n_new - n_old == 2 * GNM_TINY["enc_dim"] * 16  # exactly one LayerNorm(enc_dim * cells)
    assert upgrade_model_config("gnm", old_record)["paste_premultiplied"] is False
    assert upgrade_model_config("gnm", new.config.to_dict())["draw_map_norm"] is True


def _render_one_opaque_glimpse(model: nn.Module) -> dict[str, torch.Tensor]:
    """Render cell 5 only, with an all-white opaque glimpse over a black background."""
    model.glimpse_decoder.forward = lambda z: (torch.ones(z.shape[0], 3, 16, 16), torch.ones(z.shape[0], 1, 16, 16))
    model.bg_decoder.forward = lambda z: torch.zeros(z.shape[0], 3, 32, 32)
    z_pres = torch.zeros(1, 16)
    z_pres[0, 5] = 1.0
    z_where = torch.zeros(1, 16, 4)
    z_where[..., 0] = -0.7  # a box of about a third of the image
    z_where[..., 2:] = 0.13  # off the pixel grid: its edges fall between pixels
    return model.render(z_pres, z_where, torch.zeros(1, 16, 1), torch.zeros(1, 16, 8), torch.zeros(1, 10))


def test_gnm_pastes_the_product_alpha_times_rgb() -> None:
    from models.gnm import GNM, GNMConfig

    out = _render_one_opaque_glimpse(GNM(GNMConfig(**GNM_TINY)))
    weight = out["a_hat"][0, 5, 0]  # the pasted alpha: the bilinear weight w of the glimpse
    edge = (weight > 0.05) & (weight < 0.95)
    assert edge.any()
    # One transform of alpha * rgb: the edge fades as w (pasting both apart would give w^2).
    torch.testing.assert_close(out["image"][0, 0], weight, atol=1e-5, rtol=0)
    legacy = GNM(GNMConfig(**GNM_TINY, paste_premultiplied=False))
    old = _render_one_opaque_glimpse(legacy)
    torch.testing.assert_close(old["image"][0, 0], old["a_hat"][0, 5, 0] ** 2, atol=1e-5, rtol=0)


def test_gnm_first_training_iteration_runs_as_step_one() -> None:
    from models.gnm import GNM, GNMConfig

    model = GNM(GNMConfig(**GNM_TINY)).train()
    model.set_step(0)  # no step completed yet: the official loop already counts this one
    assert model.current_step() == 1 and model._in_curriculum()
    assert model.schedule_values()["beta_aux_where"] == model.schedules["beta_aux_where"](1)
    model.set_step(498)
    assert model._in_curriculum()  # runs as step 499
    model.set_step(499)
    assert not model._in_curriculum()  # runs as step 500: the curriculum is over (0 < step < 500)
    model.eval()  # evaluation sees the completed steps
    assert model.current_step() == 499


# --- SMTC --------------------------------------------------------------------------------------
def _smtc(encoder: str = "vit_micro_p8", **overrides):
    from models.encoders import FrozenViT
    from models.smtc import SMTC, SMTCConfig

    torch.manual_seed(0)
    cfg = SMTCConfig(num_slots=4, num_instances=2, anchor_grid=4, **overrides)
    return SMTC(FrozenViT(encoder, pretrained=False, finetune_blocks_after=0), cfg)


def test_smtc_slot_attention_has_qkv_biases_others_do_not() -> None:
    from models.slot_attention import SlotAttention

    model = _smtc()
    sa = model.student.slot_attention
    assert all(getattr(sa, name).bias is not None for name in ("to_q", "to_k", "to_v"))
    # The official slot attention holds 18 tensors (mu, sigma, 3 LayerNorms, q/k/v with biases, the MLP).
    assert len(sa.state_dict()) + 1 == 18  # + the student's log_sigma
    assert all(getattr(SlotAttention(8, 8), name).bias is None for name in ("to_q", "to_k", "to_v"))
    # An old SMTC checkpoint (no qkv_bias in its record) rebuilds without biases.
    old = upgrade_model_config("smtc", {"num_slots": 4})
    assert old["qkv_bias"] is False and old["train_encoder_stem"] is False
    assert _smtc(**{k: v for k, v in old.items() if k != "num_slots"}).student.slot_attention.to_q.bias is None


def test_smtc_student_vit_trains_with_drop_path_teacher_does_not() -> None:
    model = _smtc("vit_tiny_p4").train()  # two blocks: drop-path rates 0 and 0.1 (DINO's linear rule)
    enc = model.student.encoder
    assert enc.vit.training and not model.teacher.encoder.vit.training
    assert enc.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1) and isinstance(enc.vit.blocks[0].drop_path1, nn.Identity)
    frames = torch.rand(2, 3, 32, 32)
    torch.manual_seed(1)
    a = enc.forward_with_keys(frames)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a, enc.forward_with_keys(frames)[0])  # stochastic depth is live
    model.eval()
    torch.testing.assert_close(enc.forward_with_keys(frames)[0], enc.forward_with_keys(frames)[0])
    assert not _smtc(encoder_drop_path=0.0).train().student.encoder.vit.training


def test_smtc_trains_the_patch_and_position_embeddings_and_cls_token() -> None:
    from models.smtc import parameter_groups

    model = _smtc("vit_tiny_p4")  # two blocks, so the CLS token reaches the last block's keys
    vit = model.student.encoder.vit
    stem = [vit.patch_embed.proj.weight, vit.pos_embed, vit.cls_token]
    assert all(p.requires_grad for p in stem)
    out = model({"video": torch.rand(2, 2, 3, 32, 32)})
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stem)
    encoder_params = {id(p) for g in parameter_groups(model) if g["is_encoder"] for p in g["params"]}
    assert all(id(p) in encoder_params for p in stem)  # 0 LR before --grad_iter, 1 % after
    assert not _smtc(train_encoder_stem=False).student.encoder.vit.pos_embed.requires_grad


def test_smtc_instance_draw_passes_no_gradient_to_mu_and_log_sigma() -> None:
    from models.smtc import instance_loss, validity

    for reparam in (False, True):
        model = _smtc(reparam_instances=reparam, augment=False)
        student = model.student(torch.rand(2, 2, 3, 32, 32))
        valid = validity(student["semantic_logits"], student["semantic_slots"], student["instance_slots"], model.cfg)
        loss = instance_loss(student["projections"], student["projections"].detach().flip(3), torch.ones_like(valid),
                             torch.ones_like(valid))
        loss.backward()
        grad = model.student.log_sigma.grad
        assert grad is not None  # a zero tensor, as torch.normal gives: weight decay still applies
        assert (grad.abs().sum() > 0) == reparam


def test_smtc_train_flag_reparam_instances_reaches_the_checkpoint(tmp_path) -> None:
    import train_smtc
    from tests.test_eval_smtc import TINY

    train_smtc.main([*TINY, "--num_train_steps", "1", "--output_path", str(tmp_path), "--reparam_instances"])
    (run,) = tmp_path.iterdir()
    stored = torch.load(run / "checkpoint.pt.tar", weights_only=False)["model_config"]
    # New runs record every official choice, so upgrade_model_config never touches them.
    assert stored["reparam_instances"] is True and stored["qkv_bias"] is True and stored["train_encoder_stem"] is True
    assert stored["encoder_drop_path"] == pytest.approx(0.1)


def test_smtc_colour_augmentation_grayscale_first_then_jitter_with_hue() -> None:
    from models.smtc import apply_colour, colour_params, shift_hue

    red = torch.zeros(1, 1, 3, 4, 4)
    red[:, :, 0] = 1.0
    # Hue 0.1 of the circle = 36 degrees: pure red becomes (1, 0.6, 0).
    torch.testing.assert_close(shift_hue(red, torch.tensor([0.1]))[0, 0, :, 0, 0], torch.tensor([1.0, 0.6, 0.0]))
    hues = colour_params(4000, torch.Generator().manual_seed(0))["hue"]
    assert -0.1 <= hues.min() < -0.09 and 0.09 < hues.max() <= 0.1
    # Grayscale, then a brightness jitter of 1.4: the gray value is brightened (jitter before
    # grayscale would have clipped the red channel at 1 first).
    video = torch.zeros(1, 1, 3, 8, 8)
    video[:, :, 0] = 0.9
    params = {"gray": torch.tensor([True]), "jitter": torch.tensor([True]), "factors": torch.tensor([[1.4, 1.0, 1.0]]),
              "hue": torch.tensor([0.0]), "order": torch.arange(4), "blur": torch.tensor([False])}
    out = apply_colour(video, params, blur_sigma=1.0)
    torch.testing.assert_close(out, torch.full_like(video, 0.9 * 0.299 * 1.4))


# --- AdaSlot / DINOSAUR ------------------------------------------------------------------------
ADASLOT_TINY = dict(image_size=16, slot_size=256, mlp_hidden_size=16, mlp_dec_hidden=16, mlp_dec_layers=2)


def _qkv_std_and_gru_bias(sa: nn.Module) -> tuple[float, float]:
    return float(sa.to_q.weight.detach().std()), float(sa.gru.bias_ih.detach().abs().sum())


@pytest.mark.parametrize("adaptive", [False, True])
def test_adaslot_slot_attention_keeps_pytorch_default_init(adaptive: bool) -> None:
    from models.adaslot import AdaSlot, AdaSlotConfig
    from models.encoders import FrozenViT

    torch.manual_seed(0)
    model = AdaSlot(FrozenViT("vit_micro_p8", pretrained=False), AdaSlotConfig(**ADASLOT_TINY, adaptive=adaptive))
    std, gru_bias = _qkv_std_and_gru_bias(model.slot_attention)
    assert std == pytest.approx(256**-0.5 / 3**0.5, rel=0.03) and gru_bias > 0  # 0.036, GRU biases drawn
    mlp_bias = model.slot_attention.mlp[0].bias
    assert mlp_bias.abs().sum() > 0  # nn.Linear's default bias
    # A checkpoint written before init_scheme existed records the xavier model it was.
    assert upgrade_model_config("adaslot", {"num_slots": 3})["init_scheme"] == "xavier"


def test_spot_and_dinosaur_keep_xavier_and_the_flag_switches() -> None:
    import train_spot
    from models.encoders import FrozenViT
    from models.spot import SPOT, SPOTConfig

    enc = FrozenViT("vit_micro_p8", pretrained=False)
    for argv in ([], ["--dec_type", "mlp", "--train_permutations", "standard"]):  # SPOT, DINOSAUR
        args = train_spot.build_parser().parse_args(argv)
        config = SPOTConfig(image_size=32, num_heads=2, dec_type=args.dec_type, train_permutations=args.train_permutations,
                            init_scheme=args.init_scheme)
        model = SPOT(enc, config)
        std, gru_bias = _qkv_std_and_gru_bias(model.slot_attention)
        assert std == pytest.approx((2 / 512) ** 0.5, rel=0.03) and gru_bias == 0  # 0.0625, zero biases
    args = train_spot.build_parser().parse_args(["--init_scheme", "torch_default"])
    assert SPOTConfig.from_args(args).init_scheme == "torch_default"
    model = SPOT(enc, SPOTConfig(image_size=32, num_heads=2, init_scheme="torch_default"))
    assert _qkv_std_and_gru_bias(model.slot_attention)[1] > 0


def test_adaslot_init_scheme_flag_reaches_the_config() -> None:
    import train_adaslot
    from models.adaslot import AdaSlotConfig

    parser = train_adaslot.build_parser()
    assert AdaSlotConfig.from_args(parser.parse_args([])).init_scheme == "torch_default"
    assert AdaSlotConfig.from_args(parser.parse_args(["--init_scheme", "xavier"])).init_scheme == "xavier"


def test_adaslot_help_names_both_sparsity_weights() -> None:
    import train_adaslot

    text = " ".join(train_adaslot.build_parser().format_help().split())
    assert "default 0.1 as the official COCO/MOVi configs" in text and "defaults to 0.5" in text
    assert train_adaslot.build_parser().parse_args([]).sparsity_weight == 0.1


def test_dinosaur_mlp_decoder_slot_projection_is_xavier() -> None:
    from models.decoders import MLPDecoder

    torch.manual_seed(0)
    decoder = MLPDecoder(256, 384, 16, hidden_dim=8, num_hidden_layers=1, use_slot_proj=True)
    # ViT-S features: xavier std sqrt(2 / (256 + 384)) = 0.056 (nn.Linear's default would be 0.036).
    assert float(decoder.slot_proj[0].weight.detach().std()) == pytest.approx((2 / 640) ** 0.5, rel=0.02)


# --- SLATE -------------------------------------------------------------------------------------
SLATE_TINY = dict(image_size=32, vocab_size=32, d_model=32, num_heads=2, num_dec_blocks=1, slot_size=16,
                  mlp_hidden_size=16, num_slots=3, dvae_hidden_size=16)


def test_slate_validation_samples_gumbel_tokens_argmax_is_an_option() -> None:
    import train_slate
    from models.slate import SLATE, SLATEConfig

    torch.manual_seed(0)
    model = SLATE(SLATEConfig(**SLATE_TINY)).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        log_probs = model.dvae(images, tau=1.0)["log_probs"]
        torch.manual_seed(1)
        a = model(dict(image=images))["tokens"]
        torch.manual_seed(2)
        b = model(dict(image=images))["tokens"]
    assert not torch.equal(a, b)  # sampled, as the official validation
    model.config.eval_tokens = "argmax"
    with torch.no_grad():
        assert torch.equal(model(dict(image=images))["tokens"], log_probs.argmax(1).flatten(1))
    args = train_slate.build_parser().parse_args(["--eval_tokens", "argmax"])
    assert SLATEConfig.from_args(args).eval_tokens == "argmax"
    assert SLATEConfig.from_args(train_slate.build_parser().parse_args([])).eval_tokens == "sample"
    from models import method_spec

    assert "eval_tokens" in method_spec("slate").eval_choices  # eval_spot.py --eval_tokens may change it


def test_slate_bos_is_a_vocabulary_row_plus_position_with_dropout() -> None:
    from models.slate import SLATE, SLATEConfig

    torch.manual_seed(0)
    model = SLATE(SLATEConfig(**{**SLATE_TINY, "d_model": 512, "dropout": 0.5}))
    assert model.decoder.bos_tokens is None
    assert float(model.bos_embedding.detach().std()) == pytest.approx(1.0, rel=0.15)  # nn.Embedding's N(0, 1)
    assert float(model.bos_position.detach().std()) == pytest.approx(0.88, rel=0.15)  # trunc_normal std 1 at +-2
    model.train()
    bos = model.bos(2)
    assert bos.shape == (2, 512) and not torch.equal(bos[0], bos[1]) and (bos == 0).any()  # dropout per sample
    model.eval()
    torch.testing.assert_close(model.bos(2)[0], (model.bos_embedding + model.bos_position)[0])


def test_slate_old_checkpoints_keep_their_bos_and_argmax_tokens() -> None:
    from models.slate import SLATE, SLATEConfig

    torch.manual_seed(0)
    old_model = SLATE(SLATEConfig(**SLATE_TINY, official_bos=False, eval_tokens="argmax"))
    record = {k: v for k, v in old_model.config.to_dict().items() if k not in ("official_bos", "eval_tokens")}
    rebuilt = build_model("slate", upgrade_model_config("slate", record), None)  # as a format-1 record loads
    rebuilt.load_state_dict(old_model.state_dict())  # strict: same parameters as before
    assert rebuilt.config.eval_tokens == "argmax" and rebuilt.decoder.bos_tokens is not None


# --- Slot Attention implicit differentiation ---------------------------------------------------
def _count_iterations(model: nn.Module) -> int:
    calls = []
    original = model.slot_attention.step
    model.slot_attention.step = lambda *a, **k: calls.append(1) or original(*a, **k)
    model(dict(image=torch.rand(1, 3, 16, 16)))
    return len(calls)


def test_implicit_grad_runs_t_ordinary_iterations_plus_one_detached() -> None:
    from models.slot_attention_ae import SlotAttentionAE, SlotAttentionAEConfig

    tiny = dict(image_size=16, num_slots=2, num_iterations=3, slot_size=8, mlp_hidden_size=8, encoder_channels=8,
                decoder_channels=8, decoder_upsamples=2)
    torch.manual_seed(0)
    assert _count_iterations(SlotAttentionAE(SlotAttentionAEConfig(**tiny, implicit_grad=True))) == 4
    assert _count_iterations(SlotAttentionAE(SlotAttentionAEConfig(**tiny))) == 3
    # A checkpoint written before the field existed ran 3 in all, and still does.
    record = SlotAttentionAEConfig(**tiny, implicit_grad=True).to_dict()
    del record["implicit_extra_iteration"]
    old = build_model("slot_attention", upgrade_model_config("slot_attention", record), None)  # format-1 record
    assert _count_iterations(old) == 3


# --- SlotFA ------------------------------------------------------------------------------------
def test_slotfa_augmented_branch_sends_no_gradient_by_default() -> None:
    import train_slotfa
    from models.slotfa import SlotConConfig

    assert SlotConConfig().fa_grad == "none"
    parser = train_slotfa.build_parser()
    assert parser.parse_args([]).fa_grad == "none"  # a seed command gets the released code's behaviour
    assert parser.parse_args(["--fa-grad", "backbone"]).fa_grad == "backbone"


# --- MOVi --------------------------------------------------------------------------------------
def test_movi_masks_are_scored_at_320_px_unless_val_mask_size_says_otherwise() -> None:
    from datasets import default_mask_size

    assert default_mask_size("movi", 128) == 320 == default_mask_size("movi", 224)  # SPOT's official default


def test_eval_checks_typed_flags_against_the_old_behaviour_of_old_checkpoints() -> None:
    import argparse

    import eval_spot
    from models import method_spec
    from models.spot import SPOTConfig
    from ground.errors import UserError

    from utils.checkpoint import upgrade_checkpoint

    record = {k: v for k, v in SPOTConfig(image_size=32, num_heads=2).to_dict().items() if k != "init_scheme"}
    # What loading a format-1 checkpoint (written before the field existed) gives eval_spot.py.
    checkpoint = upgrade_checkpoint({"format_version": 1, "method": "spot", "model_config": record, "model": {}})
    args = argparse.Namespace(init_scheme="torch_default")
    with pytest.raises(UserError, match="--init_scheme torch_default does not match the checkpoint \\(xavier\\)"):
        eval_spot.checked_config(method_spec("spot"), args, {"init_scheme"}, checkpoint)
    args.init_scheme = "xavier"
    assert eval_spot.checked_config(method_spec("spot"), args, {"init_scheme"}, checkpoint).init_scheme == "xavier"
