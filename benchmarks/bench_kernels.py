#!/usr/bin/env python
"""Mixed precision and kernels: each speed-up on/off for DINOSAUR and SPOT stage 1.

Runs the real training step of the shared Trainer (forward, backward, infinity-norm clip, Adam)
on random images (data loading excluded), each variant in a fresh process so that peak memory
is its own. The baseline ``fp32`` is the plain code: float32, no TF32, explicit attention
(``AutoregressiveDecoder.use_sdpa(False)`` and timm's non-fused attention in the encoder),
per-tensor Adam (``foreach=False``), eager. Every other variant switches on one thing, ``all``
switches on every one that applies on the device:

  sdpa     F.scaled_dot_product_attention in the decoder and the encoder
  fused    fused Adam (utils.train.make_adam)
  tf32     TF32 matmuls and convolutions (CUDA only; select_device turns it on for training)
  amp      bf16 autocast (fp16 + GradScaler on GPUs without bf16) = --amp (CUDA only)
  compile  torch.compile of the training forward = --compile (inductor; measured on the CPU too,
           although the training scripts apply --compile on CUDA only, see utils.train.COMPILE_DEVICES)
  all      everything above that applies

Prints images/s, ms/step and peak memory (CUDA: peak allocated; CPU: peak process RSS) of every
variant and its ratio to ``fp32``; on the CPU also CPU ms/step (process time: on a shared machine
the wall clock mostly measures the other jobs; compare threads=1 runs by CPU time). Defaults: ViT-B/16 at 224 px, batch 64 on a GPU; on the CPU a
smaller step (batch 4) so that the run ends in minutes. Example:

    python benchmarks/bench_kernels.py                       # GPU: ViT-B/16, batch 64
    nice -n 5 python benchmarks/bench_kernels.py --device cpu --threads 2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import time

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    add_spot_bench_args, device_name, memory_label, peak_memory_mb, time_train_steps,
)

from models.encoders import FrozenViT  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from utils.run import select_device  # noqa: E402
import utils.train  # noqa: E402
from utils.train import Trainer, TrainConfig, make_adam  # noqa: E402

MODELS = {
    "dinosaur": dict(dec_type="mlp", train_permutations="standard", use_slot_proj=False),
    "spot": dict(dec_type="transformer", train_permutations="random"),
}
FEATURES = ("sdpa", "fused", "tf32", "amp", "compile")
CUDA_ONLY = ("tf32", "amp")
VARIANTS = ("fp32", *FEATURES, "all")


def features_of(variant: str, device: torch.device) -> set[str]:
    """The features a variant switches on (``all``: every one that applies on ``device``)."""
    if variant == "fp32":
        return set()
    if variant == "all":
        return {f for f in FEATURES if device.type == "cuda" or f not in CUDA_ONLY}
    return {variant}


def set_attention_kernels(model: SPOT, sdpa: bool) -> None:
    """SDPA or the explicit softmax in the decoder (ours) and the encoder (timm's ``fused_attn``)."""
    if hasattr(model.decoder, "use_sdpa"):
        model.decoder.use_sdpa(sdpa)
    for module in model.encoder.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = sdpa


def time_optimizer_step(optimizer: torch.optim.Optimizer, device: torch.device, repeats: int = 5) -> float:
    """Mean ms of ``optimizer.step()`` on the gradients already in place (CPU: process time)."""
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter() if device.type == "cuda" else time.process_time()
    for _ in range(repeats):
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter() if device.type == "cuda" else time.process_time()
    return 1000 * (end - start) / repeats


def bench(model_name: str, variant: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    on = features_of(variant, device)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high" if "tf32" in on else "highest")
    torch.backends.cudnn.allow_tf32 = "tf32" in on
    encoder = FrozenViT(args.which_encoder, pretrained=False)
    config = SPOTConfig(image_size=args.image_size, num_slots=args.num_slots, num_heads=args.num_heads,
                        **MODELS[model_name])
    model = SPOT(encoder, config).to(device)
    set_attention_kernels(model, "sdpa" in on)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adam(params, lr=4e-4) if "fused" in on else torch.optim.Adam(params, lr=4e-4, foreach=False)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, amp="amp" in on, compile="compile" in on)
    utils.train.COMPILE_DEVICES = (device.type,)  # measure compile wherever the benchmark runs
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, optimizer, lambda step: 4e-4, [None] * args.batch_size, None, device, Path(tmp),
                          cfg, {})
        trainer.train_module = trainer.build_train_module()  # what Trainer.fit trains with
        elapsed, cpu = time_train_steps(trainer, {"image": images}, args.warmup, args.steps, device)
    # The optimiser step alone (the last step's gradients are still there): the fused-Adam pair's
    # own effect, which the whole step's timing can hide on a noisy machine.
    adam_ms = time_optimizer_step(optimizer, device)
    return {
        "adam_ms": adam_ms,
        "images_per_s": args.steps * args.batch_size / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "cpu_ms_per_step": 1000 * cpu / args.steps,
        "peak_mb": peak_memory_mb(device),
        "amp_dtype": str(trainer.amp_dtype).replace("torch.", "") if trainer.use_amp else "-",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_spot_bench_args(parser, batch_size=None, batch_help="default: 64 on a GPU, 4 on the CPU", steps=None,
                        steps_help="timed steps (default: 20 on a GPU, 3 on the CPU)", warmup=3,
                        warmup_help="untimed steps first (compilation happens here)")
    parser.add_argument("--num_heads", type=int, default=6, help="SPOT decoder heads")
    parser.add_argument("--models", default="dinosaur,spot")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    device = select_device(args.device)
    cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (64 if cuda else 4)
    args.steps = args.steps or (20 if cuda else 3)
    name = device_name(device, args.threads)
    print(f"device: {name} | torch {torch.__version__} | encoder {args.which_encoder} (random weights) | "
          f"{args.image_size}px, batch {args.batch_size}, {args.num_slots} slots | {args.warmup} warm-up + "
          f"{args.steps} timed steps")
    memory = memory_label(device)
    for model_name in args.models.split(","):
        results: dict[str, dict[str, float]] = {}
        for variant in args.variants.split(","):
            if variant in CUDA_ONLY and not cuda:
                print(f"{model_name:8s} {variant:8s} n/a (CUDA only)")
                continue
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # own peak memory
                results[variant] = r = pool.submit(bench, model_name, variant, args, device).result()
            base = results.get("fp32")
            ratio = ""
            if base and variant != "fp32":
                ratio = f"  x{r['images_per_s'] / base['images_per_s']:.2f} images/s"
                if not cuda:  # CPU time is what a shared machine measures reliably
                    ratio += f" (x{base['cpu_ms_per_step'] / r['cpu_ms_per_step']:.2f} by CPU time)"
                ratio += f", x{r['peak_mb'] / base['peak_mb']:.2f} memory vs fp32"
            amp = f"  autocast {r['amp_dtype']}" if r["amp_dtype"] != "-" else ""
            cpu_time = "" if cuda else f" {r['cpu_ms_per_step']:9.1f} CPU ms/step"
            print(f"{model_name:8s} {variant:8s} {r['images_per_s']:8.2f} images/s {r['ms_per_step']:9.1f} ms/step"
                  f"{cpu_time}  {memory} {r['peak_mb']:8.0f} MB  Adam step {r['adam_ms']:.1f} ms{ratio}{amp}",
                  flush=True)


if __name__ == "__main__":
    main()
