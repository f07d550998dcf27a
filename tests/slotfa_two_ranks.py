"""Worker of tests/test_slotfa.py's 2-process gloo test (tiny tensors only: the processes are forked)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from models.slotfa import draw_fa_noise, slot_contrastive_loss, slot_presence, updated_center


def two_rank_worker(rank_index: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank_index, world_size=2)
    try:
        q_slots, k_slots, q_dots, k_dots = torch.load(Path(results) / "inputs.pt")
        part = slice(2 * rank_index, 2 * rank_index + 2)  # each rank holds half of the batch of 4
        loss = slot_contrastive_loss(q_slots[part], k_slots[part], q_dots[part], k_dots[part], nn.Identity())
        queries = int((slot_presence(q_dots[part]) & slot_presence(k_dots[part])).sum())
        center = updated_center(torch.zeros(1, 3), [k_dots[part]], 0.0)
        torch.manual_seed(rank_index)  # different local RNG: the broadcast must still agree
        alpha, beta = draw_fa_noise(3, 4, 1.0, 1.0, torch.device("cpu"))
        torch.save({"loss": loss, "queries": queries, "center": center, "alpha": alpha, "beta": beta},
                   Path(results) / f"rank{rank_index}.pt")
    finally:
        dist.destroy_process_group()
