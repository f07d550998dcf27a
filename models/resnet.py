"""ResNet backbones with torchvision's module names, plus transfer exports (detectron2, torchvision).

The module names (``conv1``, ``bn1``, ``layer1.0.conv3``, ``layer1.0.downsample.1`` ...) equal
torchvision's, so a ``resnet50`` here loads torchvision weights (minus ``fc``) and its state dict
exports to torchvision or detectron2 by key renaming only. ``base_width`` shrinks every stage for
tests (``tiny_resnet50``: the ResNet-50 bottleneck layout at width 8, one block per stage).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ground.errors import UserError
from ground.safe_io import numpy_array_globals, read_torch_file

# name -> (block type, blocks per stage, base width)
ARCHS: dict[str, tuple[str, tuple[int, int, int, int], int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 64),
    "resnet34": ("basic", (3, 4, 6, 3), 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 64),
    "tiny_resnet50": ("bottleneck", (1, 1, 1, 1), 8),  # tests and quick CPU runs
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv (detectron2 STRIDE_IN_1X1=False)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet trunk without pooling/fc: returns the stride-32 C5 map [B, out_channels, H/32, W/32]."""

    def __init__(self, arch: str = "resnet50") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise UserError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHS)}")
        kind, layers, width = ARCHS[arch]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.out_channels = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # std sqrt(2/fan_out)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Each residual branch starts as zero, so every block starts as the identity.
        for m in self.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_torchvision_weights(model: ResNet, path: str | Path, trust: bool = False) -> None:
    """Load a torchvision ResNet state dict (``fc.*`` dropped, ``.safetensors`` too) strictly into ``model``.

    Read without running code stored in the file (``trust``: the user's ``--trust_checkpoint``).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--pretrained_weights {path} not found; pass a torchvision ResNet state-dict file")
    state = read_torch_file(path, trust=trust, what="--pretrained_weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict; pass a torchvision ResNet state-dict file")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise UserError(f"{path} does not match --arch (missing {sorted(missing)[:3]}, unexpected "
                        f"{sorted(unexpected)[:3]}); pass weights of the same torchvision architecture")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path} has tensors of other shapes than --arch; pass weights of the same architecture") from err


# --- transfer exports ------------------------------------------------------------------------------
TEACHER_PREFIX = "encoder_k."


def teacher_backbone(model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The teacher (momentum) encoder's weights with torchvision names, from a SlotCon/SlotFA state dict.

    Accepts our checkpoints (``encoder_k.*``) and upstream DDP ones (``module.encoder_k.*``);
    student, projector and prototype entries are dropped.
    """
    out = {}
    for key, value in model_state.items():
        key = key.removeprefix("module.")
        if key.startswith(TEACHER_PREFIX):
            out[key[len(TEACHER_PREFIX):]] = value
    if not out:
        raise UserError("the checkpoint holds no teacher encoder (encoder_k.*); pass a SlotCon/SlotFA checkpoint")
    return out


def detectron2_key(key: str) -> str:
    """Rename one torchvision ResNet key to detectron2's (detectron2's conversion rules, in their order)."""
    if "layer" not in key:
        key = "stem." + key
    for i in range(4):
        key = key.replace(f"layer{i + 1}", f"res{i + 2}")
    for i in range(3):
        key = key.replace(f"bn{i + 1}", f"conv{i + 1}.norm")
    key = key.replace("downsample.0", "shortcut")
    key = key.replace("downsample.1", "shortcut.norm")
    return key


def to_detectron2(backbone: dict[str, torch.Tensor]) -> dict:
    """The pickle payload detectron2's checkpointer reads (numpy arrays, matching heuristics on)."""
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in backbone.items()}
    return {"model": model, "__author__": "slotfa", "matching_heuristics": True}


def to_torchvision(backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision-style state dict (no ``fc``): already the right names, detached and on CPU."""
    bad = [k for k in backbone if not re.match(r"^(conv1|bn1|layer[1-4])\.", k)]
    if bad:
        raise UserError(f"unexpected backbone key {bad[0]!r}; the checkpoint is not a ResNet SlotCon/SlotFA one")
    return {k: v.detach().cpu().clone() for k, v in backbone.items()}



def load_pretrain_state(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict of a SlotCon/SlotFA checkpoint: ours (file or run folder) or upstream's.

    Read without running code stored in the file: upstream checkpoints pickle an
    ``argparse.Namespace``, which the safe reader allows; anything more needs ``trust`` (the
    user's ``--trust_checkpoint``).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt.tar"
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; pass a ckpt_epoch_*.pth, checkpoint.pt.tar or run folder")
    if path.suffix == ".safetensors":  # scripts/export_weights.py: the model's tensors themselves
        return read_torch_file(path, what="checkpoint")
    # Format-1 project checkpoints also hold numpy's RNG state (a plain array); see utils/checkpoint.py.
    checkpoint = read_torch_file(path, trust=trust, what="checkpoint", allow=numpy_array_globals())
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = f"a dict of {', '.join(sorted(map(str, checkpoint))[:4])}" if isinstance(checkpoint, dict) \
            else f"a {type(checkpoint).__name__}"
        raise UserError(f"{path} holds {found}, not a 'model' state dict; pass a SlotCon/SlotFA pretraining checkpoint")
    return checkpoint["model"]
