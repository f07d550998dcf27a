"""Slow: on synthetic scenes with 2-6 objects, AdaSlot's kept-slot count follows the object count.

Run with ``pytest -m slow tests/test_adaslot_slow.py -s`` (about 45 minutes on a busy 2-core CPU).
A random frozen encoder (2x2-pixel patch projection) stands in for DINO: features carry colour only.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import eval_spot
import train_adaslot

COMMON = ["--dataset", "shapes", "--encoder", "vit_patch_p2", "--no_pretrained", "--resize_to", "32", "32",
          "--batch_size", "16", "--train_workers", "0", "--val_workers", "0", "--train_samples", "4096",
          "--val_samples", "256", "--eval_batch_size", "64", "--lr_main", "1e-3", "--lr_warmup_steps", "100",
          "--eval_every", "100", "--seed", "0"]
STEPS = "800"


@pytest.mark.slow
def test_kept_slots_correlate_with_object_count(tmp_path: Path) -> None:
    train_adaslot.main([*COMMON, "--model_save_path", str(tmp_path / "s1"), "--num_slots", "7", "--slot_size", "64",
                        "--mlp_hidden_size", "256", "--mlp_dec_hidden", "128", "--num_iters", STEPS])
    s1 = next((tmp_path / "s1").iterdir())
    train_adaslot.main([*COMMON, "--model_save_path", str(tmp_path / "s2"), "--num_slots", "7",
                        "--use_adaptive_slot_attention", "--use_sparsity_loss", "--num_iters", STEPS,
                        "--warmstart_checkpoint", str(s1)])
    s2 = next((tmp_path / "s2").iterdir())
    results = {}
    for rule in ("gumbel", "threshold"):
        results[rule] = eval_spot.main(["--checkpoint_path", str(s2), "--dataset", "shapes", "--val_samples", "256",
                                        "--num_workers", "0", "--keep_rule", rule, "--no_progress", "--baselines",
                                        "--log_path", str(tmp_path / rule)])
    stage1 = eval_spot.main(["--checkpoint_path", str(s1), "--dataset", "shapes", "--val_samples", "256",
                             "--num_workers", "0", "--no_progress", "--log_path", str(tmp_path / "stage1")])
    for name, r in {**results, "stage 1": stage1}.items():
        print(f"{name}: pearson(kept, objects)={r['kept_objects_pearson']} kept={r['num_slots_kept']:.2f} "
              f"by objects={r['kept_slots_by_objects']} fg_ari={r['fg_ari']:.1f} mbo_i={r['mbo_i']:.1f} "
              f"f1={r['f1']:.1f} ami={r['ami']:.1f}")
    # 256 images: r > 0.2 is far beyond chance (p < 0.001).
    assert results["gumbel"]["kept_objects_pearson"] > 0.2
