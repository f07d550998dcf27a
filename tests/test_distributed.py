"""DDP under torchrun on the CPU (gloo, 2 processes) against one process with the same global batch."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train_spot
from ground.errors import UserError
import utils.distributed
from utils.checkpoint import load_checkpoint
from utils.distributed import ShardSampler, parse_duration
from utils.train import EpochSampler

REPO = Path(__file__).resolve().parents[1]
# Deterministic forward (learned slot init, MLP decoder), no warm-up: one process with batch 4
# and two processes with batch 2 each must take the same optimisation steps.
TINY = [
    "--dataset", "shapes", "--image_size", "32", "--which_encoder", "vit_micro_p8", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False",
    "--init_method", "embedding", "--lr_warmup_steps", "0", "--eval_batch_size", "2",
    "--train_samples", "16", "--val_samples", "7", "--num_workers", "0", "--epochs", "2",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(nproc: int, *args: str, timeout: float = 240, script: str = "train_spot.py") -> subprocess.CompletedProcess:
    """Launch a training script under torchrun on 127.0.0.1 (gloo on the CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), script, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_process_ddp_equals_one_process_with_the_global_batch(tmp_path: Path) -> None:
    # Stopped mid-epoch after 3 of 8 steps, then resumed under torchrun: exact resume under DDP too.
    result = torchrun(2, *TINY, "--batch_size", "2", "--device", "cpu", "--log_path", str(tmp_path / "ddp"),
                      "--max_steps", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1 and load_checkpoint(runs[0])["step"] == 3
    result = torchrun(2, "--resume", str(runs[0]))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "ddp").iterdir())
    assert len(runs) == 1, runs  # rank 1 made no folder of its own
    ddp_run = runs[0]
    assert len(list(ddp_run.glob("events.out.tfevents.*"))) == 2  # one per launch, from rank 0 only
    assert sorted(p.name for p in ddp_run.iterdir() if not p.name.startswith("events")) == [
        "args.yaml", "checkpoint.pt.tar", "metrics.json", "metrics.jsonl", "viz"]
    output = result.stdout + result.stderr
    assert output.count("run folder ") == 1 and "global batch 4" in output  # rank 0 alone logs
    records = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]

    train_spot.main([*TINY, "--batch_size", "4", "--device", "cpu", "--log_path", str(tmp_path / "single")])
    single_run = next((tmp_path / "single").iterdir())
    a, b = load_checkpoint(single_run), load_checkpoint(ddp_run)
    assert a["step"] == b["step"] == 8 and b["world_size"] == 2 and len(b["rng_per_rank"]) == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    metrics_a = json.loads((single_run / "metrics.json").read_text())
    metrics_b = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics_b["num_images"] == metrics_a["num_images"] == 7  # 7 val images over 2 ranks: none lost or doubled
    for key, value in metrics_a.items():
        if isinstance(value, str):  # e.g. eval_protocol
            assert metrics_b[key] == value, key
        else:
            assert metrics_b[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key

    # Resuming a DDP run with another process count is refused with one line.
    with pytest.raises(UserError, match="trained with 2 processes"):
        train_spot.main(["--resume", str(ddp_run), "--epochs", "3"])


class _Joined(Exception):
    """Raised by the stand-in process-group join: the device it was given is recorded."""


@pytest.mark.parametrize("how", ["resume", "auto_resume", "typed"])
def test_resume_joins_the_process_group_on_the_runs_recorded_device(tmp_path: Path, how: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A run trained with --device cpu and resumed under torchrun with no --device on a machine
    # with one GPU used to join NCCL on GPU LOCAL_RANK ("auto") and stop: 2 ranks, 1 GPU.
    train_spot.main([*TINY, "--batch_size", "2", "--device", "cpu", "--log_path", str(tmp_path), "--max_steps", "1"])
    run = next(tmp_path.iterdir())
    joined: list[str] = []

    def join(device: str = "auto") -> None:
        joined.append(device)
        raise _Joined

    monkeypatch.setattr(utils.distributed, "init", join)
    argv = {"resume": ["--resume", str(run)], "auto_resume": ["--auto_resume", "--log_path", str(tmp_path)],
            "typed": ["--resume", str(run), "--device", "cuda"]}[how]
    with pytest.raises(_Joined):
        train_spot.main(argv)
    assert joined == ["cuda" if how == "typed" else "cpu"]


def test_epoch_sampler_shards_are_the_single_process_batches() -> None:
    single = list(EpochSampler(23, seed=3, epoch=1, global_batch=6))
    shards = [list(EpochSampler(23, seed=3, epoch=1, num_replicas=3, rank=r, global_batch=6)) for r in range(3)]
    assert all(len(s) == 6 for s in shards)  # 3 whole global batches of 6, batch 2 per rank
    for step in range(3):
        together = sorted(i for s in shards for i in s[2 * step : 2 * step + 2])
        assert together == sorted(single[6 * step : 6 * step + 6])
    assert not set(shards[0]) & set(shards[1])
    # Resuming at step 1 skips one global batch on every rank.
    resumed = list(EpochSampler(23, seed=3, epoch=1, start=6, num_replicas=3, rank=1, global_batch=6))
    assert resumed == shards[1][2:]
    sampler = EpochSampler(23, seed=3, epoch=0)
    sampler.set_epoch(1)
    assert list(sampler) == list(EpochSampler(23, seed=3, epoch=1))


def test_shard_sampler_counts_every_sample_once() -> None:
    shards = [list(ShardSampler(7, num_replicas=3, rank_=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardSampler(2, num_replicas=3, rank_=r)) for r in range(3)] == [1, 1, 0]


def test_parse_duration() -> None:
    assert parse_duration("90") == 90 and parse_duration("1:30:00") == 5400 and parse_duration("2h") == 7200
    with pytest.raises(UserError, match="not a duration"):
        parse_duration("soon")


# Under torchrun: records this process's pid per rank, then runs train_spot.py as the command line would.
RECORD_PID_AND_TRAIN = """
import os, sys
sys.path.insert(0, {repo!r})
open(os.path.join({folder!r}, "pid_" + os.environ["RANK"]), "w").write(str(os.getpid()))
import train_spot
from utils.errors import run_cli
run_cli(lambda: train_spot.main(sys.argv[1:]))
"""


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    script = tmp_path / "record_pid_and_train.py"
    script.write_text(RECORD_PID_AND_TRAIN.format(repo=str(REPO), folder=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script), *TINY, "--epochs", "500", "--batch_size", "2",
               "--device", "cpu", "--log_path", str(tmp_path / "logs")]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("logs/*/events.out.tfevents.*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(int((tmp_path / "pid_1").read_text()), signal.SIGTERM)  # rank 1 only, as a partial preemption
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr[-3000:]
    run = next((tmp_path / "logs").iterdir())
    step = load_checkpoint(run)["step"]
    assert 0 < step < 500 * 4
    assert f"stopped by another rank stopped at step {step}/2000" in stderr  # rank 0 followed rank 1


def test_metrics_merge_equals_one_meter() -> None:
    from metrics import SegmentationMetrics

    torch.manual_seed(0)
    pred, gt = torch.randint(0, 3, (6, 8, 8)), torch.randint(0, 4, (6, 8, 8))
    whole, first, second = SegmentationMetrics(), SegmentationMetrics(), SegmentationMetrics()
    whole.update(pred, gt)
    first.update(pred[:4], gt[:4])
    second.update(pred[4:], gt[4:])
    first.merge(second)
    assert first.counts == whole.counts
    assert first.compute() == pytest.approx(whole.compute(), nan_ok=True)  # no class masks: mbo_c is NaN


def test_eval_spot_under_torchrun_scores_each_image_once(tmp_path: Path) -> None:
    # 7 validation images over 2 processes (shards of 4 and 3): the summed metrics must equal one
    # process's, and rank 0 alone writes.
    train_spot.main([*TINY, "--epochs", "1", "--batch_size", "4", "--log_path", str(tmp_path / "run")])
    run = next((tmp_path / "run").iterdir())
    common = ["--checkpoint_path", str(run), "--dataset", "shapes", "--val_samples", "7", "--eval_batch_size", "2",
              "--num_workers", "0", "--device", "cpu", "--baselines"]
    import eval_spot

    single = eval_spot.main([*common, "--log_path", str(tmp_path / "one"), "--no_progress"])
    result = torchrun(2, *common, "--log_path", str(tmp_path / "two"), script="eval_spot.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("baseline: one_slot") == 1  # one table, from rank 0
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and single["world_size"] == 1
    for key in ("fg_ari", "ari", "mbo_i", "miou", "fg_ari_slots", "one_slot_fg_ari", "mse"):
        assert two[key] == pytest.approx(single[key], abs=1e-6), key
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["masks.png", "metrics.json"]
