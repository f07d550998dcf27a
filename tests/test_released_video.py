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
from models import build_model
from models.smtc import instance_masks
from tests.official_fixtures import OFFICIAL, keys_json, load_fixture, max_abs, namespace, random_state, write_run
from utils.checkpoint import load_model_state, read_torch_file
from utils.errors import UserError
from utils.released import find_format
from utils.released.video import convert_smtc

REPO = Path(__file__).resolve().parent.parent
TOL = 1e-5  # normalised outputs (fixture README); features and slots: 5e-5
FEATURE_TOL = 5e-5
QKV_BIASES = tuple(f"{branch}.slot_attention.to_{p}.bias" for branch in ("student", "teacher") for p in "qkv")


# --- SMTC -----------------------------------------------------------------------------------------

def smtc_imported(zero_biases: bool = False):
    obj = read_torch_file(OFFICIAL / "smtc/checkpoint.pth")
    assert find_format(obj).name == "smtc"
    if zero_biases:
        for p in "qkv":
            obj["model_state_dict"][f"slot_attention.project_{p}.bias"].zero_()
    return convert_smtc(obj, num_instances=2)  # the fixture's setting; the file does not store it


def smtc_model(imported, tmp_path: Path, drop: tuple[str, ...] = ()) -> nn.Module:
    path = tmp_path / "encoder.pt"
    torch.save(imported.encoder_state, path)
    model = build_model("smtc", imported.model_config, {**imported.encoder, "weights_path": str(path)})
    load_model_state(model, {k: v for k, v in imported.model_state.items() if k not in drop})
    return model


def run_student(net: nn.Module, mode: str):
    """The student's forward with the recorded instance initialisation.

    The official code draws the instance slots as ``torch.normal(mu, sigma)``; this project draws
    the unit noise and scales it, so the recorded sample is turned back into that noise.
    """
    inputs, outputs = load_fixture("smtc")
    mu = net.slot_attention.init.embedding
    mu = mu.view(1, mu.shape[0], 1, mu.shape[1])
    noise = (inputs["draws"][mode][0]["value"] - mu) / net.log_sigma.exp()
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(torch, "randn", lambda *a, **k: noise.detach().clone())
        out = net.eval()(inputs["video_01"])
    return out, outputs[mode]


def assert_smtc_matches(net: nn.Module) -> None:
    out, ref = run_student(net, "train_path")
    assert max_abs(out["keys"], ref["keys"]) < FEATURE_TOL
    assert max_abs(out["semantic_logits"], ref["semantic_logits"]) < FEATURE_TOL
    assert max_abs(out["semantic_slots"], ref["semantic_slots"]) < FEATURE_TOL
    assert max_abs(out["instance_slots"], ref["instance_slots"]) < FEATURE_TOL
    assert max_abs(out["projections"], ref["projected_instances"]) < TOL
    out, ref = run_student(net, "eval")
    masks, similarity = instance_masks(out)
    assert max_abs(out["semantic_logits"].softmax(2), ref["semantic_mask"]) < TOL
    assert max_abs(similarity, ref["similarity"]) < TOL
    assert max_abs(masks, ref["instance_mask"]) < TOL


def test_smtc_import_maps_the_student_and_its_vit(tmp_path: Path):
    imported = smtc_imported()
    assert imported.encoder["name"] == "vit_w48_p16" and imported.encoder["fingerprint"] > 0
    assert set(QKV_BIASES) <= set(imported.model_state)  # kept under nn.Linear's names, not dropped
    model = smtc_model(imported, tmp_path, drop=QKV_BIASES)
    vit = read_torch_file(OFFICIAL / "smtc/checkpoint.pth")["model_state_dict"]
    assert torch.equal(model.student.encoder.vit.pos_embed, vit["encoder.pos_embed"])
    assert torch.equal(model.student.encoder.vit.blocks[0].attn.qkv.weight, vit["encoder.blocks.0.attn.qkv.weight"])
    # The teacher starts as a copy of the student (the file holds no teacher).
    assert torch.equal(model.teacher.projector[0].weight, model.student.projector[0].weight)
    with pytest.raises(UserError, match="unknown SMTC settings"):
        convert_smtc(read_torch_file(OFFICIAL / "smtc/checkpoint.pth"), num_slots=4)


def test_smtc_keys_match_upstream_of_the_slot_attention(tmp_path: Path):
    """The ViT keys with the temporal-correspondence term do not pass through the q/k/v biases."""
    model = smtc_model(smtc_imported(), tmp_path, drop=QKV_BIASES)
    out, ref = run_student(model.student, "train_path")
    assert max_abs(out["keys"], ref["keys"]) < FEATURE_TOL


def test_smtc_matches_everywhere_once_its_qkv_biases_are_applied(tmp_path: Path):
    """Evidence that the q/k/v biases are the only gap: with them added to the projections (in the
    test only), every official output is reproduced."""
    imported = smtc_imported()
    model = smtc_model(imported, tmp_path, drop=QKV_BIASES)
    sa = model.student.slot_attention
    for p in "qkv":
        old = getattr(sa, f"to_{p}")
        new = nn.Linear(old.in_features, old.out_features, bias=True)
        with torch.no_grad():
            new.weight.copy_(old.weight)
            new.bias.copy_(imported.model_state[f"student.slot_attention.to_{p}.bias"])
        setattr(sa, f"to_{p}", new)
    assert_smtc_matches(model.student)


def test_smtc_with_zero_biases_matches_without_them(tmp_path: Path):
    """Zeroed biases make the project's bias-free projections exact: the rest of the mapping is right."""
    model = smtc_model(smtc_imported(zero_biases=True), tmp_path, drop=QKV_BIASES)
    out, _ = run_student(model.student, "train_path")
    assert torch.isfinite(out["instance_slots"]).all()
    with_biases = smtc_model(smtc_imported(), tmp_path, drop=QKV_BIASES)
    other, _ = run_student(with_biases.student, "train_path")
    assert max_abs(out["keys"], other["keys"]) == 0.0


@pytest.mark.xfail(reason="needs fidelity fix: SMTC q/k/v biases (this project's slot attention projections have "
                          "none, so the imported biases do not load)", strict=True)
def test_smtc_reproduces_the_official_outputs(tmp_path: Path):
    model = smtc_model(smtc_imported(), tmp_path)
    assert_smtc_matches(model.student)


def davis_fixture(root: Path) -> None:
    from tests.fixtures_video import write_davis_fixture

    labels = np.zeros((4, 48, 64), np.uint8)
    for t in range(4):
        labels[t, 8 + t: 24 + t, 10 + t: 30 + t] = 1
    write_davis_fixture(root, {"bear": labels})


def test_eval_smtc_reads_a_run_folder_built_from_an_imported_file(tmp_path: Path):
    imported = smtc_imported(zero_biases=True)  # zero biases: equal to none, so they can be left out
    imported.model_state = {k: v for k, v in imported.model_state.items() if k not in QKV_BIASES}
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
