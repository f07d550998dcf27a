"""Safe loading: no file the user names runs code when read, unless --trust_checkpoint says so; checkpoint
records are complete and of the expected kind; old checkpoints upgrade; .safetensors export round trip."""
from __future__ import annotations

import importlib.util
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import eval_slotfa
import eval_smtc
import eval_spot
import predict
import train_adaslot
import train_slot_attention
import train_slotfa
import train_spot
import train_spot_2
from ground.errors import UserError
from ground.safe_io import numpy_array_globals, read_torch_file
from models import check_model_record
from models.slot_attention_ae import SlotAttentionAEConfig
from tests.test_eval_smtc import davis_fixture
from tests.test_predict import TINY as SPOT_TINY
from tests.test_predict import train_run
from tests.test_train_slotfa import TINY as SLOTFA_TINY
from utils.checkpoint import FORMAT_VERSION, load_checkpoint, upgrade_checkpoint
from utils.train import capture_rng, restore_rng

REPO = Path(__file__).resolve().parents[1]
OLD_RUN = REPO / "tests" / "fixtures" / "old_format" / "slot_attention_v1"
EVAL = ["--val_samples", "4", "--num_workers", "0", "--no_progress"]


def script(name: str) -> Any:
    """A module of scripts/ (not a package), imported by path."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class Payload:
    """Unpickling this runs code: it creates ``marker`` (and leaves None in its place)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def crafted(path: Path, marker: Path, base: dict[str, Any]) -> Path:
    """``base`` (a real checkpoint) plus an entry whose unpickling creates ``marker``."""
    torch.save({**base, "note": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("safe")
    run = train_run("slot_attention", root / "logs")
    images = root / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / "a.png")
    davis_fixture(root / "DAVIS")
    for split in ("train", "val"):  # a labelled class-folder set for eval_slotfa probe
        (root / "classes" / split / "c0").mkdir(parents=True)
        shutil.copy(images / "a.png", root / "classes" / split / "c0" / "a.png")
    return {"root": root, "run": run, "images": images, "state": read_torch_file(run / "checkpoint.pt.tar")}


# --- every entry point refuses the crafted file, and reads it with --trust_checkpoint -------------------
def _resume(w: dict, path: Path, out: Path, trust: list[str]) -> Any:
    folder = out / "run"
    shutil.copytree(w["run"], folder)
    shutil.copy(path, folder / "checkpoint.pt.tar")
    return train_slot_attention.main(["--resume", str(folder), *trust])


ENTRY_POINTS: dict[str, Callable[[dict, Path, Path, list[str]], Any]] = {
    "eval_spot": lambda w, p, out, t: eval_spot.main(["--checkpoint_path", str(p), *EVAL, "--log_path", str(out), *t]),
    "predict": lambda w, p, out, t: predict.main(["--checkpoint", str(p), "--input", str(w["images"]),
                                                  "--output", str(out / "pred"), "--no_progress", *t]),
    "resume": _resume,
    "teacher": lambda w, p, out, t: train_spot_2.main([*SPOT_TINY, "--teacher_checkpoint_path", str(p),
                                                       "--log_path", str(out), *t]),
    "warmstart": lambda w, p, out, t: train_adaslot.main([
        "--dataset", "shapes", "--encoder", "vit_micro_p8", "--no_pretrained", "--resize_to", "32", "32",
        "--use_adaptive_slot_attention", "--warmstart_checkpoint", str(p), "--log_path", str(out), *t]),
    "encoder_weights": lambda w, p, out, t: train_spot.main([*SPOT_TINY, "--encoder_weights", str(p),
                                                             "--log_path", str(out), *t]),
    "eval_smtc": lambda w, p, out, t: eval_smtc.main(["--task", "propagation", "--davis_path", str(w["root"] / "DAVIS"),
                                                      "--checkpoint_path", str(p), "--output_dir", str(out), *t]),
    "eval_slotfa": lambda w, p, out, t: eval_slotfa.main([
        "probe", "--checkpoint", str(p), "--train-dir", str(w["root"] / "classes" / "train"),
        "--val-dir", str(w["root"] / "classes" / "val"), *t]),
    "slotfa_pretrained_weights": lambda w, p, out, t: train_slotfa.main([
        *SLOTFA_TINY, "--epochs", "1", "--pretrained_weights", str(p), "--output-dir", str(out), *t]),
    "export_weights": lambda w, p, out, t: script("export_weights").main([str(p), "--out", str(out / "w.safetensors"),
                                                                          *t]),
    "convert_to_detectron2": lambda w, p, out, t: script("convert_to_detectron2").main([str(p), str(out / "d2.pkl"),
                                                                                        *t]),
    "export_torchvision": lambda w, p, out, t: script("export_torchvision").main([str(p), str(out / "tv.pth"), *t]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_crafted_pickle_is_refused_and_never_runs(world, tmp_path: Path, capsys, entry: str) -> None:
    marker = tmp_path / "payload_ran"
    evil = crafted(tmp_path / "evil.pt.tar", marker, world["state"])
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError) as err:
        ENTRY_POINTS[entry](world, evil, tmp_path / "out", [])
    message = str(err.value)
    assert "\n" not in message and "builtins.exec" in message and "--trust_checkpoint" in message, message
    assert not marker.exists()


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_trust_checkpoint_reads_the_file_with_a_warning(world, tmp_path: Path, capsys, entry: str) -> None:
    """Opted in, the file is unpickled (the payload runs: the flag is not ignored) and the entry point gets
    past loading: it either works (the file holds a slot_attention checkpoint) or names the wrong kind."""
    marker = tmp_path / "payload_ran"
    evil = crafted(tmp_path / "evil.pt.tar", marker, world["state"])
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    try:
        ENTRY_POINTS[entry](world, evil, tmp_path / "out", ["--trust_checkpoint"])
    except UserError as err:
        assert "unpickl" not in str(err) and "\n" not in str(err), err
    assert marker.exists()
    assert "warning: --trust_checkpoint: fully unpickling" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter importing torch: about 10 s on a small machine
def test_command_line_refusal_is_one_line(world, tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    evil = crafted(tmp_path / "evil.pt.tar", marker, world["state"])
    result = subprocess.run([sys.executable, "eval_spot.py", "--checkpoint_path", str(evil), *EVAL], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "builtins.exec" in lines[0], result.stderr
    assert not marker.exists()


def test_plain_pickle_is_refused_and_garbage_is_unreadable(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    with open(tmp_path / "plain.pkl", "wb") as f:  # not torch.save: the legacy pickle path
        pickle.dump({"model": Payload(marker)}, f, protocol=4)
    with pytest.raises(UserError, match=r"pickles builtins\.exec.*--trust_checkpoint"):
        read_torch_file(tmp_path / "plain.pkl")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk")
    with pytest.raises(UserError, match="unreadable or truncated"):
        read_torch_file(tmp_path / "junk.pt")
    assert not marker.exists()


def test_trust_is_never_taken_from_a_resumed_runs_flags(world, tmp_path: Path) -> None:
    """--trust_checkpoint holds for one invocation: a resumed run's args.yaml cannot switch it on."""
    marker = tmp_path / "payload_ran"
    folder = tmp_path / "run"
    shutil.copytree(world["run"], folder)
    crafted(folder / "checkpoint.pt.tar", marker, world["state"])
    args = yaml.safe_load((folder / "args.yaml").read_text())
    (folder / "args.yaml").write_text(yaml.safe_dump({**args, "trust_checkpoint": True}))
    with pytest.raises(UserError, match="--trust_checkpoint"):
        train_slot_attention.main(["--resume", str(folder)])
    assert not marker.exists()


# --- records that cannot lie (issue: missing keys, unknown versions) --------------------------------
def _edited(world: dict, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    state = {**world["state"], "model_config": dict(world["state"]["model_config"])}
    edit(state)
    torch.save(state, tmp_path / "edited.pt.tar")
    return tmp_path / "edited.pt.tar"


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["model_config"].pop("num_slots"), "model_config lacks num_slots"),
    (lambda s: s.pop("model_config"), "lacks model_config"),
    (lambda s: s.update(format_version=999), "format version 999, newer than this code reads (2)"),
    (lambda s: s.update(format_version="1"), "format_version '1'"),
    (lambda s: s.pop("format_version"), "lacks format_version"),
    (lambda s: s["model_config"].update(vocab_size=4), "do not fit a slot_attention model (vocab_size"),
    (lambda s: s.update(method="no_such_method"), "'no_such_method' checkpoint, which this version of the code cannot build"),
    (lambda s: s.update(model=[1, 2]), "'model' entry is not a state dict"),
], ids=["no-num_slots", "no-model_config", "version-999", "version-str", "no-version", "foreign-key", "method",
        "model-list"])
def test_incomplete_or_unknown_record_is_one_line(world, tmp_path: Path, edit, message: str) -> None:
    path = _edited(world, tmp_path, edit)
    for call in (lambda: eval_spot.main(["--checkpoint_path", str(path), *EVAL, "--log_path", str(tmp_path)]),
                 lambda: predict.main(["--checkpoint", str(path), "--input", str(world["images"]),
                                       "--output", str(tmp_path / "pred")])):
        with pytest.raises(UserError, match=re.escape(message)) as err:
            call()
        assert "\n" not in str(err.value)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "pred").exists()


def test_encoder_record_is_required_where_the_model_has_a_frozen_vit() -> None:
    from models.spot import SPOTConfig

    with pytest.raises(UserError, match="needs its encoder record"):
        check_model_record("spot", SPOTConfig().to_dict(), None)
    with pytest.raises(UserError, match="encoder record lacks final_norm"):
        check_model_record("spot", SPOTConfig().to_dict(), {"name": "vit_micro_p8", "pretrained": False,
                                                            "finetune_blocks_after": 100})
    check_model_record("slot_attention", SlotAttentionAEConfig().to_dict(), None)  # pixel model: no encoder


# --- kind checks ----------------------------------------------------------------------------------------
def test_files_of_another_kind_are_named(world, tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, tmp_path / "foreign.ckpt")
    with pytest.raises(UserError, match=r"neither a checkpoint written by this project's training scripts \(it holds "
                                        r"epoch, state_dict; expected format_version, method, model_config, model\) "
                                        r"nor a released checkpoint layout"):
        eval_spot.main(["--checkpoint_path", str(tmp_path / "foreign.ckpt"), *EVAL])
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    with pytest.raises(UserError, match="holds a Tensor, not a checkpoint"):
        predict.main(["--checkpoint", str(tmp_path / "tensor.pt"), "--input", str(world["images"]),
                      "--output", str(tmp_path / "p")])
    with pytest.raises(UserError, match="is a slot_attention checkpoint; this needs a slotcon or slotfa checkpoint"):
        eval_slotfa.main(["probe", "--checkpoint", str(world["run"]), "--train-dir", "x", "--val-dir", "y"])
    with pytest.raises(UserError, match="is a slot_attention checkpoint; this needs a smtc checkpoint"):
        eval_smtc.main(["--task", "propagation", "--davis_path", str(world["root"] / "DAVIS"),
                        "--checkpoint_path", str(world["run"])])
    from dataclasses import asdict

    from models.smtc import SMTCConfig

    encoder = {"name": "vit_micro_p8", "pretrained": False, "finetune_blocks_after": 0, "final_norm": False}
    torch.save({"format_version": 2, "method": "smtc", "model_config": asdict(SMTCConfig()), "encoder": encoder,
                "model": {}}, tmp_path / "smtc.pt.tar")
    with pytest.raises(UserError, match="is a smtc checkpoint of a video model; evaluate it with eval_smtc.py"):
        eval_spot.main(["--checkpoint_path", str(tmp_path / "smtc.pt.tar"), *EVAL])
    with pytest.raises(UserError, match="is a smtc checkpoint of a video model; predict.py renders image models"):
        predict.main(["--checkpoint", str(tmp_path / "smtc.pt.tar"), "--input", str(world["images"]),
                      "--output", str(tmp_path / "p")])
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(UserError, match="bare weights without this project's checkpoint record"):
        eval_spot.main(["--checkpoint_path", str(tmp_path / "bare.safetensors"), *EVAL])
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(UserError, match="not a readable .safetensors file"):
        eval_spot.main(["--checkpoint_path", str(tmp_path / "broken.safetensors"), *EVAL])


# --- the project's own checkpoints, old and new ---------------------------------------------------------
def test_new_checkpoints_load_with_weights_only_and_nothing_else(world) -> None:
    state = torch.load(world["run"] / "checkpoint.pt.tar", weights_only=True)  # no allow-list at all
    assert state["format_version"] == FORMAT_VERSION == 2
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor) and isinstance(state["args"], dict)


def test_rng_states_round_trip_as_plain_values() -> None:
    np.random.seed(5)
    np.random.rand(3)
    saved = capture_rng()
    expected = np.random.rand(4)
    np.random.seed(0)
    restore_rng(saved)
    np.testing.assert_array_equal(np.random.rand(4), expected)


def test_old_format_checkpoint_is_upgraded_and_resumes(tmp_path: Path) -> None:
    """A checkpoint written by the code before format 2 (numpy RNG state as an array) is read with
    numpy arrays allowed, nothing more, and upgraded; eval and resume work from it."""
    old_file = OLD_RUN / "checkpoint.pt.tar"
    with pytest.raises(pickle.UnpicklingError):  # the fixture is of the old kind
        torch.load(old_file, weights_only=True)
    raw = read_torch_file(old_file, allow=numpy_array_globals())
    assert raw["format_version"] == 1 and isinstance(raw["rng"]["numpy"][1], np.ndarray)
    state = load_checkpoint(OLD_RUN)
    assert state["format_version"] == 2
    np.testing.assert_array_equal(state["rng"]["numpy"]["keys"].numpy().astype(np.uint32), raw["rng"]["numpy"][1])
    assert state["rng"]["numpy"]["pos"] == raw["rng"]["numpy"][2]
    restore_rng(state["rng_per_rank"][0])  # the upgraded state is usable as is
    np.random.set_state(raw["rng"]["numpy"])
    expected = np.random.rand(2)
    restore_rng(state["rng"])
    np.testing.assert_array_equal(np.random.rand(2), expected)

    record = eval_spot.main(["--checkpoint_path", str(OLD_RUN), *EVAL, "--log_path", str(tmp_path / "eval")])
    assert record["method"] == "slot_attention" and record["step"] == 2
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    train_slot_attention.main(["--resume", str(run), "--epochs", "2"])
    resumed = torch.load(run / "checkpoint.pt.tar", weights_only=True)
    assert resumed["step"] == 4 and resumed["format_version"] == 2


def test_upgrade_is_explicit_per_version() -> None:
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)}
    old = {"format_version": 1, "rng": rng, "rng_per_rank": [rng, rng], "method": "slot_attention"}
    new = upgrade_checkpoint(old)
    assert new["format_version"] == 2 and old["format_version"] == 1  # the input is not changed
    assert all(isinstance(r["numpy"]["keys"], torch.Tensor) for r in [new["rng"], *new["rng_per_rank"]])
    again = upgrade_checkpoint(new)  # already current: nothing to do
    assert again["rng"] is new["rng"] and again["rng_per_rank"] is new["rng_per_rank"]


# --- .safetensors export --------------------------------------------------------------------------------
def test_export_then_evaluate_gives_the_same_metrics(world, tmp_path: Path) -> None:
    out = script("export_weights").main([str(world["run"]), "--out", str(tmp_path / "model.safetensors")])
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert set(f.keys()) == set(world["state"]["model"])
        assert '"method": "slot_attention"' in f.metadata()["checkpoint_record"]
    a = eval_spot.main(["--checkpoint_path", str(world["run"]), *EVAL, "--log_path", str(tmp_path / "a")])
    b = eval_spot.main(["--checkpoint_path", str(out), *EVAL, "--log_path", str(tmp_path / "b")])
    assert {k: v for k, v in a.items() if k != "checkpoint"} == {k: v for k, v in b.items() if k != "checkpoint"}
    result = predict.main(["--checkpoint", str(out), "--input", str(world["images"]), "--output",
                           str(tmp_path / "pred"), "--no_progress"])
    assert [p.name for p in result["written"]] == ["a"]
    with pytest.raises(UserError, match="holds model weights only .* can be evaluated but not resumed"):
        load_checkpoint(out, training=True)
    with pytest.raises(UserError, match="must end in .safetensors"):
        script("export_weights").main([str(world["run"]), "--out", str(tmp_path / "model.pt")])


def test_exported_teacher_is_the_same_teacher(tmp_path: Path) -> None:
    teacher_run = train_run("spot", tmp_path / "teacher")
    exported = script("export_weights").main([str(teacher_run), "--out", str(tmp_path / "teacher.safetensors")])
    parser = train_spot_2.build_parser()
    records = []
    for source in (teacher_run, exported):
        args = parser.parse_args([*SPOT_TINY, "--dec_type", "transformer", "--num_dec_blocks", "1", "--num_heads", "2",
                                  "--teacher_checkpoint_path", str(source)])
        teacher, spec, record = train_spot_2.teacher_from(args)
        records.append((record["fingerprint"], {k: v.clone() for k, v in teacher.state_dict().items()}))
    assert records[0][0] == records[1][0]
    for key, value in records[0][1].items():
        torch.testing.assert_close(records[1][1][key], value, rtol=0, atol=0)


def test_resnet_weights_may_be_safetensors(tmp_path: Path) -> None:
    """--pretrained_weights (SlotCon/SlotFA) reads .safetensors as well as torch files."""
    from safetensors.torch import save_file

    from models.resnet import ResNet, load_torchvision_weights

    source, target = ResNet("tiny_resnet50"), ResNet("tiny_resnet50")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "r.safetensors"))
    load_torchvision_weights(target, tmp_path / "r.safetensors")
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
