"""SPOT-repository checkpoints (stage 1, stage 2, DINOSAUR-MLP) imported and run against the official outputs.

The fixtures were written by the official SPOT code at tiny sizes (ViT 64 wide, 2 blocks, 2 heads;
4 slots; 2 decoder heads), so the settings the files do not record are given as the import's
settings, as a user gives them with ``--set`` or the official flags.
"""
from __future__ import annotations

import copy
import shutil

import pytest
import torch

from ground.errors import UserError
from ground.safe_io import read_torch_file
from ground.state_dict import load_model_state
from models import build_encoder_from_spec, build_model
from released_fixtures import FIXTURES, TOL, load, max_abs, replay_draws
from utils.released import apply_settings, find_format, read_released, to_checkpoint
from utils.released.vit import vit_record

TINY = {"num_slots": 4, "num_heads": 2, "encoder.num_heads": 2}


def imported_model(name: str, tmp_path, settings=TINY, file="checkpoint.pt.tar"):
    imported = read_released(FIXTURES / name / file)
    apply_settings(imported, {k: v for k, v in settings.items() if k in imported.assumed})
    checkpoint = to_checkpoint(imported, name, encoder_path=tmp_path / f"{name}_{file}.safetensors")
    model = build_model("spot", checkpoint["model_config"], checkpoint["encoder"])
    load_model_state(model, checkpoint["model"], source=name)
    return model, checkpoint, imported


def run(model, name: str, mode: str, ordering: int | None = None) -> dict:
    inputs = load(name, "inputs.pt")
    model.train(mode == "train")
    if ordering is not None:
        model._ordering_indices = lambda: [ordering]
    with torch.no_grad(), replay_draws(inputs["draws"][mode]) as left:
        out = model({"image": inputs["image_01"]})
    assert not left, "the official forward drew more random numbers than the model"
    return out


def compare(out: dict, ref: dict) -> None:
    got = {"reconstruction": out["reconstruction"], "slots": out["slots"], "attn_logits": out["attn_logits"],
           "decoder_masks": out["masks"]["decoder"], "slot_attn_masks": out["masks"]["slots"],
           "loss_mse": out["losses"]["mse"]}
    for key, value in got.items():
        if key in ref:
            assert max_abs(value, ref[key]) < TOL, key


@pytest.mark.parametrize("name, fmt", [("spot_stage1", "spot_stage1"), ("dinosaur_mlp", "spot_dinosaur_mlp"),
                                       ("spot_stage2", "spot_stage2")])
def test_official_outputs_eval(name, fmt, tmp_path):
    model, checkpoint, imported = imported_model(name, tmp_path)
    assert imported.format == fmt
    compare(run(model, name, "eval"), load(name, "outputs.pt")["eval"])


@pytest.mark.parametrize("name", ["spot_stage1", "dinosaur_mlp"])
def test_official_outputs_train(name, tmp_path):
    """Training mode: the recorded patch ordering (stage 1) and slot noise."""
    model, _, _ = imported_model(name, tmp_path)
    inputs = load(name, "inputs.pt")
    ordering = int(inputs["ordering_index_train"]) if "ordering_index_train" in inputs else None
    compare(run(model, name, "train", ordering), load(name, "outputs.pt")["train"])


def test_stage2_training_step_with_imported_teacher(tmp_path):
    """Student and teacher both imported: the distillation CE, matching and total loss of the official step."""
    from models.spot_self_training import SelfTrainingSPOT

    student, _, _ = imported_model("spot_stage2", tmp_path)
    teacher, _, timp = imported_model("spot_stage2", tmp_path, file="teacher_checkpoint.pt.tar")
    assert timp.format == "spot_stage1"
    inputs, ref = load("spot_stage2", "inputs.pt"), load("spot_stage2", "outputs.pt")["train"]
    config = student.config
    teacher.config.eval_permutations = "random"
    model = SelfTrainingSPOT(student.encoder, config, teacher, ce_weight=float(ref["ce_weight"]))
    model.load_state_dict(student.state_dict(), strict=False)
    model._ordering_indices = lambda: [int(inputs["student_ordering_index_train"])]
    teacher._ordering_indices = lambda: [int(inputs["teacher_ordering_index_train"])]
    model.train()
    with torch.no_grad(), replay_draws(inputs["draws"]["train"]) as left:
        out = model({"image": inputs["image_01"]})
    assert not left
    assert max_abs(out["teacher_masks"], ref["teacher_decoder_masks"]) < TOL
    assert max_abs(out["losses"]["mse"], ref["loss_mse"]) < TOL
    assert max_abs(out["losses"]["ce"], ref["loss_ce"]) < TOL
    assert max_abs(out["loss"], ref["loss_total"]) < TOL


def test_old_decoder_prefix_and_dropped_mask(tmp_path):
    """Older runs name the decoder tf_dec.: same model; best_model.pt (the bare state dict) too. A
    self_attn_mask that is not causal, or a key the importer does not know, is refused."""
    obj = read_torch_file(FIXTURES / "spot_stage1" / "checkpoint.pt.tar")
    old = {**obj, "model": {("tf_dec." + k[4:] if k.startswith("dec.") else k): v for k, v in obj["model"].items()}}
    fmt = find_format(old)
    assert fmt.name == "spot_stage1"
    a, b = fmt.convert(old), fmt.convert(obj)
    assert a.model_state.keys() == b.model_state.keys()
    assert all(torch.equal(a.model_state[k], b.model_state[k]) for k in a.model_state)
    assert any("tf_dec." in note for note in a.notes)
    bad = copy.deepcopy(obj)
    bad["model"]["dec.blocks.0.self_attn_mask"] = torch.zeros(16, 16, dtype=torch.bool)
    with pytest.raises(UserError, match="causal mask"):
        fmt.convert(bad)
    bare = find_format(obj["model"])  # best_model.pt: the state dict alone
    assert bare.name == "spot_stage1" and bare.convert(obj["model"]).model_state.keys() == b.model_state.keys()
    extra = {**obj, "model": {**obj["model"], "dec.something_new.weight": torch.zeros(2)}}
    with pytest.raises(UserError, match="unexpected key dec.something_new.weight"):
        fmt.convert(extra)


def test_every_key_is_used(tmp_path):
    """The imported state fills the model exactly (load_model_state is strict), and what was left
    out of the file's keys is only the frozen encoder, the causal masks and the MLP's unused parts."""
    for name in ("spot_stage1", "dinosaur_mlp", "spot_stage2"):
        model, checkpoint, imported = imported_model(name, tmp_path)
        sd = read_torch_file(FIXTURES / name / "checkpoint.pt.tar")["model"]
        left = [k for k in sd if not k.startswith(("encoder.", "second_encoder.")) and not k.endswith("self_attn_mask")]
        mapped = len([k for k in imported.model_state if not k.startswith("encoder.")])
        unused = {"dinosaur_mlp": 4}.get(name, 0)  # bos_tokens and input_proj.{0.weight,1.weight,1.bias}
        assert mapped == len(left) - unused, name


def test_encoder_record_and_fingerprint(tmp_path):
    """The frozen ViT stored in the file is written once and rebuilt with the recorded fingerprint;
    other weights in its place are refused."""
    _, checkpoint, _ = imported_model("spot_stage1", tmp_path)
    spec = checkpoint["encoder"]
    assert spec["name"] == "dino_vitb16" and spec["model_overrides"]["num_heads"] == 2
    assert spec["model_overrides"]["embed_dim"] == 64 and spec["model_overrides"]["depth"] == 2
    encoder = build_encoder_from_spec(spec)
    sd = read_torch_file(FIXTURES / "spot_stage1" / "checkpoint.pt.tar")["model"]
    assert torch.equal(encoder.vit.blocks[1].attn.qkv.weight, sd["encoder.blocks.1.attn.qkv.weight"])
    from safetensors.torch import load_file, save_file

    weights = load_file(spec["weights_path"])
    weights["blocks.0.attn.qkv.weight"] = weights["blocks.0.attn.qkv.weight"] * 2
    other = tmp_path / "other.safetensors"
    save_file(weights, str(other))
    with pytest.raises(UserError, match="differ from those used in training"):
        build_encoder_from_spec({**spec, "weights_path": str(other)})


def test_vit_architecture_from_shapes():
    """A full-size DINO ViT-B/16 is recognised by name with no overrides; a resized one gets its
    sizes as overrides and an assumed head count (64-wide heads)."""
    def vit(width, depth, patch, grid):
        z = lambda *shape: torch.zeros(()).expand(*shape)  # noqa: E731 - shapes only, no memory
        sd = {"cls_token": z(1, 1, width), "pos_embed": z(1, grid * grid + 1, width),
              "patch_embed.proj.weight": z(width, 3, patch, patch), "patch_embed.proj.bias": z(width),
              "norm.weight": z(width), "norm.bias": z(width)}
        for i in range(depth):
            sd.update({f"blocks.{i}.attn.qkv.weight": z(3 * width, width), f"blocks.{i}.mlp.fc1.weight": z(4 * width, width)})
        return sd

    record, _, notes, assumed = vit_record(vit(768, 12, 16, 14), "x")
    assert record["name"] == "dino_vitb16" and "model_overrides" not in record and not assumed
    record, _, _, _ = vit_record(vit(384, 12, 8, 28), "x")
    assert record["name"] == "dino_vits8" and "model_overrides" not in record
    record, _, _, _ = vit_record(vit(768, 12, 16, 20), "x")  # trained at 320 px
    assert record["model_overrides"] == {"img_size": 320}
    record, _, notes, assumed = vit_record(vit(128, 3, 16, 4), "x")
    assert record["model_overrides"] == {"embed_dim": 128, "depth": 3, "img_size": 64, "num_heads": 2}
    assert assumed == {"encoder.num_heads": 2} and "assumed" in notes[0]


def test_settings_the_file_does_not_record(tmp_path):
    """num_slots (shared-Gaussian init) and the decoder heads are assumed and replaceable; a
    setting the file records cannot be overridden; the wrong head count does not fit the model."""
    imported = read_released(FIXTURES / "spot_stage1" / "checkpoint.pt.tar")
    assert imported.assumed["num_slots"] == 7 and imported.assumed["num_heads"] == 6
    with pytest.raises(UserError, match="records this itself"):
        apply_settings(imported, {"slot_size": 64}, strict=True)
    checkpoint = to_checkpoint(imported, "x", encoder_path=tmp_path / "e.safetensors")
    with pytest.raises(UserError, match="--num_heads 6 does not divide the width 64"):
        build_model("spot", checkpoint["model_config"], checkpoint["encoder"])
    stage2 = read_released(FIXTURES / "spot_stage2" / "checkpoint.pt.tar")
    assert stage2.model_config["num_slots"] == 4 and "num_slots" not in stage2.assumed  # embedding init: recorded


def test_stage2_student_encoder_must_share_the_frozen_stem(tmp_path):
    obj = read_torch_file(FIXTURES / "spot_stage2" / "checkpoint.pt.tar")
    bad = {**obj, "model": dict(obj["model"])}
    bad["model"]["encoder.patch_embed.proj.weight"] = bad["model"]["encoder.patch_embed.proj.weight"] + 1
    with pytest.raises(UserError, match="outside its last blocks"):
        find_format(bad).convert(bad)


def _spot_layout(width=768, depth=12, slot=256, hidden=1024, tokens=196, blocks=4, slots=7, patch=16,
                 stage2=True, finetuned_from=8) -> dict:
    """The state-dict layout of a SPOT-repository file (shapes only: expanded zeros, no memory).

    At the fixture's sizes it has exactly the fixture's keys (checked below); at the defaults it is
    the layout of the released ViT-B/16 COCO stage-2 file.
    """
    def z(*shape, value=0.0):
        return torch.full((), value).expand(*shape)

    grid = int(tokens ** 0.5)
    sd = {}
    for prefix in ["encoder.", "second_encoder."] if stage2 else ["encoder."]:
        sd.update({f"{prefix}cls_token": z(1, 1, width), f"{prefix}pos_embed": z(1, grid * grid + 1, width),
                   f"{prefix}patch_embed.proj.weight": z(width, 3, patch, patch), f"{prefix}patch_embed.proj.bias": z(width),
                   f"{prefix}norm.weight": z(width), f"{prefix}norm.bias": z(width)})
        for i in range(depth):
            v = 1.0 if prefix == "encoder." and stage2 and i >= finetuned_from else 0.0  # fine-tuned blocks differ
            b = f"{prefix}blocks.{i}."
            sd.update({b + "norm1.weight": z(width, value=v), b + "norm1.bias": z(width, value=v),
                       b + "attn.qkv.weight": z(3 * width, width, value=v), b + "attn.qkv.bias": z(3 * width, value=v),
                       b + "attn.proj.weight": z(width, width, value=v), b + "attn.proj.bias": z(width, value=v),
                       b + "norm2.weight": z(width, value=v), b + "norm2.bias": z(width, value=v),
                       b + "mlp.fc1.weight": z(4 * width, width, value=v), b + "mlp.fc1.bias": z(4 * width, value=v),
                       b + "mlp.fc2.weight": z(width, 4 * width, value=v), b + "mlp.fc2.bias": z(width, value=v)})
    s = "slot_attn."
    sd.update({s + "layer_norm.weight": z(width), s + "layer_norm.bias": z(width), s + "mlp.0.weight": z(width, width),
               s + "mlp.0.bias": z(width), s + "mlp.2.weight": z(width, width), s + "mlp.2.bias": z(width)})
    if stage2:
        sd[s + "slots_init.weight"] = z(slots, slot)
    else:
        sd.update({s + "slot_mu": z(1, 1, slot), s + "slot_log_sigma": z(1, 1, slot)})
    a = s + "slot_attention."
    for norm, dim in (("norm_inputs", width), ("norm_slots", slot), ("norm_mlp", slot)):
        sd.update({f"{a}{norm}.weight": z(dim), f"{a}{norm}.bias": z(dim)})
    sd.update({a + "project_q.weight": z(slot, slot), a + "project_k.weight": z(slot, width),
               a + "project_v.weight": z(slot, width), a + "gru.weight_ih": z(3 * slot, slot),
               a + "gru.weight_hh": z(3 * slot, slot), a + "gru.bias_ih": z(3 * slot), a + "gru.bias_hh": z(3 * slot),
               a + "mlp.0.weight": z(hidden, slot), a + "mlp.0.bias": z(hidden), a + "mlp.2.weight": z(slot, hidden),
               a + "mlp.2.bias": z(slot)})
    sd.update({"input_proj.0.weight": z(width, width), "input_proj.1.weight": z(width), "input_proj.1.bias": z(width),
               "slot_proj.0.weight": z(width, slot), "slot_proj.1.weight": z(width), "slot_proj.1.bias": z(width),
               "bos_tokens": z(9, 1, 1, width), "dec.layer_norm.weight": z(width), "dec.layer_norm.bias": z(width)})
    for j in range(blocks):
        d = f"dec.blocks.{j}."
        sd[d + "self_attn_mask"] = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
        for norm in ("self_attn_layer_norm", "encoder_decoder_attn_layer_norm", "ffn_layer_norm"):
            sd.update({f"{d}{norm}.weight": z(width), f"{d}{norm}.bias": z(width)})
        for attn in ("self_attn", "encoder_decoder_attn"):
            sd.update({f"{d}{attn}.proj_{p}.weight": z(width, width) for p in "qkvo"})
        sd.update({d + "ffn.0.weight": z(4 * width, width), d + "ffn.0.bias": z(4 * width),
                   d + "ffn.2.weight": z(width, 4 * width), d + "ffn.2.bias": z(width)})
    return {"epoch": 0, "best_val_loss": 0.0, "best_epoch": 0, "model": sd, "optimizer": {}}


def test_released_size_stage2_layout():
    """The layout generator reproduces the official fixture's keys and shapes at its sizes; at the
    released sizes (ViT-B/16, 224 px, 7 slots, 4 decoder blocks, blocks 8-11 fine-tuned) the file is
    read as dino_vitb16 with no override and fits this project's model key for key."""
    from models import build_model
    from ground.state_dict import describe_key_mismatch, model_state

    fixture = read_torch_file(FIXTURES / "spot_stage2" / "checkpoint.pt.tar")["model"]
    small = _spot_layout(width=64, depth=2, slot=32, hidden=64, tokens=16, blocks=2, slots=4)["model"]
    assert {k: tuple(v.shape) for k, v in small.items()} == {k: tuple(v.shape) for k, v in fixture.items()}

    obj = _spot_layout()
    fmt = find_format(obj)
    assert fmt.name == "spot_stage2"
    imported = fmt.convert(obj)
    config, encoder = imported.model_config, imported.encoder
    assert (config["image_size"], config["num_slots"], config["num_dec_blocks"], config["num_heads"]) == (224, 7, 4, 6)
    assert config["train_permutations"] == "random" and config["use_second_encoder"]
    assert encoder["name"] == "dino_vitb16" and "model_overrides" not in encoder
    assert encoder["finetune_blocks_after"] == 8 and "num_slots" not in imported.assumed
    with torch.device("meta"):
        model = build_model("spot", config, {**encoder, "pretrained": False})
    expected = {k: v for k, v in model_state(model).items()
                if not k.startswith(("encoder.", "target_encoder.")) or (k.startswith("encoder.vit.blocks.")
                                                                         and int(k.split(".")[3]) >= 8)}
    assert describe_key_mismatch(imported.model_state, expected) is None
    assert describe_key_mismatch(imported.encoder_state, model.target_encoder.vit.state_dict()) is None
