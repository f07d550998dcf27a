"""SPOT stage 2: matching and distillation loss, gradients, teacher checks, CLI pipeline, resume."""
from __future__ import annotations

import copy
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import eval_spot
import train_spot
import train_spot_2
from ground.errors import UserError
from models.encoders import FrozenViT
from models.spot import SPOT, SPOTConfig
from models.spot_self_training import (
    SelfTrainingSPOT,
    cosine_weight,
    distillation_loss,
    match_student_to_teacher,
)
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_tiny_p4", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "16", "--num_dec_blocks", "1",
    "--num_heads", "2", "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16",
    "--val_samples", "8", "--num_workers", "0", "--lr_warmup_steps", "4",
]
STAGE_2 = ["--finetune_blocks_after", "1"]  # vit_tiny_p4 has 2 blocks


# --- matching and loss -----------------------------------------------------------------------
def test_matching_undoes_a_permutation_with_an_empty_teacher_slot() -> None:
    teacher = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])  # teacher slot 3 is empty
    sigma = torch.tensor([2, 0, 3, 1])  # teacher slot k is student slot sigma[k]
    student = sigma[teacher]
    assert match_student_to_teacher(teacher, student, 4).tolist() == [sigma.tolist()]


def test_matching_prefers_overlap_and_ignores_empty_teacher_slots() -> None:
    # Teacher slot 0 overlaps student 2 (IoU 3/5) more than student 1 (IoU 1/4); teacher
    # slot 1 then takes student 1 (IoU 3/5); empty teacher slot 2 takes the leftover student 0.
    teacher = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    student = torch.tensor([[1, 2, 2, 2, 2, 1, 1, 0]])
    assert match_student_to_teacher(teacher, student, 3).tolist() == [[2, 1, 0]]
    # A batch is matched image by image.
    both = match_student_to_teacher(torch.cat([teacher, teacher]), torch.cat([student, teacher]), 3)
    assert both.tolist() == [[2, 1, 0], [0, 1, 2]]


def test_distillation_loss_matches_before_cross_entropy() -> None:
    b, n, k = 2, 6, 3
    teacher_labels = torch.tensor([[0, 0, 1, 1, 2, 2], [2, 2, 2, 0, 0, 0]])
    teacher_masks = F.one_hot(teacher_labels, k).permute(0, 2, 1).float()  # [B, K, N]
    sigma = torch.tensor([[1, 2, 0], [2, 0, 1]])  # per image: teacher slot -> student slot
    student_labels = torch.gather(sigma, 1, teacher_labels)
    logits = (10 * F.one_hot(student_labels, k).float()).requires_grad_()  # [B, N, K], confident
    masks = logits.detach().softmax(-1).permute(0, 2, 1)
    ce, matching = distillation_loss(logits, masks, teacher_masks)
    assert matching.tolist() == sigma.tolist()
    expected = F.cross_entropy(torch.tensor([10.0, 0.0, 0.0]).unsqueeze(0), torch.tensor([0]))
    torch.testing.assert_close(ce, expected)
    # Without the matching the same logits would be confidently wrong.
    unmatched = F.cross_entropy(logits.reshape(b * n, k), teacher_labels.reshape(-1))
    assert unmatched > 5 * ce
    ce.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_cosine_ce_weight() -> None:
    assert cosine_weight(0.01, 0.001, 0, 100) == pytest.approx(0.01)
    assert cosine_weight(0.01, 0.001, 50, 100) == pytest.approx(0.0055)
    assert cosine_weight(0.01, 0.001, 99, 100) == pytest.approx(0.001, abs=1e-5)
    assert cosine_weight(0.01, 0.001, 500, 100) == cosine_weight(0.01, 0.001, 99, 100)


# --- the model -------------------------------------------------------------------------------
def make_student(share: bool = True, **overrides) -> tuple[SelfTrainingSPOT, SPOT]:
    torch.manual_seed(0)
    frozen = FrozenViT("vit_tiny_p4", pretrained=False)
    base = dict(image_size=16, num_slots=3, slot_size=16, mlp_hidden_size=16, num_dec_blocks=1, num_heads=2)
    teacher = SPOT(frozen, SPOTConfig(**base, eval_permutations="random")).eval()
    encoder = copy.deepcopy(frozen)
    encoder.set_finetune_blocks_after(1)
    config = SPOTConfig(**base, truncate="bi-level", init_method="embedding", use_second_encoder=True)
    student = SelfTrainingSPOT(encoder, config, teacher, share_frozen_forward=share, **overrides)
    return student.train(), teacher


def test_gradient_reaches_exactly_the_trainable_parameters() -> None:
    student, teacher = make_student()
    assert not any(p.requires_grad for p in teacher.parameters())
    assert student.target_encoder is teacher.encoder  # one frozen encoder for both
    assert not any(n.startswith("teacher") for n in student.state_dict())
    out = student({"image": torch.rand(1, 3, 16, 16), "step": 0, "total_steps": 10})  # batch size 1
    assert out["losses"]["ce"] > 0
    out["loss"].backward()
    for name, param in student.named_parameters():
        trainable = not name.startswith(("encoder.", "target_encoder.")) or name.startswith("encoder.vit.blocks.1.")
        assert param.requires_grad == trainable, name
        assert (param.grad is not None) == trainable, name
    assert all(p.grad is None for p in teacher.parameters())
    # Bi-level truncation: the straight-through term carries gradient to the slot embeddings.
    assert student.slot_attention.init.embedding.grad.abs().sum() > 0


def test_cross_entropy_alone_trains_the_slot_path_and_encoder() -> None:
    student, _ = make_student()
    out = student({"image": torch.rand(2, 3, 16, 16)})
    ce, _ = distillation_loss(out["attn_logits"], out["masks"]["slots"], out["teacher_masks"])
    torch.testing.assert_close(ce.detach(), out["losses"]["ce"])
    ce.backward()
    block = student.encoder.vit.blocks[1].attn.qkv.weight
    assert block.grad is not None and block.grad.abs().sum() > 0
    assert student.slot_attention.to_k.weight.grad.abs().sum() > 0
    # The CE reads slot-attention logits of the last iteration: the decoder gets nothing from it.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in student.decoder.parameters())


def test_shared_frozen_forward_gives_the_same_loss() -> None:
    images = torch.rand(2, 3, 16, 16)
    losses = []
    for share in (True, False):
        student, _ = make_student(share=share)
        torch.manual_seed(3)  # the teacher's random ordering
        losses.append(student({"image": images})["loss"])
    torch.testing.assert_close(losses[0], losses[1])


def test_eval_mode_is_the_plain_student() -> None:
    student, _ = make_student()
    student.eval()
    out = student({"image": torch.rand(2, 3, 16, 16)})
    assert "ce" not in out["losses"] and set(out["masks"]) == {"decoder", "slots"}
    assert not student.teacher.training  # the unregistered teacher never leaves eval mode
    student.train()
    assert not student.teacher.training


def test_distilling_ground_truth_masks_teaches_the_student_to_segment() -> None:
    """End to end through matching, gather and CE: a perfect teacher makes the student better.

    The teacher's masks are replaced by the scenes' ground-truth instance masks on the token
    grid; 100 CE-only steps raise the student's slot-attention mBO from 30.4 to 37.1 (measured,
    32-px scenes, ``vit_patch_p2``; about 11 CPU seconds). Measured with the logits not
    reordered by the matching: 27.4; reordered by the inverse matching: 17.5.
    """
    from datasets import build_dataset
    from metrics import SegmentationMetrics

    torch.manual_seed(0)
    frozen = FrozenViT("vit_patch_p2", pretrained=False)
    base = dict(image_size=32, num_slots=7, slot_size=64, mlp_hidden_size=128, num_dec_blocks=1, num_heads=4)
    teacher = SPOT(frozen, SPOTConfig(**base, eval_permutations="random"))
    config = SPOTConfig(**base, truncate="bi-level", init_method="embedding", use_second_encoder=True)
    student = SelfTrainingSPOT(copy.deepcopy(frozen), config, teacher)
    h, w = student.grid
    train = build_dataset("shapes", "train", 32, 32, None, 800, 0)
    val = build_dataset("shapes", "val", 32, 32, None, 64, 0)
    val_images = torch.stack([val[i]["image"] for i in range(64)])
    val_masks = torch.stack([val[i]["mask_instance"] for i in range(64)])

    def slot_mbo() -> float:
        student.eval()
        with torch.no_grad():
            masks = student({"image": val_images})["masks"]["slots"]
        student.train()
        labels = F.interpolate(masks, size=val_masks.shape[-2:], mode="bilinear").argmax(1)
        meter = SegmentationMetrics()
        meter.update(labels, val_masks, None, None)
        return meter.compute()["mbo_i"]

    before = slot_mbo()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    for step, batch in zip(range(100), loader):
        out = student({"image": batch["image"]})
        tokens = F.interpolate(batch["mask_instance"][:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        teacher_masks = F.one_hot(tokens.clamp_max(6), 7).permute(0, 3, 1, 2).float()  # at most 6 objects
        ce, _ = distillation_loss(out["attn_logits"], out["masks"]["slots"], teacher_masks)
        optimizer.zero_grad()
        ce.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 0.3, "inf")
        optimizer.step()
    after = slot_mbo()
    assert after > before + 3, (before, after)


def test_ce_weight_follows_the_trainer_step() -> None:
    student, _ = make_student(ce_weight=0.01, final_ce_weight=0.0)
    images = torch.rand(1, 3, 16, 16)
    start = student({"image": images, "step": 0, "total_steps": 4})["losses"]["ce_weight"]
    middle = student({"image": images, "step": 2, "total_steps": 4})["losses"]["ce_weight"]
    assert float(start) == pytest.approx(0.01) and float(middle) == pytest.approx(0.005)


# --- command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    """A tiny SPOT stage-1 teacher (9 orderings, shared-Gaussian slots)."""
    logs = tmp_path_factory.mktemp("teacher")
    train_spot.main([*TINY, "--epochs", "1", "--log_path", str(logs), "--train_permutations", "random"])
    return next(logs.iterdir())


def latest(folder: Path) -> Path:
    return sorted(p for p in folder.iterdir() if p.is_dir())[-1]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_pipeline_from_the_command_line(tmp_path: Path) -> None:
    result = run_script("train_spot.py", *TINY, "--epochs", "1", "--log_path", str(tmp_path / "s1"))
    assert result.returncode == 0, result.stderr
    teacher = latest(tmp_path / "s1") / "checkpoint.pt.tar"
    result = run_script("train_spot_2.py", *TINY, *STAGE_2, "--epochs", "1", "--log_path", str(tmp_path / "s2"),
                        "--teacher_checkpoint_path", str(teacher), "--final_ce_weight", "0.001")
    assert result.returncode == 0, result.stderr
    run = latest(tmp_path / "s2")
    ckpt = load_checkpoint(run)
    assert ckpt["method"] == "spot" and ckpt["teacher"]["checkpoint"] == str(teacher.resolve())
    assert ckpt["model_config"]["init_method"] == "embedding" and ckpt["model_config"]["truncate"] == "bi-level"
    assert ckpt["model_config"]["use_second_encoder"] and ckpt["encoder"]["finetune_blocks_after"] == 1
    result = run_script("eval_spot.py", "--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8",
                        "--num_workers", "0", "--num_slots", "3", "--eval_permutations", "all", "--no_progress")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval_permutations"] == "all" and 0 <= metrics["mbo_i"] <= 100


def readme_stage2_commands() -> list[list[str]]:
    """The stage-2 commands of the SPOT README (COCO, MOVi-C), as argument lists."""
    coco = ("--dataset coco --data_path /path/to/COCO2017 --epochs 50 --num_slots 7 --train_permutations random "
            "--eval_permutations standard --teacher_train_permutations random --teacher_eval_permutations random "
            "--teacher_checkpoint_path TEACHER --log_path LOGS")
    movi = ("--dataset movi --data_path /mnt/datalv/gkako/more_datasets/MOVi/c --epochs 65 --num_heads 6 --num_slots 11 "
            "--log_path LOGS --truncate bi-level --init_method embedding --ce_weight 0.005 --finetune_blocks_after 8 "
            "--train_permutations random --eval_permutations standard --teacher_train_permutations random "
            "--teacher_eval_permutations random --teacher_checkpoint_path TEACHER --seed 0 --clip 0.3 "
            "--val_mask_size 128 --lr_main 0.0002 --lr_min 0.00004 --predefined_movi_json_paths train_movi_paths.json")
    return [shlex.split(coco), shlex.split(movi)]


@pytest.mark.parametrize("index", [0, 1], ids=["coco", "movi-c"])
def test_readme_stage2_commands_run(tmp_path: Path, teacher_run: Path, index: int) -> None:
    command = readme_stage2_commands()[index]
    command = [str(teacher_run) if a == "TEACHER" else str(tmp_path) if a == "LOGS" else a for a in command]
    parsed = train_spot_2.build_parser().parse_args(command)  # every flag as written parses
    assert parsed.truncate == "bi-level" and parsed.init_method == "embedding" and parsed.finetune_blocks_after == 8
    # Run it on the tiny synthetic setting (later flags win; shapes needs no --data_path).
    at = command.index("--data_path")
    command = command[:at] + command[at + 2:]
    train_spot_2.main([*command, *TINY, *STAGE_2, "--val_mask_size", "16", "--epochs", "1", "--max_steps", "2"])
    assert load_checkpoint(latest(tmp_path))["step"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--teacher_train_permutations", "standard"], "--teacher_train_permutations standard does not match the teacher checkpoint (random)"),
        (["--teacher_init_method", "embedding"], "--teacher_init_method embedding does not match the teacher checkpoint (shared_gaussian)"),
        (["--num_slots", "4"], "--num_slots 4 does not match the teacher checkpoint (3)"),
        (["--which_encoder", "vit_micro_p8"], "--which_encoder vit_micro_p8 does not match the teacher checkpoint (vit_tiny_p4)"),
        (["--use_second_encoder", "False"], "drop --use_second_encoder False"),
    ],
    ids=["permutations", "init", "slots", "encoder", "second-encoder"],
)
def test_mismatched_teacher_is_refused_before_the_run_starts(tmp_path: Path, teacher_run: Path, flags, message) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train_spot_2.main([*TINY, *STAGE_2, "--epochs", "1", "--log_path", str(tmp_path / "logs"),
                           "--teacher_checkpoint_path", str(teacher_run), *flags])
    assert not (tmp_path / "logs").exists()


def test_bad_teacher_is_one_line_on_the_command_line(tmp_path: Path, teacher_run: Path) -> None:
    common = [*TINY, *STAGE_2, "--epochs", "1", "--log_path", str(tmp_path)]
    for flags, message in [
        ([], "--teacher_checkpoint_path is required"),
        (["--teacher_checkpoint_path", str(tmp_path / "nope.pt.tar")], "not found"),
    ]:
        with pytest.raises(UserError, match=message):
            train_spot_2.main([*common, *flags])
    result = run_script("train_spot_2.py", *common, "--teacher_checkpoint_path", str(teacher_run),
                        "--teacher_train_permutations", "standard", "--teacher_eval_permutations", "standard")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --teacher_train_permutations standard does not match"), result.stderr


def test_standard_teacher_needs_standard_teacher_orderings(tmp_path: Path) -> None:
    train_spot.main([*TINY, "--epochs", "1", "--max_steps", "1", "--log_path", str(tmp_path / "t"),
                     "--train_permutations", "standard"])
    common = [*TINY, *STAGE_2, "--epochs", "1", "--max_steps", "1", "--log_path", str(tmp_path / "s"),
              "--teacher_checkpoint_path", str(latest(tmp_path / "t")), "--teacher_train_permutations", "standard"]
    with pytest.raises(UserError, match="pass --teacher_eval_permutations standard"):
        train_spot_2.main(common)
    # SPOT without permutations (self-training only), docs/methods/spot.md.
    train_spot_2.main([*common, "--teacher_eval_permutations", "standard", "--train_permutations", "standard"])


def test_resume_matches_uninterrupted_run_and_checks_the_teacher(tmp_path: Path, teacher_run: Path) -> None:
    common = [*TINY, *STAGE_2, "--epochs", "2", "--teacher_checkpoint_path", str(teacher_run)]
    train_spot_2.main([*common, "--log_path", str(tmp_path / "full")])
    train_spot_2.main([*common, "--log_path", str(tmp_path / "part"), "--max_steps", "3"])
    full, part = latest(tmp_path / "full"), latest(tmp_path / "part")
    train_spot_2.main(["--resume", str(part)])
    a, b = load_checkpoint(full), load_checkpoint(part)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    # A different teacher behind the recorded path is refused on resume.
    changed = load_checkpoint(teacher_run)
    changed["model"] = {k: v * 2 if v.is_floating_point() else v for k, v in changed["model"].items()}
    saved = teacher_run / "checkpoint.pt.tar"
    original = saved.read_bytes()
    try:
        torch.save(changed, saved)
        with pytest.raises(UserError, match="not the one this run started with"):
            train_spot_2.main(["--resume", str(part), "--epochs", "3"])
    finally:
        saved.write_bytes(original)


def test_checkpoint_stores_trainable_blocks_not_the_frozen_encoder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    weights = tmp_path / "encoder.pth"
    torch.save(FrozenViT("vit_tiny_p4", pretrained=False).state_dict(), weights)
    local = [a for a in TINY if a != "--no_pretrained"] + ["--encoder_weights", str(weights)]
    train_spot.main([*local, "--epochs", "1", "--max_steps", "1", "--log_path", str(tmp_path / "t")])
    train_spot_2.main([*local, *STAGE_2, "--epochs", "1", "--log_path", str(tmp_path / "s"),
                       "--teacher_checkpoint_path", str(latest(tmp_path / "t"))])
    run = latest(tmp_path / "s")
    encoder_keys = {k for k in load_checkpoint(run)["model"] if "encoder." in k}
    assert encoder_keys and all(k.startswith("encoder.vit.blocks.1.") for k in encoder_keys)
    trained = json.loads((run / "metrics.json").read_text())  # the Trainer's last evaluation of the student
    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "8", "--num_workers", "0",
              "--no_progress"]
    # eval_spot.py rebuilds a plain SPOT model that scores exactly as the student did in training.
    record = eval_spot.main(common)
    for key in ("mse", "fg_ari", "mbo_i", "fg_ari_slots"):
        assert record[key] == pytest.approx(trained[key], rel=1e-5), key
    assert eval_spot.main([*common, "--eval_permutations", "all"])["eval_permutations"] == "all"


# 32-px scenes, 7 slots, the quickstart's random stand-in for DINO (vit_patch_p2: a frozen random projection of
# 2x2-pixel patches, no transformer block, so no block to fine-tune), 1024 steps per stage.
SLOW_RUN = ["--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_patch_p2", "--no_pretrained",
            "--num_slots", "7", "--slot_size", "64", "--mlp_hidden_size", "128", "--num_dec_blocks", "2",
            "--num_heads", "4", "--batch_size", "16", "--eval_batch_size", "64", "--train_samples", "2048",
            "--val_samples", "256", "--num_workers", "0", "--lr_main", "1e-3", "--lr_warmup_steps", "64",
            "--eval_every", "100", "--epochs", "8", "--seed", "0"]


def teacher_then_student(tmp_path: Path, permutations: str) -> dict[str, dict]:
    """Stage 1 then stage 2 (default --ce_weight), both scored by eval_spot.py on the same 256 scenes.

    ``permutations``: ``random`` (SPOT: nine orderings, scored with all of them) or ``standard``
    (raster order only: SPOT without permutations, self-training only; docs/methods/spot.md).
    """
    evaluate_with = "all" if permutations == "random" else "standard"
    orderings = ["--train_permutations", permutations]
    train_spot.main([*SLOW_RUN, *orderings, "--log_path", str(tmp_path / "teacher")])
    teacher = latest(tmp_path / "teacher")
    train_spot_2.main([*SLOW_RUN, *orderings, "--finetune_blocks_after", "0", "--teacher_train_permutations",
                       permutations, "--teacher_eval_permutations", permutations, "--log_path",
                       str(tmp_path / "student"), "--teacher_checkpoint_path", str(teacher)])
    student = latest(tmp_path / "student")
    scores = {}
    for name, run in [("teacher", teacher), ("student", student)]:
        scores[name] = eval_spot.main(["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "256",
                                       "--num_workers", "0", "--eval_permutations", evaluate_with, "--no_progress"])
    print({name: {k: round(v, 2) for k, v in s.items() if k in ("mbo_i", "mbo_i_slots", "fg_ari", "fg_ari_slots")}
           for name, s in scores.items()})
    return scores


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "measured: the random-feature teacher's decoder masks (mBO 23.7) are far worse than its own slot-attention "
    "masks (37.0), so SPOT's premise fails; distilling them collapses the student to one or two slots per "
    "image (mBO 10.3; seed 1: teacher 34.5, student 18.3). Distilling good masks does help "
    "(test_distilling_ground_truth_masks_teaches_the_student_to_segment)"))
def test_student_is_not_worse_than_its_teacher(tmp_path: Path) -> None:
    """SPOT (nine orderings) on synthetic scenes, both models scored with all orderings (about 7 CPU minutes).

    Measured (seed 0, mBO / FG-ARI on 256 scenes, decoder masks first, slot-attention masks second):
    teacher 23.7 / 23.8 and 37.0 / 35.2 (1024 steps, 2.8 CPU min); student 10.3 / 8.7 and 17.2 / 15.6
    (1024 steps, 3.1 CPU min). Seed 1: teacher 34.5 / 42.7 and 41.8 / 41.9, student 18.3 / 11.2 and
    24.1 / 26.6. With 256 steps per stage: teacher 18.5 (decoder) and 36.6 (slots), student
    8.2 with the CE and 25.6 with --ce_weight 0. The CE alone (no MSE) drives the student from about 5
    slots per image to under 2 while the teacher uses about 3.7: its hard targets put the background into
    one slot and the student's other slots, matched to empty or inconsistent teacher slots, are pushed down.
    """
    scores = teacher_then_student(tmp_path, "random")
    assert scores["student"]["mbo_i"] >= scores["teacher"]["mbo_i"]


@pytest.mark.slow
def test_self_trained_student_is_not_worse_than_its_teacher(tmp_path: Path) -> None:
    """SPOT without permutations (raster order only, self-training only; docs/methods/spot.md), about 7 CPU minutes.

    Measured (mBO / FG-ARI on 256 scenes, raster order, decoder masks first, slot-attention masks second):
    seed 0 (this test): teacher 28.7 / 27.6 and 34.3 / 36.6 (1024 steps, about 3 CPU min); student
    29.4 / 23.0 and 23.5 / 21.2 (1024 steps, 3.3 CPU min). Seed 1 (``--seed 1``, which also draws other
    training scenes): teacher 27.8 / 31.3 and 27.4 / 31.7 (2.5 CPU min); student 30.2 / 22.4 and
    20.6 / 16.3 (3.1 CPU min). The student's mBO is not worse on both seeds (no tolerance needed);
    its FG-ARI is lower on both.
    """
    scores = teacher_then_student(tmp_path, "standard")
    assert scores["student"]["mbo_i"] >= scores["teacher"]["mbo_i"]
