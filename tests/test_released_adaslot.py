"""AdaSlot / DINOSAUR checkpoints of the official OCLF-based code and of the unofficial DINOSAURpp code,
imported and run against the official outputs; full-size OCLF layouts (keys.json) mapped completely."""
from __future__ import annotations

import json
import re

import pytest
import torch

from ground.errors import UserError
from ground.safe_io import read_torch_file
from ground.state_dict import describe_key_mismatch, load_model_state, model_state
from models import build_model
from models.decoders import mask_normalized
from released_fixtures import FIXTURES, TOL, load, max_abs, replay_draws
from utils.released import apply_settings, find_format, read_released, to_checkpoint


def imported_model(name: str, file: str, settings: dict, tmp_path):
    imported = read_released(FIXTURES / name / file)
    apply_settings(imported, settings, strict=True)
    checkpoint = to_checkpoint(imported, name, encoder_path=tmp_path / "encoder.safetensors")
    encoder = checkpoint["encoder"]
    if imported.encoder_state is None:
        # The file holds no ViT (its fixture input is the token grid): a random stand-in, never run.
        encoder = {**encoder, "pretrained": False, "model_overrides": {"depth": 0}}
    model = build_model("adaslot", checkpoint["model_config"], encoder)
    if imported.encoder_state is None:
        result = model.load_state_dict(checkpoint["model"], strict=False)
        assert not result.unexpected_keys and all(k.startswith("encoder.") for k in result.missing_keys)
    else:
        load_model_state(model, checkpoint["model"], source=name)
    return model, imported


def outputs(model, batch, draws, mode):
    model.train(mode == "train")
    with torch.no_grad(), replay_draws(draws) as left:
        out = model(batch)
    assert not left, "the official forward drew more random numbers than the model"
    return out


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_dinosaurpp_adaslot_stage2(mode, tmp_path):
    """Unofficial AdaSlot stage 2 on the fixture's token grid: slots, keep decisions, masks, losses."""
    model, imported = imported_model("adaslot_stage2", "checkpoint.pt", {"num_slots": 6}, tmp_path)
    assert imported.format == "adaslot_dinosaurpp" and imported.model_config["adaptive"]
    assert imported.model_config["sparsity_weight"] == 0.5 and imported.model_config["input_mlp_hidden"] == 64
    inputs, ref = load("adaslot_stage2", "inputs.pt"), load("adaslot_stage2", "outputs.pt")[mode]
    out = outputs(model, {"features": inputs["features"]}, inputs["draws"][mode], mode)
    assert torch.equal(out["slot_keep"], ref["hard_keep"])
    for got, key in [(out["reconstruction"], "reconstruction"), (out["slots"], "slots"),
                     (out["masks"]["decoder"].flatten(2), "masks"), (out["slot_keep_prob"], "soft_keep"),
                     (out["losses"]["mse"], "loss_mse"), (out["losses"]["sparsity"], "loss_sparsity"),
                     (out["loss"], "loss_total")]:
        assert max_abs(got, ref[key]) < TOL, key


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_oclf_adaslot(mode, tmp_path):
    """Official AdaSlot (OCLF Lightning file): the ViT stored in the file, slots, selector, decoder, losses."""
    model, imported = imported_model("adaslot_oclf", "checkpoint.ckpt", {"num_slots": 6, "encoder.num_heads": 2},
                                     tmp_path)
    assert imported.format == "adaslot_oclf" and imported.model_config["sparsity_weight"] == 0.1
    inputs, ref = load("adaslot_oclf", "inputs.pt"), load("adaslot_oclf", "outputs.pt")[mode]
    with torch.no_grad():
        assert max_abs(model.encode(inputs["image_01"]), ref["features"]) < TOL
    out = outputs(model, {"image": inputs["image_01"]}, inputs["draws"][mode], mode)
    assert torch.equal(out["slot_keep"], ref["hard_keep_decision"])
    # This project reports slot-attention masks renormalised over the kept slots, like the decoder's.
    attention = mask_normalized(ref["slot_attention_masks"], ref["hard_keep_decision"])
    for got, want, key in [(out["reconstruction"], ref["reconstruction"], "reconstruction"),
                           (out["slots"], ref["slots"], "slots"),
                           (out["masks"]["decoder"].flatten(2), ref["masks"], "masks"),
                           (out["masks"]["slots"].flatten(2), attention, "slot masks"),
                           (out["slot_keep_prob"], ref["slots_keep_prob"], "keep prob"),
                           (out["losses"]["mse"], ref["loss_mse"], "mse"),
                           (out["losses"]["sparsity"], ref["loss_sparse_penalty"], "sparsity"),
                           (out["loss"], ref["loss_total"], "total")]:
        assert max_abs(got, want) < TOL, key


def _layout(name: str) -> dict[str, torch.Tensor]:
    """A Lightning-style file at the full released sizes, from keys.json (shapes only, no memory)."""
    groups = json.loads((FIXTURES / name / "keys.json").read_text())["checkpoint"]["groups"]
    state = {}
    for group in groups.values():
        for key, text in group["keys"].items():
            shape = [int(x) for x in re.findall(r"\d+", text.split("]")[0])]
            state[key] = torch.zeros(()).expand(*shape)
    return {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.9.5", "state_dict": state, "loops": {},
            "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}


@pytest.mark.parametrize("name, adaptive, slots", [("adaslot_oclf", True, 33), ("dinosaur_oclf", False, 7)])
def test_full_size_oclf_layout(name, adaptive, slots):
    """Every key of the released-size layout is mapped (nothing left over), the ViT is DINO ViT-B/16 by
    name, and the result has exactly the keys and shapes of this project's model at those sizes."""
    obj = _layout(name)
    fmt = find_format(obj)
    assert fmt.name == "adaslot_oclf"
    imported = fmt.convert(obj)
    config = imported.model_config
    assert (config["adaptive"], config["num_slots"], config["slot_size"], config["image_size"]) == (adaptive, slots, 256, 224)
    assert (config["mlp_dec_hidden"], config["mlp_dec_layers"], config["input_mlp_hidden"]) == (2048, 3, None)
    assert imported.encoder["name"] == "dino_vitb16" and "model_overrides" not in imported.encoder
    n_file = len(obj["state_dict"])
    assert len(imported.model_state) + len(imported.encoder_state) - 2 == n_file  # + the identity final norm
    with torch.device("meta"):
        model = build_model("adaslot", config, {**imported.encoder, "pretrained": False})
    expected = {k: v for k, v in model_state(model).items() if not k.startswith("encoder.")}
    assert describe_key_mismatch(imported.model_state, expected) is None
    vit = model.encoder.vit.state_dict()
    assert describe_key_mismatch(imported.encoder_state, vit) is None
    strict = model.load_state_dict({**imported.model_state, **{f"encoder.vit.{k}": v for k, v in
                                                               imported.encoder_state.items()}},
                                   strict=True, assign=True)
    assert not strict.missing_keys and not strict.unexpected_keys


def test_settings_and_refusals(tmp_path):
    """The assumed encoder of a DINOSAURpp file can be named; a trained module missing or a foreign
    key is refused with one line."""
    imported = read_released(FIXTURES / "adaslot_stage2" / "checkpoint.pt")
    assert imported.encoder["name"] == "dino-vitb-16" and imported.encoder_state is None
    apply_settings(imported, {"which_encoder": "dino-vitb-8"}, strict=True)
    assert imported.encoder["name"] == "dino-vitb-8" and imported.args["which_encoder"] == "dino-vitb-8"
    obj = read_torch_file(FIXTURES / "adaslot_stage2" / "checkpoint.pt")
    missing = {**obj, "model_state_dict": {k: v for k, v in obj["model_state_dict"].items()
                                           if not k.startswith("slot_decoder.layer1.")}}
    with pytest.raises(UserError, match="decoder's layers|trained module is missing"):
        find_format(missing).convert(missing)
    foreign = {**obj, "model_state_dict": {**obj["model_state_dict"], "slot_attention.extra": torch.zeros(1)}}
    with pytest.raises(UserError, match="unexpected key slot_attention.extra"):
        find_format(foreign).convert(foreign)


def test_command_line_settings_reach_only_open_settings(tmp_path):
    """checkpoint_settings (what eval_spot.py applies from typed flags) changes the settings a file
    leaves open, here the encoder name and the slot count, and nothing the file records."""
    from utils.released import checkpoint_settings

    imported = read_released(FIXTURES / "adaslot_stage2" / "checkpoint.pt")
    checkpoint = to_checkpoint(imported, "x")
    changed = checkpoint_settings(checkpoint, {"which_encoder": "dino-vitb-8", "num_slots": 9, "slot_size": 5})
    assert changed["encoder"]["name"] == "dino-vitb-8" and changed["model_config"]["num_slots"] == 9
    assert changed["model_config"]["slot_size"] == 32 and checkpoint["model_config"]["num_slots"] == 7
    assert changed["released"]["assumed"]["num_slots"] == 9
    project = {"method": "adaslot", "model": {}, "model_config": {"num_slots": 3}}
    assert checkpoint_settings(project, {"num_slots": 9}) is project
