from pathlib import Path

import pytest
import torch
from torch import nn

from ground.errors import UserError
from ground.safe_io import read_torch_file
from ground.state_dict import load_model_state, model_state
from utils.checkpoint import load_checkpoint, save_checkpoint


class Encoder(nn.Module):
    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        self.is_pretrained = pretrained
        self.frozen = nn.Linear(3, 3).requires_grad_(False)
        self.tuned = nn.Linear(3, 3)


class Model(nn.Module):
    def __init__(self, pretrained: bool = True, width: int = 4) -> None:
        super().__init__()
        self.encoder = Encoder(pretrained)
        self.head = nn.Linear(3, width)


def test_pretrained_frozen_weights_are_not_stored_but_trainable_ones_are() -> None:
    keys = set(model_state(Model(pretrained=True)))
    assert keys == {"encoder.tuned.weight", "encoder.tuned.bias", "head.weight", "head.bias"}
    # A random encoder cannot be rebuilt from its name: everything is stored.
    assert {"encoder.frozen.weight", "encoder.frozen.bias"} <= set(model_state(Model(pretrained=False)))


def test_round_trip_and_mismatch_message(tmp_path: Path) -> None:
    source = Model()
    save_checkpoint(tmp_path / "c.pt.tar", {"method": "toy", "model": model_state(source)})
    state = read_torch_file(tmp_path / "c.pt.tar")["model"]  # a toy model: no registry record to check
    target = Model()
    load_model_state(target, state)
    torch.testing.assert_close(target.head.weight, source.head.weight)
    with pytest.raises(UserError, match=r"head.bias: checkpoint \(4,\) vs model \(5,\)"):
        load_model_state(Model(width=5), state)
    with pytest.raises(UserError, match="missing"):
        load_model_state(Model(pretrained=False), state)


def test_atomic_save_keeps_previous_file_on_failure(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "checkpoint.pt.tar"
    save_checkpoint(path, {"method": "toy", "model": {"w": torch.ones(1)}})
    before = path.read_bytes()

    def failing_save(obj, f) -> None:  # a crash (disk full, kill) half way through the write
        f.write(b"half a checkpoint")
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", failing_save)
        with pytest.raises(RuntimeError, match="boom"):
            save_checkpoint(path, {"method": "toy", "model": {}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt.tar"]


def test_only_plain_data_is_saved(tmp_path: Path) -> None:
    """Anything that would need unpickling is refused before the file is touched; paths and
    numpy scalars become plain values, so every checkpoint loads with weights_only=True."""
    import numpy as np

    path = tmp_path / "checkpoint.pt.tar"

    class Custom:
        pass

    with pytest.raises(TypeError, match=r"checkpoint\['args'\]\['x'\] is a .*Custom"):
        save_checkpoint(path, {"method": "toy", "model": {}, "args": {"x": Custom()}})
    assert not path.exists()
    save_checkpoint(path, {"method": "toy", "model": {"w": torch.ones(1)},
                           "args": {"log_path": tmp_path, "lr": np.float64(0.5), "sizes": (1, 2)}})
    state = torch.load(path, weights_only=True)  # no allow-list needed
    assert state["args"] == {"log_path": str(tmp_path), "lr": 0.5, "sizes": (1, 2)}
    assert type(state["args"]["lr"]) is float


def test_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="not a checkpoint written by this project"):
        load_checkpoint(tmp_path / "x.pt")


def test_format_1_records_gain_the_fields_added_since_with_their_old_behaviour() -> None:
    """upgrade_checkpoint fills models.FIELDS_ADDED_IN_FORMAT_2 into format-1 model configs; every
    filled record rebuilds its model, and values a record does hold are kept."""
    import dataclasses
    from dataclasses import fields

    from models import FIELDS_ADDED_IN_FORMAT_2, method_spec
    from utils.checkpoint import upgrade_checkpoint

    for method, added in FIELDS_ADDED_IN_FORMAT_2.items():
        config_cls = method_spec(method).config_cls
        assert set(added) <= {f.name for f in fields(config_cls)}, method
        full = dataclasses.asdict(config_cls())
        old = {k: v for k, v in full.items() if k not in added}
        state = upgrade_checkpoint({"format_version": 1, "method": method, "model_config": old, "model": {}})
        assert state["format_version"] == 2
        assert {k: state["model_config"][k] for k in added} == added
        config_cls(**state["model_config"])  # a complete record
        kept = upgrade_checkpoint({"format_version": 1, "method": method, "model_config": full, "model": {}})
        assert kept["model_config"] == full
