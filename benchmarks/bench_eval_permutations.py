#!/usr/bin/env python
"""Cost of SPOT's ``--eval_permutations all`` against nine full forwards, and peak memory.

A SPOT stage-1 model (autoregressive decoder with nine orderings, random encoder weights) runs
the evaluation forward pass (``model(batch)`` in eval mode, no autograd) on random images, in
four ways, each in a fresh process so that peak memory is its own:

  standard    one ordering (``--eval_permutations standard``): the cost of a single forward
  all         ``--eval_permutations all`` as implemented: encoder and slot attention once, the
              nine orderings decoded in one batched decoder pass (chunked, ``decode_chunk_rows``)
  all_loop    the same with one decoder pass per ordering (the encoder still runs once)
  nine_full   nine full forwards (encoder + slot attention + decoder), one per ordering

Configurations:
  vitb16   ViT-B/16 at 224 px, SPOT's defaults (7 slots of 256, 4 decoder blocks, 6 heads)
  small    ViT-S/16 at 224 px, 7 slots of 64, 2 decoder blocks, 6 heads
  tiny     the test ViT (1 block, 32 wide, 8-px patches) at 64 px, 7 slots of 32, 2 blocks, 2 heads
Example:

    python benchmarks/bench_eval_permutations.py --configs vitb16,small --batch_size 8
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import device_name, memory_label, peak_memory_mb  # noqa: E402
from models.encoders import FrozenViT  # noqa: E402
from models.spot import SPOT, SPOTConfig  # noqa: E402
from utils.run import select_device  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "vitb16": dict(encoder="dino_vitb16", image_size=224, model=dict()),
    "small": dict(encoder="dino_vits16", image_size=224, model=dict(slot_size=64, mlp_hidden_size=128,
                                                                    num_dec_blocks=2)),
    "tiny": dict(encoder="vit_micro_p8", image_size=64, model=dict(slot_size=32, mlp_hidden_size=64,
                                                                   num_dec_blocks=2, num_heads=2)),
}
VARIANTS = ("standard", "all", "all_loop", "nine_full")


def nine_full_forwards(model: SPOT, images: torch.Tensor) -> torch.Tensor:
    """Encoder, slot attention and decoder once per ordering; the outputs averaged as "all" does."""
    masks = []
    for index in range(len(model.orderings)):
        features = model.encode(images)
        slots = model.slot_attention(model.input_mlp(features))["slots"]
        out = model.decoder(slots, features, ordering=model.orderings[index], ordering_index=index)
        masks.append(out["masks"])
    return torch.stack(masks).mean(0)


def bench(config_name: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)  # as eval_spot.py
    device = select_device(args.device)
    spec = CONFIGS[config_name]
    mode = "standard" if variant == "standard" else "all"
    config = SPOTConfig(image_size=spec["image_size"], num_slots=7, train_permutations="random",
                        eval_permutations=mode, **spec["model"])
    model = SPOT(FrozenViT(spec["encoder"], pretrained=False), config).to(device).eval()
    if variant == "all_loop":
        model.decode_chunk_rows = 1  # one ordering per decoder pass
    images = torch.rand(args.batch_size, 3, spec["image_size"], spec["image_size"], device=device)

    def run() -> None:
        if variant == "nine_full":
            nine_full_forwards(model, images)
        else:
            model({"image": images})

    for _ in range(args.warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    start, done = time.perf_counter(), 0
    while done < args.repeats or time.perf_counter() - start < args.min_seconds:
        run()
        done += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return {"ms_per_batch": 1000 * (time.perf_counter() - start) / done, "peak_mb": peak_memory_mb(device),
            "batches": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--configs", default="vitb16,small,tiny", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per variant, at least")
    parser.add_argument("--min_seconds", type=float, default=5.0, help="time each variant for at least this long")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for names, known in ((args.configs, CONFIGS), (args.variants, VARIANTS)):
        if set(names.split(",")) - set(known):
            parser.error(f"unknown names in {names!r}; choose from {', '.join(known)}")
    device = select_device(args.device)
    name = device_name(device, args.threads)
    print(f"device: {name} | torch {torch.__version__} | batch {args.batch_size}, at least {args.repeats} timed "
          f"batches and {args.min_seconds:g} s after {args.warmup} warm-up, fp32, random encoder weights")
    memory = memory_label(device)
    for config_name in args.configs.split(","):
        results = {}
        for variant in args.variants.split(","):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # own peak memory
                results[variant] = r = pool.submit(bench, config_name, variant, args).result()
            print(f"{config_name:7s} {variant:10s} {r['ms_per_batch']:10.1f} ms/batch  "
                  f"{args.batch_size * 1000 / r['ms_per_batch']:8.2f} images/s  {memory} {r['peak_mb']:7.0f} MB  "
                  f"({r['batches']} batches)",
                  flush=True)
        for a, b in (("all", "nine_full"), ("all_loop", "nine_full"), ("all", "all_loop"), ("all", "standard")):
            if {a, b} <= results.keys():
                print(f"{config_name:7s} time {a}/{b} = {results[a]['ms_per_batch'] / results[b]['ms_per_batch']:.3f}")


if __name__ == "__main__":
    main()
