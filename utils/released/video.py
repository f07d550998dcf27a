"""Released SMTC, SlotCon and SlotFA checkpoints (see docs/released_models.md).

- SMTC (shvdiwnkozbw/SMTC ``train.py``): ``{iteration, model_state_dict, loss[, optimizer_state_dict]}``,
  the student's two-stage model with its fine-tuned ViT.
- SlotCon (CVMI-Lab/SlotCon) and SlotFA (chos1npc/SlotFA) full pretraining checkpoints:
  ``{args (argparse.Namespace), model (DDP: every key under ``module.``), epoch, ...}``. The two
  write the same layout, so a file is detected as SlotCon; ``--format slotfa`` reads it as SlotFA.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ground.errors import UserError
from utils.released import Imported, ReleasedFormat
from utils.released.common import KeyMap, all_start_with, as_plain, count_indexed, strip_prefix

# --- SMTC -----------------------------------------------------------------------------------------

# (width, depth, patch) of the ViT in a released SMTC file -> this project's encoder name.
SMTC_ENCODERS: dict[tuple[int, int, int], str] = {
    (384, 12, 16): "dino_vits16",
    (768, 12, 16): "dino_vitb16",
    (384, 12, 8): "dino_vits8",
    (768, 12, 8): "dino_vitb8",
    (48, 1, 16): "vit_w48_p16",  # the shrunk layout of the test fixture
}
# Kept when it has no counterpart: the draw of the colour-augmentation blur is not in the file.
SMTC_BLUR_SIGMA = 1.05  # the middle of the uniform(0.1, 2.0) range it is drawn from


def _smtc_state(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("model_state_dict"), dict):
        return None
    state = obj["model_state_dict"]
    if "slot_attention.slots_mu" in state and "transport_proj.weight" in state:
        return state
    return None


def _detect_smtc(obj: Any) -> bool:
    return _smtc_state(obj) is not None


# What the released model uses; the file stores neither (SMTC README: 16 slots, 4 instances).
SMTC_DEFAULTS: dict[str, int] = {"num_instances": 4, "num_iterations": 3}


def convert_smtc(obj: Any, **overrides: int) -> Imported:
    """Map SMTC's ``SlotAttentionAutoEncoder`` (student) onto :class:`models.smtc.SMTC`.

    The number of instances per slot and of iterations are not in the file: the released
    model's (:data:`SMTC_DEFAULTS`) unless ``overrides`` give others.

    The student's ViT is fine-tuned, so the file's ``encoder.*`` weights become the encoder
    weights of the run (``encoder_state``); the rest maps onto the student and is copied into
    the teacher (the file holds no teacher; evaluation uses the student only).
    """
    from models import build_encoder_from_spec, encoder_fingerprint
    from models.smtc import SMTC, SMTCConfig
    from ground.state_dict import model_state

    state = _smtc_state(obj)
    assert state is not None
    keys = KeyMap(state, "the SMTC checkpoint")
    encoder_state = {k[len("encoder."):]: keys.take(k).clone() for k in keys.keys_under("encoder.")}
    width = encoder_state["cls_token"].shape[-1]
    depth = count_indexed(encoder_state, "blocks.")
    patch = encoder_state["patch_embed.proj.weight"].shape[-1]
    name = SMTC_ENCODERS.get((width, depth, patch))
    if name is None:
        raise UserError(f"the SMTC checkpoint's ViT (width {width}, {depth} blocks, patch {patch}) is not one this "
                        f"project builds; known: {sorted(SMTC_ENCODERS)}")
    mu = keys.take("slot_attention.slots_mu")  # [1, S, 1, E]
    num_slots = mu.shape[1]
    anchors = keys.peek("transport_proj.weight").shape[1]
    grid = math.isqrt(anchors)
    if grid * grid != anchors:
        raise UserError(f"the SMTC checkpoint correlates {anchors} anchors, not a square grid; unsupported layout")
    unknown = set(overrides) - set(SMTC_DEFAULTS)
    if unknown:
        raise UserError(f"unknown SMTC settings {sorted(unknown)}; known: {', '.join(SMTC_DEFAULTS)}")
    settings = {**SMTC_DEFAULTS, **overrides}
    # The rest is SMTCConfig's defaults, which are the official code's (q/k/v biases, student
    # drop-path 0.1, trainable stem, instance draw without gradient).
    config = SMTCConfig(num_slots=num_slots, anchor_grid=grid, qkv_bias=True, **settings)

    student: dict[str, torch.Tensor] = {
        "correlation_proj.weight": keys.take("transport_proj.weight")[..., 0].clone(),  # Conv1d(k=1) == Linear
        "correlation_proj.bias": keys.take("transport_proj.bias").clone(),
        "slot_attention.init.embedding": mu.reshape(num_slots, -1).clone(),
        # Sampled as N(mu, exp(slots_sigma)) upstream: the parameter is a log standard deviation.
        "log_sigma": keys.take("slot_attention.slots_sigma").clone(),
    }
    for a, b in (("norm_input", "norm_inputs"), ("norm_slots", "norm_slots"), ("norm_pre_ff", "norm_mlp")):
        for p in ("weight", "bias"):
            student[f"slot_attention.{b}.{p}"] = keys.take(f"slot_attention.{a}.{p}").clone()
    for a, b in (("project_q", "to_q"), ("project_k", "to_k"), ("project_v", "to_v")):
        for p in ("weight", "bias"):
            student[f"slot_attention.{b}.{p}"] = keys.take(f"slot_attention.{a}.{p}").clone()
    for p in ("0.weight", "0.bias", "2.weight", "2.bias"):
        student[f"slot_attention.mlp.{p}"] = keys.take(f"slot_attention.mlp.{p}").clone()
        student[f"projector.{p}"] = keys.take(f"mlp_slot.{p}").clone()
    keys.finish()

    # Which encoder keys a run checkpoint stores (trainable blocks) is decided by the model itself.
    encoder_record = {"name": name, "pretrained": True, "weights_path": None, "finetune_blocks_after": 0,
                      "final_norm": False}
    probe_encoder = build_encoder_from_spec({**encoder_record, "pretrained": False})
    probe_encoder.is_pretrained = True  # as the real one will be (its weights come from a file)
    try:
        probe_encoder.vit.load_state_dict(encoder_state)
    except RuntimeError as err:
        raise UserError(f"the SMTC checkpoint's ViT does not fit {name}: {str(err).splitlines()[0]}") from None
    encoder_record["fingerprint"] = encoder_fingerprint(probe_encoder)
    model = SMTC(probe_encoder, config)
    out: dict[str, torch.Tensor] = {}
    for key in model_state(model):
        branch, _, rest = key.partition(".")
        if key == "blur_sigma":
            out[key] = torch.tensor(SMTC_BLUR_SIGMA)
        elif rest.startswith("encoder.vit."):
            out[key] = encoder_state[rest[len("encoder.vit."):]].clone()
        elif branch in ("student", "teacher") and rest in student:
            out[key] = student[rest].clone()
        else:
            raise UserError(f"no value for {key} in the SMTC checkpoint; unsupported layout")
    unused = sorted(set(student) - {key.partition(".")[2] for key in out})
    if unused:  # every mapped tensor must have its place in the model
        raise UserError(f"the SMTC checkpoint's {', '.join(unused)} have no counterpart in this project's SMTC; "
                        "unsupported layout")
    iteration = int(obj.get("iteration", 0) or 0)
    return Imported("smtc", "smtc", dict(vars(config)), out, encoder=encoder_record, encoder_state=encoder_state,
                    args={"num_frames": 4, "which_encoder": name, "step": iteration},
                    notes=[f"encoder {name} with the file's fine-tuned weights; the teacher is a copy of the student",
                           f"not stored in the file, assumed as released: {settings}",
                           f"saved at iteration {iteration}"])


# --- SlotCon / SlotFA -----------------------------------------------------------------------------


def _pretrain_state(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        return None
    state = obj["model"]
    if all_start_with(state, "module.") and "module.encoder_k.conv1.weight" in state and "module.grouping_k.slot_embed.weight" in state:
        return state
    return None


def _detect_pretrain(obj: Any) -> bool:
    return _pretrain_state(obj) is not None


def _convert_pretrain(obj: Any, method: str) -> Imported:
    from models.resnet import ResNet
    from models.slotfa import SlotConConfig

    state = strip_prefix(_pretrain_state(obj) or {}, "module.")
    args = as_plain(obj.get("args")) if obj.get("args") is not None else {}
    if not isinstance(args, dict):
        args = {}
    keys = KeyMap(state, f"the {method} checkpoint")
    arch = str(args.get("arch", "resnet50"))
    expected = ResNet(arch).state_dict()  # an unknown architecture is a one-line UserError
    slots = keys.peek("grouping_k.slot_embed.weight")
    hidden = keys.peek("projector_k.mlp.0.weight").shape[0]
    world = max(int(args.get("world_size", 1) or 1), 1)
    batch = max(int(args.get("batch_size", 1) or 1), 1)
    steps_per_epoch = int(int(args.get("num_instances", 0) or 0) / world / batch)
    epochs = int(args.get("epochs", 1) or 1)
    config = SlotConConfig(
        method=method, arch=arch, dim_hidden=hidden, dim_out=slots.shape[1], num_prototypes=slots.shape[0],
        teacher_momentum=float(args.get("teacher_momentum", 0.99)), teacher_temp=float(args.get("teacher_temp", 0.07)),
        student_temp=float(args.get("student_temp", 0.1)), center_momentum=float(args.get("center_momentum", 0.9)),
        group_loss_weight=float(args.get("group_loss_weight", 0.5)),
        total_steps=max(steps_per_epoch * epochs, 1),
        # Released SlotFA code: the augmentation loss carries no gradient (models/slotfa.py).
        **({"fa_grad": "none"} if method == "slotfa" else {}),
    )
    out: dict[str, torch.Tensor] = {}
    for branch in ("encoder_q", "encoder_k"):
        for name in expected:
            out[f"{branch}.{name}"] = keys.take(f"{branch}.{name}").clone()
    for branch in ("projector_q", "projector_k"):
        for name in keys.keys_under(f"{branch}."):
            out[name] = keys.take(name).clone()
    for branch in ("grouping_q", "grouping_k"):
        keys.put(f"{branch}.slot_embed.weight", f"{branch}.slot_embed.weight")
    out.update(keys.out)
    notes = []
    if method == "slotcon":
        for name in keys.keys_under("predictor_slot."):
            out[name] = keys.take(name).clone()
        notes.append("SlotCon and SlotFA files share one layout: pass --format slotfa for a SlotFA file")
    else:
        for name in keys.keys_under("predictor_slot."):
            keys.drop(name)  # the released SlotFA builds the slot predictor but never uses it
        notes.append("the unused slot predictor of the SlotFA file was dropped")
    out["center"] = keys.take("center").clone()
    epoch = int(obj.get("epoch", 0) or 0)
    out["momentum_step"] = torch.tensor(epoch * steps_per_epoch, dtype=torch.long)
    keys.finish()
    run_args = {k: args[k] for k in ("image_size", "arch", "dataset", "min_scale") if k in args}
    return Imported(method, method, config.to_dict(), out, args=run_args,
                    notes=[*notes, f"saved after epoch {epoch} of {epochs}"])


def convert_slotcon(obj: Any) -> Imported:
    """A SlotCon full checkpoint onto :class:`models.slotfa.SlotCon` (method ``slotcon``)."""
    return _convert_pretrain(obj, "slotcon")


def convert_slotfa(obj: Any) -> Imported:
    """A SlotFA full checkpoint onto :class:`models.slotfa.SlotCon` (method ``slotfa``)."""
    return _convert_pretrain(obj, "slotfa")


FORMATS: list[ReleasedFormat] = [
    ReleasedFormat("smtc", "SMTC two-stage model (shvdiwnkozbw/SMTC train.py, model_state_dict)", _detect_smtc, convert_smtc),
    ReleasedFormat("slotcon", "SlotCon full checkpoint (CVMI-Lab/SlotCon, module.encoder_q. ...)", _detect_pretrain,
                   convert_slotcon),
    ReleasedFormat("slotfa", "SlotFA full checkpoint (chos1npc/SlotFA; same layout as SlotCon: choose with --format)",
                   _detect_pretrain, convert_slotfa),
]
