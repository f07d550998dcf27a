"""ResNet with torchvision names, and the transfer exports (detectron2, torchvision)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ground.errors import UserError
from models.resnet import (ResNet, detectron2_key, load_pretrain_state, load_torchvision_weights, teacher_backbone,
                           to_detectron2, to_torchvision)


def test_detectron2_key_renames() -> None:
    cases = {
        "layer1.0.bn1.weight": "res2.0.conv1.norm.weight",
        "bn1.bias": "stem.conv1.norm.bias",
        "conv1.weight": "stem.conv1.weight",
        "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
        "layer3.0.downsample.1.running_mean": "res4.0.shortcut.norm.running_mean",
        "layer4.2.bn3.num_batches_tracked": "res5.2.conv3.norm.num_batches_tracked",
        "layer4.2.conv2.weight": "res5.2.conv2.weight",
        "layer3.1.bn2.running_var": "res4.1.conv2.norm.running_var",
    }
    for key, expected in cases.items():
        assert detectron2_key(key) == expected
    state = {f"module.encoder_k.{k}": torch.ones(1) for k in cases}
    state.update({"module.encoder_q.conv1.weight": torch.ones(1), "module.projector_k.mlp.0.weight": torch.ones(1),
                  "module.center": torch.ones(1)})
    payload = to_detectron2(teacher_backbone(state))
    assert set(payload["model"]) == set(cases.values())  # student and head entries dropped
    assert payload["matching_heuristics"] is True
    with pytest.raises(UserError):
        teacher_backbone({"encoder_q.conv1.weight": torch.ones(1)})


def test_resnet_names_match_torchvision(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    ours = ResNet("resnet18").state_dict()
    full = resnet18().state_dict()
    theirs = {k: v for k, v in full.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert set(to_torchvision(ours)) == set(theirs)
    torch.save(full, tmp_path / "r18.pth")  # --pretrained_weights: torchvision file, fc dropped, strict
    model = ResNet("resnet18")
    load_torchvision_weights(model, tmp_path / "r18.pth")
    assert torch.equal(model.layer3[1].conv2.weight, full["layer3.1.conv2.weight"])
    with pytest.raises(UserError, match="--arch"):
        load_torchvision_weights(ResNet("tiny_resnet50"), tmp_path / "r18.pth")


def test_upstream_checkpoint_with_namespace_converts(tmp_path: Path) -> None:
    import argparse

    state = {f"module.encoder_k.{k}": v for k, v in ResNet("tiny_resnet50").state_dict().items()}
    state["module.encoder_q.conv1.weight"] = torch.zeros(1)
    torch.save({"args": argparse.Namespace(arch="resnet50"), "model": state, "epoch": 800}, tmp_path / "up.pth")
    backbone = teacher_backbone(load_pretrain_state(tmp_path / "up.pth"))  # needs weights_only=False
    ResNet("tiny_resnet50").load_state_dict(to_torchvision(backbone))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        load_pretrain_state(tmp_path / "junk.pth")
