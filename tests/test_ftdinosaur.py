"""FT-DINOSAUR: model pieces, the recipe's parameter groups, the released-file import against the official
inference package's outputs, and train_ftdinosaur.py end to end (train, eval, predict, resume, hi-res stage)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval_spot
import predict
import train_ftdinosaur
from ground.errors import UserError
from ground.schedules import GroupWarmupCosine
from ground.state_dict import load_model_state
from models import build_model, method_spec
from models.decoders import MLPDecoder, top_k_slots
from models.encoders import FrozenViT
from models.ftdinosaur import FTDINOSAUR, FTDINOSAURConfig, encoder_record, parameter_groups, standardize_tokens
from models.position import resample_grid_embedding
from utils.checkpoint import load_checkpoint
from utils.released import find_format, read_released

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "ftdinosaur"
ENCODER = "vit_dinov2_tiny_p14"
TINY = [
    "--dataset", "shapes", "--image_size", "56", "--which_encoder", ENCODER, "--no_pretrained",
    "--num_slots", "4", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--lr_warmup_steps", "2", "--num_steps", "8",
]


def tiny_encoder(**overrides) -> FrozenViT:
    spec = encoder_record({"name": ENCODER, "pretrained": False, "weights_path": None, "finetune_blocks_after": 0,
                           "final_norm": False})
    return FrozenViT(spec["name"], pretrained=False, finetune_blocks_after=0, finetune_stem=spec["finetune_stem"],
                     pos_embed_resampling=spec["pos_embed_resampling"], model_overrides=overrides or None)


def tiny_model(**config) -> FTDINOSAUR:
    torch.manual_seed(0)
    values = dict(image_size=56, num_slots=4, slot_size=16, mlp_hidden_size=32, mlp_dec_hidden=32)
    values.update(config)
    return FTDINOSAUR(tiny_encoder(), FTDINOSAURConfig(**values))


def images(batch: int = 2, size: int = 56) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def train(root: Path, *extra: str) -> Path:
    train_ftdinosaur.main([*TINY, "--log_path", str(root), *extra])
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    return runs[-1]


# ------------------------------------------------------------------------------------------ model pieces


def test_every_encoder_parameter_trains_and_gets_a_gradient() -> None:
    model = tiny_model()
    frozen = [n for n, p in model.encoder.vit.named_parameters() if not p.requires_grad]
    assert frozen == ["norm.weight", "norm.bias"]  # the final norm is not applied (block-12 features)
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    model.train()
    model({"image": images()})["loss"].backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == [] and "encoder.vit.pos_embed" in trainable and "encoder.vit.patch_embed.proj.weight" in trainable


def test_target_encoder_stays_frozen_and_equal_to_the_pretrained_copy() -> None:
    model = tiny_model()
    initial = copy.deepcopy(model.encoder.state_dict())
    groups = parameter_groups(model, 1e-2)
    optimizer = torch.optim.AdamW(groups)
    assert not {id(p) for p in model.target_encoder.parameters()} & {id(p) for g in groups for p in g["params"]}
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model({"image": images()})["loss"].backward()
        optimizer.step()
    after = model.encoder.state_dict()
    assert not torch.equal(after["vit.blocks.0.attn.qkv.weight"], initial["vit.blocks.0.attn.qkv.weight"])
    assert not torch.equal(after["vit.pos_embed"], initial["vit.pos_embed"])
    for key, value in model.target_encoder.state_dict().items():
        assert torch.equal(value, initial[key]), key


def test_targets_are_standardised_per_token() -> None:
    tokens = torch.randn(2, 5, 8) * 7 + 3
    out = standardize_tokens(tokens)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3)
    model = tiny_model().eval()
    x = images()
    torch.manual_seed(0)
    out = model({"image": x})
    with torch.no_grad():
        target = model.target_encoder(x)
    expected = ((out["reconstruction"] - standardize_tokens(target)) ** 2).mean()
    assert torch.allclose(out["loss"], expected)
    raw = copy.deepcopy(model)
    raw.config.normalize_target = False  # the flag changes the loss
    torch.manual_seed(0)
    assert not torch.allclose(raw({"image": x})["loss"], out["loss"])


def test_top_k_decoding_keeps_exactly_k_slots_per_patch() -> None:
    torch.manual_seed(0)
    decoder = MLPDecoder(8, 6, 9, hidden_dim=16)
    slots = torch.randn(2, 5, 8)
    scores = torch.rand(2, 5, 9).softmax(1).requires_grad_()
    out = decoder(slots, top_k=3, select_by=scores)
    masks = out["masks"]
    assert ((masks > 0).sum(1) == 3).all() and torch.allclose(masks.sum(1), torch.ones(2, 9))
    chosen = torch.zeros_like(masks, dtype=torch.bool).scatter(1, scores.topk(3, dim=1).indices, True)
    assert torch.equal(masks > 0, chosen)  # the slots with the highest scores
    # Per patch, the same as decoding only the chosen slots with the full decoder.
    full = decoder(slots)
    for b, p in ((0, 0), (1, 4)):
        idx = chosen[b, :, p].nonzero().flatten()
        logits = decoder.mlp(slots[b, idx] + decoder.pos_embed[0, p])
        alpha = logits[:, -1].softmax(0)
        assert torch.allclose(out["reconstruction"][b, p], (alpha[:, None] * logits[:, :-1]).sum(0), atol=1e-6)
    out["reconstruction"].sum().backward()
    assert scores.grad is None  # no gradient through the choice
    # k >= K is plain decoding; ties go to the lower slot index.
    assert torch.allclose(decoder(slots, top_k=5, select_by=scores)["masks"], full["masks"])
    tied = torch.full((1, 5, 9), 0.2)
    assert torch.equal(top_k_slots(tied, 3), torch.tensor([0, 1, 2]).view(1, 3, 1).expand(1, 3, 9))
    assert ((decoder(slots[:1], top_k=3, select_by=tied)["masks"][:, 3:] == 0)).all()


def test_model_flags_shape_the_network() -> None:
    model = tiny_model(feature_mlp_hidden=24, num_dec_layers=2, top_k=2)
    assert model.input_mlp[1].out_features == 24
    assert sum(isinstance(m, torch.nn.Linear) for m in model.decoder.mlp) == 3
    assert tiny_model().input_mlp[1].out_features == 2 * 64  # default: twice the encoder width
    model.eval()
    masks = model({"image": images()})["masks"]["decoder"]
    assert ((masks > 0).sum(1) == 2).all()


def test_position_embedding_resampling_round_trip() -> None:
    embedding = torch.randn(1, 16, 8)
    assert torch.equal(resample_grid_embedding(embedding, (4, 4)), embedding)
    constant = torch.full((1, 16, 3), 0.7)
    assert torch.allclose(resample_grid_embedding(constant, (37, 37)), torch.full((1, 1369, 3), 0.7), atol=1e-5)
    # A smooth (linear) embedding survives 16x16 -> 37x37 -> 16x16 up to edge effects of bicubic sampling.
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    smooth = torch.stack([ys, xs, ys + xs], -1).reshape(1, 256, 3)
    there = resample_grid_embedding(smooth, (37, 37))
    back = resample_grid_embedding(there, (16, 16))
    assert there.shape == (1, 1369, 3)
    inner = back.reshape(16, 16, 3)[2:-2, 2:-2] - smooth.reshape(16, 16, 3)[2:-2, 2:-2]
    assert inner.abs().max() < 0.02
    with pytest.raises(ValueError):
        resample_grid_embedding(torch.randn(1, 15, 2), (4, 4))


def test_encoder_position_embedding_is_resampled_like_timm() -> None:
    from timm.layers import resample_abs_pos_embed

    encoder = tiny_encoder()
    stored = encoder.vit.pos_embed
    expected = resample_abs_pos_embed(stored, new_size=[4, 4], old_size=[9, 9], num_prefix_tokens=1)
    assert torch.allclose(encoder._interpolated_pos_embed(4, 4), expected)  # noqa: SLF001


# ------------------------------------------------------------------------------------------ recipe


def test_parameter_groups_carry_the_recipe_lrs_and_weight_decay() -> None:
    encoder = tiny_encoder(depth=12, embed_dim=16, num_heads=1)
    model = FTDINOSAUR(encoder, FTDINOSAURConfig(image_size=56, num_slots=3, slot_size=8, mlp_hidden_size=8,
                                                 mlp_dec_hidden=8))
    scale = math.sqrt(128 / 64)  # batch 128
    groups = parameter_groups(model, 1e-4 * scale, 0.125, 0.85, 0.01)
    by_name = {g["name"]: g for g in groups}
    assert groups[0]["name"] == "head"
    assert by_name["head"]["lr"] == pytest.approx(1.414e-4, rel=1e-3) and by_name["head"]["weight_decay"] == 0
    for i in range(12):
        expected = 1.768e-5 * 0.85 ** (11 - i)
        assert by_name[f"enc{i}"]["lr"] == pytest.approx(expected, rel=1e-3)
        assert by_name[f"enc{i}_no_wd"]["lr"] == pytest.approx(expected, rel=1e-3)
        assert by_name[f"enc{i}"]["weight_decay"] == 0.01 and by_name[f"enc{i}_no_wd"]["weight_decay"] == 0
    assert by_name["enc0"]["lr"] == pytest.approx(2.96e-6, rel=2e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    members = {g["name"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert {"encoder.vit.pos_embed", "encoder.vit.cls_token", "encoder.vit.patch_embed.proj.bias"} <= members["enc0_no_wd"]
    assert "encoder.vit.patch_embed.proj.weight" in members["enc0"]
    assert {"encoder.vit.blocks.5.ls1.gamma", "encoder.vit.blocks.5.norm1.weight",
            "encoder.vit.blocks.5.attn.qkv.bias"} <= members["enc5_no_wd"]
    assert members["enc5"] == {f"encoder.vit.blocks.5.{n}" for n in
                               ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")}
    everything = [n for g in members.values() for n in g]
    assert sorted(everything) == sorted(n for n, p in model.named_parameters() if p.requires_grad)  # each once


def test_schedule_warms_up_then_anneals_every_group_to_the_same_floor() -> None:
    schedule = GroupWarmupCosine([1.0, 0.1], 1e-3, total_steps=110, warmup_steps=10)
    assert schedule(0) == pytest.approx([0.05, 0.005])
    assert schedule(10) == pytest.approx([1.0, 0.1])
    assert schedule(109) == pytest.approx([1e-3, 1e-3])
    mid = schedule(10 + 99 // 2)
    assert mid[0] == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 49 / 99)))


# ------------------------------------------------------------------------------------------ released import


def fixture_forward(model: FTDINOSAUR, monkeypatch) -> dict:
    inputs = torch.load(FIXTURE / "inputs.pt", weights_only=True)
    draws = [d["value"].clone() for d in inputs["draws"]["eval"]]
    real = torch.randn

    def replay(*args, **kwargs):
        value = draws.pop(0)
        assert tuple(value.shape) == tuple(args[:3]), (value.shape, args)
        return value

    monkeypatch.setattr(torch, "randn", replay)
    with torch.no_grad():
        out = model({"image": inputs["image_01"]})
    monkeypatch.setattr(torch, "randn", real)
    assert draws == []
    return out


def test_released_file_reproduces_the_official_outputs(monkeypatch) -> None:
    imported = read_released(FIXTURE / "checkpoint.pth")
    assert imported.format == "ftdinosaur" and imported.method == "ftdinosaur"
    assert find_format(torch.load(FIXTURE / "checkpoint.pth", weights_only=True)).name == "ftdinosaur"
    config = dict(imported.model_config, num_slots=4)  # the fixture's slot count (released: 7)
    assert config["image_size"] == 56 and config["top_k"] == 3 and not config["target_encoder"]
    model = build_model("ftdinosaur", config, imported.encoder)
    load_model_state(model, imported.model_state, source="fixture")
    model.eval()
    official = torch.load(FIXTURE / "outputs.pt", weights_only=True)
    out = fixture_forward(model, monkeypatch)
    ref = official["eval"]
    flat = {"masks": out["masks"]["decoder"].flatten(2), "slot_masks": out["masks"]["slots"].flatten(2),
            "slots": out["slots"], "pred_features": out["reconstruction"]}
    for name, value in flat.items():
        assert (value - ref[name]).abs().max() < 1e-5, name
    assert torch.equal(flat["masks"] > 0, ref["topk_selected"])
    with torch.no_grad():
        assert (model.encoder(torch.load(FIXTURE / "inputs.pt")["image_01"]) - ref["features"]).abs().max() < 1e-5

    # Top-k off (an evaluation choice): every slot decoded, alpha over all K.
    off = build_model("ftdinosaur", dict(config, top_k=0), imported.encoder)
    load_model_state(off, imported.model_state, source="fixture")
    out = fixture_forward(off.eval(), monkeypatch)
    assert (out["masks"]["decoder"].flatten(2) - official["eval_topk_off"]["masks"]).abs().max() < 1e-5
    assert (out["reconstruction"] - official["eval_topk_off"]["pred_features"]).abs().max() < 1e-5
    assert "top_k" in method_spec("ftdinosaur").eval_choices


def test_released_import_refuses_foreign_files() -> None:
    state = torch.load(FIXTURE / "checkpoint.pth", weights_only=True)
    from utils.released.ftdinosaur import convert, detect

    assert detect(state) and not detect({"model": state}) and not detect({k: v for k, v in state.items()
                                                                           if not k.startswith("decoder.")})
    with pytest.raises(UserError, match="unexpected key"):
        convert({**state, "decoder.extra.weight": torch.zeros(1)})
    wider = {**state, "encoder.cls_token": torch.zeros(1, 1, 96)}
    with pytest.raises(UserError, match="not a known DINOv2"):
        convert(wider)


# ------------------------------------------------------------------------------------------ the script


def test_train_eval_predict_and_flags(tmp_path: Path, monkeypatch) -> None:
    seen = {}
    real_trainer = train_ftdinosaur.Trainer

    def spy(*args, **kwargs):
        seen["cfg"] = args[7]
        return real_trainer(*args, **kwargs)

    monkeypatch.setattr(train_ftdinosaur, "Trainer", spy)
    run = train(tmp_path / "logs", "--amp", "--compile", "--lr_reference_batch", "1", "--encoder_lr_factor", "0.5",
                "--layer_lr_decay", "0.5", "--weight_decay", "0.2", "--clip_norm_type", "inf", "--max_steps", "3")
    assert seen["cfg"].clip_norm_type == math.inf and seen["cfg"].clip == 0.1 and seen["cfg"].total_steps == 8
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "ftdinosaur" and ckpt["step"] == 3
    groups = {g["name"]: g for g in ckpt["optimizer"]["param_groups"]}
    # Step 2 is the peak (warm-up 2): --lr_main x sqrt(batch 4 / --lr_reference_batch 1) = 2e-4.
    assert groups["head"]["lr"] == pytest.approx(2e-4) and groups["head"]["weight_decay"] == 0
    assert groups["enc1"]["weight_decay"] == 0.2 and groups["enc1_no_wd"]["weight_decay"] == 0
    assert groups["enc1"]["lr"] == pytest.approx(groups["head"]["lr"] * 0.5)
    assert groups["enc0"]["lr"] == pytest.approx(groups["enc1"]["lr"] * 0.5)
    # A random test encoder is stored whole, with its frozen target copy.
    assert any(k.startswith("target_encoder.") for k in ckpt["model"])

    record = eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8",
                             "--num_workers", "0", "--no_progress"])
    off = eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8",
                          "--num_workers", "0", "--no_progress", "--top_k", "0"])
    assert 0 <= record["mbo_i"] <= 100 and record["mse"] != off["mse"]

    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "in" / "a.png")
    result = predict.main(["--checkpoint", str(run), "--input", str(tmp_path / "in"), "--output",
                           str(tmp_path / "out"), "--no_progress"])
    assert [Path(p).name for p in result["written"]] == ["a"] and result["masks"] == "decoder"


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    full = train(tmp_path / "full")
    part = train(tmp_path / "part", "--max_steps", "3")
    assert load_checkpoint(part)["step"] == 3
    train_ftdinosaur.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_pretrained_targets_are_rebuilt_not_stored(tmp_path: Path) -> None:
    # A "pretrained" encoder from a weights file: the checkpoint keeps the trained encoder but not
    # the frozen target, which evaluation rebuilds from the same file.
    torch.manual_seed(3)
    weights = tmp_path / "dinov2_tiny.pth"
    torch.save(FrozenViT(ENCODER, pretrained=False).vit.state_dict(), weights)
    tiny = [a for a in TINY if a != "--no_pretrained"]
    train_ftdinosaur.main([*tiny, "--encoder_weights", str(weights), "--num_steps", "2", "--lr_warmup_steps", "0", "--log_path",
                           str(tmp_path / "logs")])
    run = next((tmp_path / "logs").iterdir())
    ckpt = load_checkpoint(run)
    assert not any(k.startswith("target_encoder.") for k in ckpt["model"])
    assert "encoder.vit.blocks.1.mlp.fc1.weight" in ckpt["model"] and "fingerprint" in ckpt["encoder"]
    model = build_model("ftdinosaur", ckpt["model_config"], ckpt["encoder"])
    load_model_state(model, ckpt["model"])
    stored = torch.load(weights, weights_only=True)
    for key, value in model.target_encoder.vit.state_dict().items():
        assert torch.equal(value, stored[key]), key
    assert not torch.equal(model.encoder.vit.blocks[1].mlp.fc1.weight, stored["blocks.1.mlp.fc1.weight"])


def test_high_resolution_stage_continues_a_run(tmp_path: Path) -> None:
    first = train(tmp_path / "stage1", "--num_steps", "2", "--lr_warmup_steps", "0")
    stage1 = load_checkpoint(first)
    run = train(tmp_path / "hires", "--init_from_run", str(first), "--image_size", "84", "--num_steps", "1",
                "--lr_main", "1e-30", "--encoder_lr_factor", "1", "--lr_warmup_steps", "0")
    ckpt = load_checkpoint(run)
    assert ckpt["init_from"]["run"] == str(first.resolve()) and ckpt["init_from"]["image_size"] == 56
    assert ckpt["model_config"]["image_size"] == 84
    pos = ckpt["model"]["decoder.pos_embed"]
    assert pos.shape == (1, 36, 16)
    # With a vanishing LR the one step leaves the weights where they started.
    expected = resample_grid_embedding(stage1["model"]["decoder.pos_embed"], (6, 6))
    assert torch.allclose(pos, expected, atol=1e-6)
    for key in ("encoder.vit.blocks.0.attn.qkv.weight", "slot_attention.to_q.weight", "target_encoder.vit.pos_embed"):
        assert torch.allclose(ckpt["model"][key], stage1["model"][key], atol=1e-6), key
    # Resuming the high-resolution run keeps its origin and does not re-initialise.
    train_ftdinosaur.main(["--resume", str(run), "--num_steps", "2"])
    assert load_checkpoint(run)["init_from"] == ckpt["init_from"]


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="top_k"):
        train_ftdinosaur.main([*TINY, "--top_k", "-1", "--log_path", str(tmp_path)])
    with pytest.raises(UserError, match="not found"):
        train_ftdinosaur.main([*TINY, "--init_from_run", str(tmp_path / "missing"), "--log_path", str(tmp_path)])
    with pytest.raises(UserError, match="num_steps"):
        train_ftdinosaur.main([*TINY, "--num_steps", "0", "--log_path", str(tmp_path)])


def test_embedding_slot_init_is_deterministic() -> None:
    model = tiny_model(init_method="embedding").eval()
    assert model.slot_attention.init.method == "embedding"
    with torch.no_grad():
        a, b = (model({"image": images()})["slots"] for _ in range(2))
    assert torch.equal(a, b)


@pytest.mark.slow  # about 40 s: two torchrun processes start and import torch
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path: Path) -> None:
    # Embedding init: the Gaussian slot noise of 2 ranks x 2 images cannot equal one draw of 4 images.
    from tests.test_distributed import torchrun

    common = [*TINY, "--init_method", "embedding", "--device", "cpu", "--val_samples", "7", "--num_steps", "4"]
    result = torchrun(2, *common, "--batch_size", "2",
                      "--log_path", str(tmp_path / "ddp"), script="train_ftdinosaur.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 4" in result.stdout + result.stderr
    train_ftdinosaur.main([*common, "--batch_size", "4", "--log_path", str(tmp_path / "single")])
    ddp, single = (load_checkpoint(next((tmp_path / d).iterdir())) for d in ("ddp", "single"))
    assert ddp["world_size"] == 2 and ddp["step"] == single["step"] == 4
    # The LR scaling reads the global batch: the same LRs as the single process.
    assert [g["lr"] for g in ddp["optimizer"]["param_groups"]] == [g["lr"] for g in single["optimizer"]["param_groups"]]
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_imported_release_evaluates_and_predicts(tmp_path: Path) -> None:
    # The released file, imported into a run folder by scripts/import_checkpoint.py and given directly,
    # goes through eval_spot.py and predict.py; --num_slots is an evaluation choice (shared-Gaussian init).
    from scripts import import_checkpoint

    run = tmp_path / "released"
    import_checkpoint.main([str(FIXTURE / "checkpoint.pth"), "--out", str(run)])
    for source in (run, FIXTURE / "checkpoint.pth"):
        record = eval_spot.main(["--checkpoint_path", str(source), "--dataset", "shapes", "--val_samples", "4",
                                 "--num_workers", "0", "--no_progress", "--num_slots", "4",
                                 "--log_path", str(tmp_path / "eval")])
        assert record["method"] == "ftdinosaur" and 0 <= record["mbo_i"] <= 100
    (tmp_path / "in").mkdir()
    Image.new("RGB", (30, 20), (10, 200, 10)).save(tmp_path / "in" / "b.png")
    result = predict.main(["--checkpoint", str(run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                           "--no_progress"])
    assert [Path(p).name for p in result["written"]] == ["b"]


# ------------------------------------------------------------------------------------------ target cache

CACHE_DATA = ["--dataset", "shapes", "--image_size", "56", "--which_encoder", ENCODER, "--no_pretrained",
              "--train_samples", "16", "--num_workers", "0"]


def test_cached_targets_give_the_loss_curve_of_images(tmp_path: Path, monkeypatch) -> None:
    from tests.test_feature_cache import losses_of, write_cache

    cache = write_cache(tmp_path / "cache", *CACHE_DATA, "--pos_embed_resampling", "timm")
    argv = [*TINY, "--log_path", str(tmp_path / "logs")]
    images = losses_of(monkeypatch, lambda: train_ftdinosaur.main(argv))
    cached = losses_of(monkeypatch, lambda: train_ftdinosaur.main([*argv, "--cache_features", str(cache)]))
    assert len(images) == len(cached) == 8
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(images), rtol=1e-3, atol=0)  # fp16 targets
    # A cache of the DINOSAUR encoder (DINO-style position resampling) is not the target encoder's.
    dino = write_cache(tmp_path / "dino", *CACHE_DATA)
    with pytest.raises(UserError, match="pos=timm"):
        train_ftdinosaur.main([*argv, "--cache_features", str(dino)])


def test_cached_flip_views_pair_image_and_targets(tmp_path: Path) -> None:
    from datasets import build_dataset
    from datasets.feature_cache import CachedFeatures, ImagesWithCachedTargets
    from tests.test_feature_cache import write_cache, write_coco

    root = write_coco(tmp_path / "coco", num_train=6)
    data = ["--dataset", "coco", "--data_path", str(root), "--image_size", "56", "--which_encoder", ENCODER,
            "--no_pretrained", "--num_workers", "0"]
    cache = write_cache(tmp_path / "cache", *data, "--pos_embed_resampling", "timm")
    torch.manual_seed(0)  # the cache script's seed: the same random encoder
    encoder = FrozenViT(ENCODER, pretrained=False, pos_embed_resampling="timm")
    dataset = ImagesWithCachedTargets(build_dataset("coco", "train", 56, None, str(root)), CachedFeatures(cache))
    rows = torch.from_numpy(np.load(cache / "train.npy")).float()  # [N, views, T, D]
    torch.manual_seed(1)
    flips = set()
    for _ in range(2):
        for index in range(len(dataset)):
            item = dataset[index]
            with torch.no_grad():
                features = encoder(item["image"][None])[0]
            errors = [(rows[index, v] - features).abs().max() for v in range(2)]
            view = int(torch.equal(item["target_features"].float(), rows[index, 1]))
            assert errors[view] < 1e-2 < errors[1 - view]  # the image and its targets show the same view
            flips.add(view)
    assert flips == {0, 1}  # both views were drawn


def test_training_forward_is_one_graph_for_torch_compile() -> None:
    # --compile gains most without graph breaks (the top-k choice, the stable sort, the trained stem).
    model = tiny_model().train()
    explained = torch._dynamo.explain(model)({"image": images()})  # noqa: SLF001
    assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
