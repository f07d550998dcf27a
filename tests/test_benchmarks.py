"""Every benchmark script runs end to end at its smallest size on the CPU and prints its table.

The figures are not checked (speed targets live in the benchmarks, never in tests); what is
checked is that a benchmark still builds its models and steps through the current code, so it
cannot rot unnoticed between the occasions a GPU is lent.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_SPOT = ["--which_encoder", "vit_tiny_p4", "--image_size", "32", "--batch_size", "2", "--device", "cpu",
             "--threads", "1"]

# script -> (arguments, a line fragment each printed table must contain)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "bench_train_spot": ([*TINY_SPOT, "--steps", "1", "--warmup", "0", "--finetune_blocks_after", "1",
                          "--modes", "spot,spot2"], ["spot ", "spot2 ", "spot2/spot: images/s"]),
    "bench_train_spot_ftdinosaur": (["--which_encoder", "vit_dinov2_tiny_p14", "--image_size", "56", "--batch_size", "2",
                                     "--device", "cpu", "--threads", "1", "--steps", "1", "--warmup", "0",
                                     "--modes", "ftdinosaur,ftdinosaur_cached", "--amp", "--compile"],
                                    ["ftdinosaur ", "ftdinosaur_cached/ftdinosaur: images/s"]),
    "bench_kernels": ([*TINY_SPOT, "--steps", "1", "--warmup", "0", "--models", "spot", "--variants", "fp32,fused,amp"],
                      ["spot     fp32", "spot     fused", "amp      n/a (CUDA only)"]),
    "bench_eval_permutations": (["--configs", "tiny", "--batch_size", "2", "--min_seconds", "0", "--repeats", "1",
                                 "--threads", "1", "--device", "cpu"], ["tiny    all ", "time all/nine_full"]),
    "bench_feature_cache": ([*TINY_SPOT, "--steps", "1", "--warmup", "0", "--models", "spot", "--views", "1"],
                            ["spot/images", "spot/cache"]),
    "bench_train_slot_attention": (["--configs", "cpu", "--batch_size", "2", "--steps", "1", "--warmup", "0",
                                    "--device", "cpu"], ["cpu"]),
    "bench_train_slate": (["--configs", "small", "--small_batch_size", "2", "--steps", "1", "--warmup", "0",
                           "--device", "cpu"], ["small"]),
    "bench_data_path": (["--configs", "micro", "--num_images", "4", "--image_size", "32", "--batch_size", "2",
                         "--steps", "1", "--warmup", "0", "--repeats", "1", "--num_workers", "0", "--threads", "1",
                         "--device", "cpu"], ["micro"]),
    "bench_loaders": (["--num_images", "2", "--num_workers", "0", "--batch_size", "2", "--image_size", "32",
                       "--passes", "1"], ["coco"]),
    "bench_pixel_datasets": (["--num_scenes", "20", "--image_size", "32", "--batch_size", "2", "--num_workers", "0",
                              "--convert_samples", "1", "--convert_workers", "1"], ["clevr"]),
}


def test_every_benchmark_script_has_a_case() -> None:
    scripts = {p.stem for p in (REPO / "benchmarks").glob("bench_*.py")}
    assert scripts == {case.split("_ftdinosaur")[0] for case in CASES}


@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_at_its_smallest_size(script: str) -> None:
    argv, expected = CASES[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, f"benchmarks/{script.split('_ftdinosaur')[0]}.py", *argv], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for fragment in expected:
        assert fragment.lower() in result.stdout.lower(), f"{fragment!r} not in:\n{result.stdout[-2000:]}"
