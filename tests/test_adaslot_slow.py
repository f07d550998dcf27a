"""Slow: does AdaSlot's kept-slot count follow the object count on synthetic scenes with 2-6 objects?

Run with ``pytest -m slow tests/test_adaslot_slow.py -s`` (about 15 minutes on the project's
2-core CPU when idle). A random frozen encoder (``vit_tiny_p4``) stands in for DINO, because no
pretrained weights can be downloaded here; its features carry colour, not semantics.

Measured (seed 0, 256 validation scenes, 13 min 48 s): stage 1's MLP-decoder masks collapse to
about one segment within this budget (FG-ARI 6.0; slot-attention masks 20.9), so stage 2 has
nothing to count with: Gumbel keep rule 4.33 of 7 slots kept, Pearson r(kept, objects) = -0.002
(FG-ARI 3.6); the threshold rule keeps all 7 (every p_keep > 0.5; FG-ARI 5.1).

Why (measured outside this test, shapes at 32 px, K = 7, slot dim 64, 256 val scenes): stage 1
falls into DINOSAUR's symmetric saddle. Its slots become near copies of one vector (mean pairwise
cosine 0.66 at initialisation, 0.95-0.98 after 100-800 steps), the decoder's alphas go uniform
(mean max alpha 0.15-0.18, about 1/K) and the reconstruction is the image's mean feature plus a
position term. Dropping any single slot then changes the per-image MSE by little (10-90 %
range of the per-slot ablation: under 1e-3), below the penalty a kept slot costs (0.1 / K = 0.014), so
no slot is individually needed and the selector learns a scene-independent keep rate. Tried
without escaping the saddle: ``vit_patch_p2`` (the quickstart's colour features; decoder FG-ARI
5.3, slot-attention masks 29.6 after 600 steps), a fixed 2D sin-cos position code of amplitude
0.5 or 1.5 added to those features (FG-ARI 2.8 / 1.9), learning rate 4e-4 (slot cosine 0.85
after 100 steps; stopped there), and a one-layer decoder at learning rates 1e-3 (slot cosine 0.98
after 300 steps), 3e-3 and 6e-3 (FG-ARI 2.1 / 5.4 after 800 steps). Stage 2 (400 steps) on the 6e-3 stage 1 keeps 4.56 of 7
slots at sparsity weight 0.1 (Gumbel rule, r = 0.02; threshold rule: all 7) and 3.11 at 0.3
(r = 0.10; threshold rule: 0.46, r = 0.03). The longest try, 3,000 stage-1 steps (one-layer
decoder, 1e-3, 7.3 CPU minutes in all), reached decoder FG-ARI 14.5 (slot-attention masks 32.6)
with slot cosine still 0.98-0.99 and the same per-slot ablation; 1,000 stage-2 steps then kept
3.95 slots (Gumbel rule, r = 0.06; threshold rule 6.10, r = -0.04). DINOSAUR escapes the saddle after thousands of steps on DINO
features; that is beyond a CPU test. The correlation check therefore ends as an expected failure
(xfail, with r and the collapse figures in the message) unless stage 1 segments; the smoke check
of a working selector (1 <= mean kept < K_max) must always hold.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import eval_spot
import train_adaslot
from ground.state_dict import load_model_state
from datasets.shapes import ShapesDataset
from models import build_model
from utils.checkpoint import load_checkpoint

K_MAX = 7
COMMON = ["--dataset", "shapes", "--encoder", "vit_tiny_p4", "--no_pretrained", "--resize_to", "32", "32",
          "--batch_size", "16", "--train_workers", "0", "--val_workers", "0", "--train_samples", "4096",
          "--val_samples", "256", "--eval_batch_size", "64", "--lr_main", "1e-3", "--lr_warmup_steps", "100",
          "--eval_every", "100", "--seed", "0"]
STEPS = "600"


@torch.no_grad()
def slot_collapse(run: Path, num_images: int = 64) -> dict[str, float]:
    """Stage-1 symptoms of the symmetric saddle on validation scenes.

    ``slot_cosine``: mean pairwise cosine of one image's slots (off-diagonal); ``max_alpha``: mean
    over pixels of the largest decoder alpha (1/K when alphas are uniform); ``drop_one_mse``: mean
    increase of an image's MSE when a single slot is dropped.
    """
    ckpt = load_checkpoint(run)
    model = build_model("adaslot", ckpt["model_config"], ckpt["encoder"])
    load_model_state(model, ckpt["model"])
    model.eval()
    data = ShapesDataset("val", num_images, image_size=model.config.image_size)
    images = torch.stack([data[i]["image"] for i in range(num_images)])
    torch.manual_seed(0)
    features = model.encode(images)
    slots = model.slot_attention(model.input_mlp(features))["slots"]
    b, k = slots.shape[:2]
    unit = torch.nn.functional.normalize(slots, dim=-1)
    cosine = ((unit @ unit.transpose(1, 2)).sum() - b * k) / (b * k * (k - 1))
    out = model.decoder(slots)
    base = ((features - out["reconstruction"]) ** 2).mean(dim=(1, 2))
    increase = []
    for slot in range(k):
        keep = torch.ones(b, k)
        keep[:, slot] = 0
        increase.append(((features - model.decoder(slots, keep)["reconstruction"]) ** 2).mean(dim=(1, 2)) - base)
    return {"slot_cosine": float(cosine), "max_alpha": float(out["masks"].max(dim=1).values.mean()),
            "drop_one_mse": float(torch.stack(increase).mean())}


@pytest.mark.slow
def test_kept_slots_follow_object_count(tmp_path: Path) -> None:
    train_adaslot.main([*COMMON, "--model_save_path", str(tmp_path / "s1"), "--num_slots", str(K_MAX),
                        "--slot_size", "32", "--mlp_hidden_size", "128", "--mlp_dec_hidden", "256", "--num_iters", STEPS])
    s1 = next((tmp_path / "s1").iterdir())
    collapse = slot_collapse(s1)
    train_adaslot.main([*COMMON, "--model_save_path", str(tmp_path / "s2"), "--num_slots", str(K_MAX),
                        "--use_adaptive_slot_attention", "--use_sparsity_loss", "--num_iters", STEPS,
                        "--warmstart_checkpoint", str(s1)])
    s2 = next((tmp_path / "s2").iterdir())
    results = {}
    for rule in ("gumbel", "threshold"):
        results[rule] = eval_spot.main(["--checkpoint_path", str(s2), "--dataset", "shapes", "--val_samples", "256",
                                        "--num_workers", "0", "--keep_rule", rule, "--no_progress",
                                        "--log_path", str(tmp_path / rule)])
    print(f"stage 1: {collapse}")
    for rule, r in results.items():
        print(f"{rule}: pearson(kept, objects)={r['kept_objects_pearson']} kept={r['num_slots_kept']:.2f} "
              f"by objects={r['kept_slots_by_objects']} fg_ari={r['fg_ari']:.1f} mbo_i={r['mbo_i']:.1f}")
    sampled = results["gumbel"]
    # A working selector: the kept-slot count neither collapses to nothing nor stays at K_max.
    assert 1 <= sampled["num_slots_kept"] < K_MAX
    r = sampled["kept_objects_pearson"]
    if r is None or not r > 0.2:  # 256 images: r > 0.2 is far beyond chance (p < 0.001); NaN fails too
        pytest.xfail(f"kept slots do not follow the object count (r = {r}); decoder-mask FG-ARI "
                     f"{sampled['fg_ari']:.1f}: stage 1 sits in the symmetric saddle (slot cosine "
                     f"{collapse['slot_cosine']:.2f}, max alpha {collapse['max_alpha']:.2f} for 1/K = {1 / K_MAX:.2f}, "
                     f"dropping one slot adds {collapse['drop_one_mse']:.1e} MSE)")
