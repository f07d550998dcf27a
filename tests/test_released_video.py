"""Released SMTC, SlotCon and SlotFA checkpoints: detection, conversion, official outputs, and the
evaluation scripts reading a run folder built from an imported file (fixtures: tests/fixtures/official/)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import eval_slotfa
import eval_smtc
from ground.errors import UserError
from ground.safe_io import read_torch_file
from ground.state_dict import load_model_state
from models import build_model
from models.smtc import instance_masks
from tests.official_fixtures import (OFFICIAL, keys_json, load_fixture, max_abs, namespace, random_state, replay,
                                     write_run)
from utils.released import find_format
from utils.released.video import convert_smtc

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5  # normalised outputs (fixture README); features and slots: 5e-5
FEATURE_TOL = 5e-5


# --- SMTC -----------------------------------------------------------------------------------------

def smtc_imported():
    obj = read_torch_file(OFFICIAL / "smtc/checkpoint.pth")
    assert find_format(obj).name == "smtc"
    return convert_smtc(obj, num_instances=2)  # the fixture's setting; the file does not store it


def smtc_model(imported, tmp_path: Path) -> nn.Module:
    """The project's SMTC from the imported record, loaded strictly."""
    path = tmp_path / "encoder.pt"
    torch.save(imported.encoder_state, path)
    model = build_model("smtc", imported.model_config, {**imported.encoder, "weights_path": str(path)})
    load_model_state(model, imported.model_state)
    return model


def run_student(net: nn.Module, mode: str):
    """The student's forward with the recorded instance initialisation, in evaluation mode.

    Both fixture modes ran the official model in eval mode (``train_path`` is the training
    forward's tensors, without drop-path): the only draw is the instance initialisation, which
    the fixture records. This project's student trains with drop-path 0.1 as the official one;
    in eval mode neither draws it, so the comparison is exact rather than replaying drop masks
    the fixture does not hold. The official draw is ``torch.normal(mu, sigma)``; this project
    draws the unit noise and scales it, so the recorded sample is turned back into that noise.
    """
    inputs, outputs = load_fixture("smtc")
    mu = net.slot_attention.init.embedding
    mu = mu.view(1, mu.shape[0], 1, mu.shape[1])
    with torch.no_grad():
        noise = (inputs["draws"][mode][0]["value"] - mu) / net.log_sigma.exp()
    with replay([noise]), torch.no_grad():
        out = net.eval()(inputs["video_01"])
    return out, outputs[mode]


@pytest.mark.parametrize("mode", ["train_path", "eval"])  # the fixture's modes (it records no "train")
def test_smtc_reproduces_the_official_outputs(tmp_path: Path, mode: str):
    imported = smtc_imported()
    config = imported.model_config
    assert config["qkv_bias"] and not config["reparam_instances"] and config["encoder_drop_path"] == 0.1
    net = smtc_model(imported, tmp_path).student
    out, ref = run_student(net, mode)
    if mode == "train_path":  # the tensors the official training losses read
        assert max_abs(out["keys"], ref["keys"]) < FEATURE_TOL
        assert max_abs(out["semantic_logits"], ref["semantic_logits"]) < FEATURE_TOL
        assert max_abs(out["semantic_slots"], ref["semantic_slots"]) < FEATURE_TOL
        assert max_abs(out["instance_slots"], ref["instance_slots"]) < FEATURE_TOL
        assert max_abs(out["projections"], ref["projected_instances"]) < TOL
    else:
        masks, similarity = instance_masks(out)
        assert max_abs(out["semantic_logits"].softmax(2), ref["semantic_mask"]) < TOL
        assert max_abs(similarity, ref["similarity"]) < TOL
        assert max_abs(masks, ref["instance_mask"]) < TOL
        assert tuple(out["semantic_logits"].shape[-1:]) == (int(ref["feat_hw"].prod()),)


def test_smtc_import_maps_the_student_and_its_vit(tmp_path: Path):
    imported = smtc_imported()
    assert imported.encoder["name"] == "vit_w48_p16" and imported.encoder["fingerprint"] > 0
    model = smtc_model(imported, tmp_path)
    vit = read_torch_file(OFFICIAL / "smtc/checkpoint.pth")["model_state_dict"]
    for p in "qkv":  # the projections' biases map straight onto the slot attention's
        theirs = vit[f"slot_attention.project_{p}.bias"]
        assert torch.equal(getattr(model.student.slot_attention, f"to_{p}").bias, theirs)
    assert torch.equal(model.student.encoder.vit.pos_embed, vit["encoder.pos_embed"])
    assert torch.equal(model.student.encoder.vit.blocks[0].attn.qkv.weight, vit["encoder.blocks.0.attn.qkv.weight"])
    # The teacher starts as a copy of the student (the file holds no teacher).
    assert torch.equal(model.teacher.projector[0].weight, model.student.projector[0].weight)
    with pytest.raises(UserError, match="unknown SMTC settings"):
        convert_smtc(read_torch_file(OFFICIAL / "smtc/checkpoint.pth"), num_slots=4)


def test_smtc_file_without_qkv_biases_is_refused():
    obj = read_torch_file(OFFICIAL / "smtc/checkpoint.pth")
    del obj["model_state_dict"]["slot_attention.project_k.bias"]
    with pytest.raises(UserError, match="has no 'slot_attention.project_k.bias'"):
        convert_smtc(obj)


def davis_fixture(root: Path) -> None:
    from tests.fixtures_video import write_davis_fixture

    labels = np.zeros((4, 48, 64), np.uint8)
    for t in range(4):
        labels[t, 8 + t: 24 + t, 10 + t: 30 + t] = 1
    write_davis_fixture(root, {"bear": labels})


def test_eval_smtc_reads_a_run_folder_built_from_an_imported_file(tmp_path: Path):
    imported = smtc_imported()
    run = write_run(tmp_path / "run", imported)
    davis_fixture(tmp_path / "DAVIS")
    result = eval_smtc.main(["--task", "discovery", "--davis_path", str(tmp_path / "DAVIS"), "--checkpoint_path",
                             str(run), "--output_dir", str(tmp_path / "eval"), "--discovery_size", "48", "64",
                             "--device", "cpu"])
    assert 0.0 <= result["J&F-Mean"] <= 1.0
    assert (tmp_path / "eval" / "discovery_sequence" / "global_results-val.csv").is_file()


# --- SlotCon / SlotFA -----------------------------------------------------------------------------

def pretrain_object(name: str, epoch: int = 3) -> dict:
    """A full SlotCon/SlotFA checkpoint with the fixture's layout (random tensors of its shapes)."""
    layout = keys_json(name)
    return {"args": namespace(layout["args"]), "model": random_state(layout["model"]), "epoch": epoch}


def test_slotcon_layout_maps_every_key():
    obj = pretrain_object("slotcon")
    fmt = find_format(obj)
    assert fmt.name == "slotcon"  # the shared layout is read as SlotCon unless --format slotfa
    imported = fmt.convert(obj)
    config = imported.model_config
    assert (config["method"], config["arch"], config["num_prototypes"], config["dim_out"]) == ("slotcon", "resnet18", 64, 64)
    model = build_model(imported.method, config, None)
    load_model_state(model, imported.model_state)
    assert torch.equal(model.encoder_k.layer4[1].conv2.weight, obj["model"]["module.encoder_k.layer4.1.conv2.weight"])
    assert torch.equal(model.predictor_slot.mlp[6].weight, obj["model"]["module.predictor_slot.mlp.6.weight"])
    assert torch.equal(model.center, obj["model"]["module.center"])
    steps_per_epoch = int(118287 / 1 / 2)
    assert config["total_steps"] == steps_per_epoch * 800 and int(model.momentum_step) == 3 * steps_per_epoch


def test_slotfa_layout_maps_every_key_and_drops_the_unused_predictor():
    obj = pretrain_object("slotfa")
    imported = find_format(obj, "slotfa").convert(obj)
    assert imported.model_config["method"] == "slotfa" and imported.model_config["fa_grad"] == "none"
    assert not any(k.startswith("predictor_slot.") for k in imported.model_state)
    assert any("slot predictor" in note for note in imported.notes)
    model = build_model("slotfa", imported.model_config, None)
    load_model_state(model, imported.model_state)
    assert torch.equal(model.grouping_q.slot_embed.weight, obj["model"]["module.grouping_q.slot_embed.weight"])


def test_a_pretraining_file_missing_a_teacher_block_is_refused():
    obj = pretrain_object("slotcon")
    del obj["model"]["module.encoder_k.layer3.0.bn1.running_var"]
    with pytest.raises(UserError, match="has no 'encoder_k.layer3.0.bn1.running_var'"):
        find_format(obj).convert(obj)


@pytest.fixture(scope="module")
def slotfa_run(tmp_path_factory) -> tuple[Path, dict]:
    obj = pretrain_object("slotfa")
    imported = find_format(obj, "slotfa").convert(obj)
    run = write_run(tmp_path_factory.mktemp("slotfa") / "run", imported, {"seed": 0})
    return run, obj


def test_eval_slotfa_reads_a_run_folder_built_from_an_imported_file(slotfa_run, tmp_path: Path):
    run, _ = slotfa_run
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    out = eval_slotfa.viz(eval_slotfa.build_parser().parse_args(
        ["viz", "--checkpoint", str(run), "--data-dir", str(images), "--topk", "2", "--num-shown", "2",
         "--device", "cpu", "--output", str(tmp_path / "viz")]))
    assert (out / "slots.png").is_file()


def test_convert_to_detectron2_takes_an_imported_run_and_the_upstream_file(slotfa_run, tmp_path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_to_detectron2", REPO / "scripts" / "convert_to_detectron2.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run, obj = slotfa_run
    upstream = tmp_path / "ckpt_epoch_3.pth"
    torch.save({"args": vars(obj["args"]), "model": obj["model"], "epoch": 3}, upstream)
    payloads = []
    for source in (run, upstream):
        target = tmp_path / f"{source.name}.pkl"
        script.main([str(source), str(target)])
        with open(target, "rb") as f:
            payloads.append(pickle.load(f)["model"])
    assert payloads[0].keys() == payloads[1].keys()
    assert (payloads[0]["stem.conv1.weight"] == obj["model"]["module.encoder_k.conv1.weight"].numpy()).all()
    assert (payloads[1]["stem.conv1.weight"] == payloads[0]["stem.conv1.weight"]).all()
