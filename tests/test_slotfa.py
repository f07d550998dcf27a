"""SlotCon / SlotFA: crop geometry, alignment, loss pieces, schedules, LARS, SlotFA's augmentation,
transfer exports and the command line on shapes (tiny ResNet, 64 px)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import datasets.two_view as two_view
import eval_slotfa
import train_slotfa
from datasets.two_view import intersection, overlap_fraction, sample_crop_pair, view_box
from models.resnet import (ResNet, detectron2_key, load_pretrain_state, load_torchvision_weights, teacher_backbone,
                           to_detectron2, to_torchvision)
from models.slotfa import (SlotCon, SlotConConfig, align_maps, contrastive_targets, momentum_at,
                           self_distillation, slot_contrastive_loss, slot_feature_augment, slot_presence,
                           updated_center)
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.lars import LARS
from utils.probe import knn_accuracy, linear_probe_accuracy, prototype_scores
from utils.schedules import WarmupCosineFrom

REPO = Path(__file__).resolve().parents[1]
TINY = ["--arch", "tiny_resnet50", "--image-size", "64", "--dim-hidden", "32", "--dim-out", "16",
        "--num-prototypes", "8", "--batch-size", "4", "--train-samples", "8", "--num-workers", "0",
        "--optimizer", "lars", "--warmup-epoch", "1", "--seed", "3", "--print-freq", "1"]


# --- two-crop geometry ---------------------------------------------------------------------------------
def test_intersection_boxes_and_flip() -> None:
    c1, c2 = (10, 20, 40, 50), (30, 40, 40, 40)  # (top, left, height, width)
    inter = intersection(c1, c2)
    assert inter == (40, 30, 70, 50)
    assert overlap_fraction(c1, c2) == pytest.approx(30 * 20 / (40 * 40))
    assert view_box(c1, inter, False).tolist() == pytest.approx([0.4, 0.5, 1.0, 1.0])
    assert view_box(c2, inter, False).tolist() == pytest.approx([0.0, 0.0, 0.75, 0.5])
    assert view_box(c2, inter, True).tolist() == pytest.approx([0.25, 0.0, 1.0, 0.5])  # mirrored in x
    # Disjoint crops give a zero-area box instead of an inverted one.
    empty = view_box((0, 0, 10, 10), intersection((0, 0, 10, 10), (50, 50, 10, 10)), False)
    assert empty[2] == empty[0] and empty[3] == empty[1]


def test_overlap_rule_retries_then_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first, far, near = (0, 0, 20, 20), (80, 80, 20, 20), (19, 19, 20, 20)  # near: 1 px / 400 px < 1%
    good = (10, 10, 20, 20)
    draws = iter([first, far, far, good, far])
    monkeypatch.setattr(two_view, "sample_crop", lambda *a: next(draws))
    assert sample_crop_pair(100, 100, (0.08, 1.0)) == (first, good)
    draws = iter([first] + [near] * 10 + [far])  # ten failures, then an unconstrained draw
    monkeypatch.setattr(two_view, "sample_crop", lambda *a: next(draws))
    assert sample_crop_pair(100, 100, (0.08, 1.0)) == (first, far)


def test_pretraining_image_layouts(tmp_path: Path) -> None:
    from datasets.image_folder import build_pretrain_images

    for rel in ("train2017/a.jpg", "train2017/b.jpg", "unlabeled2017/c.jpg", "train/n01/x.JPEG", "train/n02/y.JPEG",
                "train/n02/z.JPEG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 12)).save(tmp_path / rel, format="JPEG")
    assert len(build_pretrain_images("COCO", tmp_path, 32, None, 0)) == 2
    assert len(build_pretrain_images("COCOplus", tmp_path, 32, None, 0)) == 3
    imagenet = build_pretrain_images("ImageNet", tmp_path, 32, 2, 0)  # --train-samples 2
    assert len(imagenet) == 2 and imagenet[0].mode == "RGB" and imagenet[0].size == (20, 12)
    sample = two_view.TwoViewDataset(imagenet, image_size=16)[1]
    assert sample["view1"].shape == (3, 16, 16) and sample["box2"].shape == (4,) and sample["flip1"].dtype == torch.bool
    (tmp_path / "coco_only" / "train2017").mkdir(parents=True)
    with pytest.raises(UserError, match="unlabeled2017"):
        build_pretrain_images("COCOplus", tmp_path / "coco_only", 32, None, 0)
    with pytest.raises(UserError, match="no images"):
        build_pretrain_images("COCO", tmp_path / "coco_only", 32, None, 0)


def _linear_map(crop: tuple[int, int, int, int], size: int, flipped: bool) -> torch.Tensor:
    """A view's 'feature map' whose channels are the image x and y of each map pixel centre."""
    top, left, h, w = crop
    j = torch.arange(size, dtype=torch.float32)
    x = left + (j + 0.5) * w / size
    y = top + (j + 0.5) * h / size
    grid = torch.stack([x[None, :].expand(size, size), y[:, None].expand(size, size)])
    return grid.flip(-1) if flipped else grid


def test_align_maps_makes_two_views_match() -> None:
    c1, c2, size = (10, 20, 60, 64), (30, 40, 56, 48), 16
    inter = intersection(c1, c2)
    maps, boxes, flips = [], [], []
    for crop, flipped in ((c1, False), (c2, True)):
        maps.append(_linear_map(crop, size, flipped)[None])
        boxes.append(view_box(crop, inter, flipped)[None])
        flips.append(torch.tensor([flipped]))
    a1, a2 = (align_maps(m, b, f) for m, b, f in zip(maps, boxes, flips))
    # Bilinear sampling of a linear function is exact away from the border (clamped within half a pixel).
    assert torch.allclose(a1[..., 1:-1, 1:-1], a2[..., 1:-1, 1:-1], atol=1e-3)
    assert torch.allclose(a1, a2, atol=2.5)
    # Both cover the intersection: x from 40 to 84 (left to right, unflipped).
    assert a1[0, 0, 0, 0] < a1[0, 0, 0, -1] and 40 <= float(a1[0, 0].min()) and float(a1[0, 0].max()) <= 84
    # Forgetting to undo the flip would not match.
    assert not torch.allclose(a1, align_maps(maps[1], boxes[1], torch.tensor([False])), atol=2.5)


# --- loss pieces ----------------------------------------------------------------------------------------
def test_self_distillation_matches_per_pixel_formula() -> None:
    torch.manual_seed(0)
    s, t, center = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3), torch.randn(1, 5)
    expected = 0.0
    for b in range(2):
        for i in range(3):
            for j in range(3):
                target = torch.softmax((t[b, :, i, j] - center[0]) / 0.07, 0)
                expected += -(target * torch.log_softmax(s[b, :, i, j] / 0.1, 0)).sum()
    assert self_distillation(s, t, center, 0.1, 0.07).item() == pytest.approx(expected.item() / 18, rel=1e-5)


def test_center_ema_uses_both_views() -> None:
    v1, v2 = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    v1[:, 1] = 3.0
    new = updated_center(torch.full((1, 3), 2.0), [v1, v2], 0.9)
    assert new.shape == (1, 3)
    assert new[0].tolist() == pytest.approx([0.9 * 2 + 0.1 * 0.5, 0.9 * 2 + 0.1 * 1.5, 0.9 * 2 + 0.1 * 0.5])


def test_slot_presence_and_contrastive_labels() -> None:
    dots = torch.zeros(2, 4, 1, 2)
    dots[0, 1, 0, 0] = dots[0, 3, 0, 1] = 1  # image 0: prototypes 1 and 3 win a pixel
    dots[1, 2, 0, :] = 1  # image 1: prototype 2 wins both
    present = slot_presence(dots)
    assert present.tolist() == [[False, True, False, True], [False, False, True, False]]
    keys = present.clone()
    keys[1, 0] = True  # the teacher view also has prototype 0 in image 1
    queries = present & keys
    # Kept keys in order: (0,1), (0,3), (1,0), (1,2) -> the positive of query (1,2) is key 3.
    assert contrastive_targets(queries, keys.flatten(), 0).tolist() == [0, 1, 3]


def test_slot_contrastive_loss_hand_computation() -> None:
    torch.manual_seed(1)
    b, k, d = 2, 3, 4
    q_slots, k_slots = torch.randn(b, k, d), torch.randn(b, k, d)
    q_dots = torch.zeros(b, k, 1, 2)
    q_dots[:, 0, 0, 0] = q_dots[:, 1, 0, 1] = 1  # slots 0 and 1 present in every query view
    k_dots = torch.zeros(b, k, 1, 3)
    k_dots[:, 0, 0, 0] = k_dots[:, 1, 0, 1] = k_dots[:, 2, 0, 2] = 1  # all three present in the key view
    loss = slot_contrastive_loss(q_slots, k_slots, q_dots, k_dots, nn.Identity(), tau=0.2)
    keys = torch.nn.functional.normalize(k_slots.reshape(-1, d), dim=-1)
    queries = torch.nn.functional.normalize(q_slots[:, :2].reshape(-1, d), dim=-1)
    labels = torch.tensor([0, 1, 3, 4])
    expected = torch.nn.functional.cross_entropy(queries @ keys.t() / 0.2, labels) * 0.4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_momentum_and_lr_schedule_endpoints() -> None:
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    sched = WarmupCosineFrom(2.0, total_steps=100, warmup_steps=10, warmup_multiplier=100)
    assert sched(0) == pytest.approx(0.02)
    assert sched(5) == pytest.approx(0.02 + (2.0 - 0.02) / 2)
    assert sched(10) == pytest.approx(2.0)
    assert sched(100) == pytest.approx(1e-6)
    assert sched(55) == pytest.approx(1e-6 + 0.5 * (2.0 - 1e-6))


def test_lars_step_against_hand_computation() -> None:
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # |w| = 5
    b = nn.Parameter(torch.tensor([1.0, -1.0]))  # 1-D: no decay, no trust ratio
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5, 0.5])
    opt = LARS([w, b], lr=0.1, weight_decay=0.1, momentum=0.9, eta=0.001)
    opt.step()
    g = torch.tensor([[0.6 + 0.3, 0.8 + 0.4]])  # grad + wd * w
    update = g * (0.001 * 5.0 / g.norm())
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * update)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.05, -1.0 - 0.05]))
    w.grad, b.grad = torch.zeros(1, 2), torch.zeros(2)
    before = b.detach().clone()
    opt.step()  # momentum carries the previous update (b: mu = 0.9 * 0.5)
    assert torch.allclose(b.detach(), before - 0.1 * 0.45)


# --- SlotFA's slot-wise feature augmentation ---------------------------------------------------------
def test_feature_augment_vectorised_equals_loop() -> None:
    torch.manual_seed(2)
    x, assign = torch.randn(2, 6, 3, 4), torch.randint(0, 5, (2, 3, 4))
    alpha, beta = 1 + torch.randn(5, 6), torch.randn(5, 6)
    expected = torch.empty_like(x)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                a = int(assign[b, i, j])
                expected[b, :, i, j] = alpha[a] * x[b, :, i, j] + beta[a]
    assert torch.allclose(slot_feature_augment(x, assign, alpha, beta), expected)


def _tiny_model(method: str, **kw) -> SlotCon:
    config = SlotConConfig(method=method, arch="tiny_resnet50", dim_hidden=16, dim_out=8, num_prototypes=6,
                           total_steps=10, **kw)
    return SlotCon(config)


def _two_views(batch: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(4)
    box = torch.tensor([[0.2, 0.1, 0.9, 0.8]]).repeat(batch, 1)
    return {"view1": torch.randn(batch, 3, size, size), "view2": torch.randn(batch, 3, size, size),
            "box1": box, "box2": box, "flip1": torch.tensor([True, False] * (batch // 2)),
            "flip2": torch.zeros(batch, dtype=torch.bool)}


def test_slotfa_augmented_loss_trains_backbone_not_prototypes() -> None:
    model = _tiny_model("slotfa", group_loss_weight=0.0)  # the loss is L_group-aug alone
    out = model(_two_views())
    out["loss"].backward()
    assert model.grouping_q.slot_embed.weight.grad.abs().sum() == 0  # prototypes locked
    assert model.projector_q.mlp[0].weight.grad.abs().sum() > 0
    assert model.encoder_q.layer4[0].bn3.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.encoder_k.parameters())  # the teacher never gets gradients
    released = _tiny_model("slotfa", group_loss_weight=0.0, fa_grad="none")
    out = released(_two_views())
    out["loss"].backward()  # only 0 * L_group has a graph: L_group-aug is logged but gives no gradient
    assert out["losses"]["group_aug"] > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in released.parameters())


def test_slotcon_forward_updates_teacher_and_center() -> None:
    model = _tiny_model("slotcon")
    with torch.no_grad():
        model.encoder_q.conv1.weight.add_(1.0)  # student != teacher, so the EMA moves the teacher
    teacher_before = model.encoder_k.conv1.weight.clone()
    out = model(_two_views())
    assert set(out["losses"]) == {"group", "contrast", "teacher_momentum"}
    assert out["losses"]["teacher_momentum"].item() == pytest.approx(0.99)
    assert int(model.momentum_step) == 1 and model.center.abs().sum() > 0
    moved = model.encoder_k.conv1.weight - teacher_before
    assert torch.allclose(moved, 0.01 * torch.ones_like(moved), atol=1e-6)
    assert out["masks"]["prototypes"].shape == (4, 6, 2, 2)


# --- frozen-feature evaluation ------------------------------------------------------------------------
def test_probes_on_separable_features() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    y = torch.arange(3).repeat(20)
    x = centres[y] + 0.5 * torch.randn(60, 3, generator=g)
    assert knn_accuracy(x[:45], y[:45], x[45:], y[45:], k=5) == 100.0
    train_acc, test_acc = linear_probe_accuracy(x[:45], y[:45], x[45:], y[45:], epochs=100)
    assert train_acc == 100.0 and test_acc == 100.0
    flipped = (y[45:] + 1) % 3  # wrong labels score 0
    assert knn_accuracy(x[:45], y[:45], x[45:], flipped, k=5) == 0.0


def test_prototype_scores_average_over_claimed_pixels() -> None:
    dots = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]], [[0.0, 0.0]]]])  # [1, 3 prototypes, 1, 2]
    scores = prototype_scores(dots)[0]
    assert scores[0].item() == pytest.approx(0.9, abs=1e-5) and scores[1].item() == pytest.approx(0.8, abs=1e-5)
    assert scores[2].item() == pytest.approx(0.0, abs=1e-5)  # wins nothing: about its plain mean


# --- transfer -----------------------------------------------------------------------------------------------
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


# --- command line on shapes -------------------------------------------------------------------------------
def _run_dir(root: Path) -> Path:
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(runs) == 1
    return runs[0]


def test_cli_train_resume_and_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    train_slotfa.main([*TINY, "--method", "slotcon", "--epochs", "2", "--save-freq", "1", "--output-dir", str(out),
                       "--max-steps", "3"])
    run = _run_dir(out)
    assert load_checkpoint(run)["step"] == 3
    assert (run / "ckpt_epoch_1.pth").is_file() and not (run / "ckpt_epoch_2.pth").exists()
    with pytest.raises(UserError, match="--group_loss_weight"):  # settings cannot change on resume
        train_slotfa.main(["--resume", str(run), "--group-loss-weight", "0.3"])
    train_slotfa.main(["--output-dir", str(out), "--auto-resume", "--num-workers", "0"])
    ckpt = load_checkpoint(run)
    assert ckpt["step"] == 4 and int(ckpt["model"]["momentum_step"]) == 4
    assert ckpt["method"] == "slotcon" and ckpt["encoder"] is None
    assert (run / "ckpt_epoch_2.pth").is_file()

    d2, tv = tmp_path / "backbone.pkl", tmp_path / "backbone.pth"
    for script, target in (("convert_to_detectron2.py", d2), ("export_torchvision.py", tv)):
        subprocess.run([sys.executable, str(REPO / "scripts" / script), str(run / "ckpt_epoch_2.pth"), str(target)],
                       check=True, cwd=REPO)
    with open(d2, "rb") as f:
        payload = pickle.load(f)
    teacher = {k.removeprefix("encoder_k."): v for k, v in ckpt["model"].items() if k.startswith("encoder_k.")}
    assert set(payload["model"]) == {detectron2_key(k) for k in teacher}
    assert (payload["model"]["stem.conv1.weight"] == teacher["conv1.weight"].numpy()).all()
    backbone = ResNet("tiny_resnet50")
    backbone.load_state_dict(torch.load(tv, weights_only=True))  # strict by default

    # Evaluation without detectron2: probes on a labelled class-folder set, prototype pictures.
    for split, count in (("train", 6), ("val", 4)):
        for label, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = tmp_path / "labelled" / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                noise = np.random.default_rng(i + 10 * label).integers(0, 50, (40, 40, 3))
                Image.fromarray((noise + colour).clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    record = eval_slotfa.main(["probe", "--checkpoint", str(run), "--train-dir", str(tmp_path / "labelled" / "train"),
                               "--val-dir", str(tmp_path / "labelled" / "val"), "--k", "3", "--probe-epochs", "20"])
    assert 0 <= record["knn_top1"] <= 100 and 0 <= record["linear_top1"] <= 100 and record["classes"] == 2
    assert json.loads((run / "probe.json").read_text()) == record
    out_dir = eval_slotfa.main(["viz", "--checkpoint", str(run / "ckpt_epoch_2.pth"), "--num-images", "6", "--topk", "3",
                                "--idxs", "0", "5"])
    assert Image.open(out_dir / "slots.png").size == (2 * 66 + 2, 3 * 66 + 2)
    assert (out_dir / "prototype_0005.png").is_file()
    with pytest.raises(UserError, match="--idxs"):
        eval_slotfa.main(["viz", "--checkpoint", str(run), "--num-images", "4", "--idxs", "8"])


def test_cli_slotfa_and_bad_input(tmp_path: Path) -> None:
    train_slotfa.main([*TINY, "--method", "slotfa", "--epochs", "1", "--output-dir", str(tmp_path / "out"),
                       "--group_loss_weight", "1.0", "--max-steps", "2"])  # underscore spelling too
    run = _run_dir(tmp_path / "out")
    assert load_checkpoint(run)["model_config"]["method"] == "slotfa"
    with pytest.raises(UserError, match="train2017"):
        train_slotfa.main([*TINY, "--dataset", "COCO", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "x")])
    with pytest.raises(UserError, match="start-epoch"):
        train_slotfa.main([*TINY, "--start-epoch", "5", "--output-dir", str(tmp_path / "y")])


# --- the cross-rank pieces with a real 2-process gloo group (no trainer, no DDP wrapper) ------------------
def test_contrast_center_and_noise_across_two_ranks(tmp_path: Path) -> None:
    torch.manual_seed(5)
    q_slots, k_slots = torch.randn(4, 3, 4), torch.randn(4, 3, 4)
    q_dots, k_dots = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    torch.save((q_slots, k_slots, q_dots, k_dots), tmp_path / "inputs.pt")
    from tests.slotfa_two_ranks import two_rank_worker

    # fork: the children inherit the imported modules instead of importing torch again
    torch.multiprocessing.start_processes(two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                                          start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # Every query sees the keys of both ranks: the count-weighted mean equals the one-process loss.
    full = slot_contrastive_loss(q_slots, k_slots, q_dots, k_dots, nn.Identity())
    pooled = (r0["loss"] * r0["queries"] + r1["loss"] * r1["queries"]) / (r0["queries"] + r1["queries"])
    assert pooled.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(r0["center"], updated_center(torch.zeros(1, 3), [k_dots], 0.0), atol=1e-6)
    assert torch.equal(r0["center"], r1["center"])
    assert torch.equal(r0["alpha"], r1["alpha"]) and torch.equal(r0["beta"], r1["beta"])
