#!/usr/bin/env python
"""Run a training command over seeds (and a grid of flag values): one run folder each, resumable.

Example (from the repository root)::

    python scripts/sweep.py --out sweeps/dinosaur --seeds 0 1 2 --grid num_slots=5,7 -- \\
        python train_spot.py --dataset shapes --epochs 50 --dec_type mlp --train_permutations standard
    python scripts/summarize.py sweeps/dinosaur        # mean +- std per configuration

Each (configuration, seed) trains with ``--log_path <out>/<configuration>/seed_<s> --seed <s>
--auto_resume``. Running the same sweep again skips finished runs (``metrics.json`` present)
and resumes interrupted ones from their last checkpoint, so the sweep itself can be
resubmitted after preemption. The command may start with ``torchrun ...`` for multi-GPU runs.

Stopping the sweep (SIGTERM, SIGINT/Ctrl-C, SIGHUP) stops its running training too: it gets the
signal, checkpoints and exits, and is killed if it is still running ``--grace_period`` seconds
later. After ``kill -9`` of the sweep its training runs on; a re-run meets that run folder's lock
and does not start a second writer (docs/distributed.md).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ground.errors import UserError  # noqa: E402
from utils.errors import run_cli  # noqa: E402

# Flags the sweep sets itself for every run.
OWN_FLAGS = ("--seed", "--log_path", "--auto_resume", "--resume", "--checkpoint_path")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["num_slots=5,7", "lr_main=1e-4"]`` -> ``[("num_slots", ["5", "7"]), ("lr_main", ["1e-4"])]``."""
    grid = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name or not values:
            raise UserError(f"--grid {item!r} must look like flag=value1,value2")
        grid.append((name, [v for v in values.split(",") if v]))
    return grid


def configurations(grid: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """(folder name, extra flags) for every combination of grid values ("base" without a grid)."""
    if not grid:
        return [("base", [])]
    names = [name for name, _ in grid]
    out = []
    for values in itertools.product(*(vals for _, vals in grid)):
        folder = "_".join(f"{n}={v}" for n, v in zip(names, values))
        out.append((folder, [x for n, v in zip(names, values) for x in (f"--{n}", v)]))
    return out


def finished(log_path: Path) -> bool:
    """Whether a run folder under ``log_path`` has its final ``metrics.json``."""
    return log_path.is_dir() and any((run / "metrics.json").is_file() for run in log_path.iterdir() if run.is_dir())


class Forwarder:
    """Ends the running training when the sweep is stopped (SIGTERM, SIGINT, SIGHUP), then stops the sweep.

    Each training runs in its own process group (session), so a terminal's Ctrl-C or a job
    scheduler's signal reaches it once, through here: the signal is passed to the whole group
    (SIGHUP as SIGTERM; the training saves a checkpoint and exits), and a group still alive
    ``grace_s`` seconds later is killed (SIGKILL). A sweep killed with SIGKILL cannot do this; the
    run folder's lock then stops a re-run from starting a second writer (docs/distributed.md).
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.signalled_at: float | None = None
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    def close(self) -> None:
        """Put back the signal handlers that were in place before."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame: object) -> None:
        self.stopping = True
        self.end_child(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    def end_child(self, sig: int) -> None:
        """Send ``sig`` to the running training's process group (once), starting the grace period."""
        if self.child is None or self.child.poll() is not None:
            return
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
        _signal_group(self.child, sig)

    def wait(self) -> int:
        """The training's exit code; past the grace period after a signal its group is killed."""
        assert self.child is not None
        while True:
            try:
                return self.child.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if self.signalled_at is not None and time.monotonic() - self.signalled_at > self.grace_s:
                    print(f"the training did not stop within --grace_period {self.grace_s:g} s; killing it", flush=True)
                    _signal_group(self.child, signal.SIGKILL)
                    self.signalled_at = math.inf  # killed once; the loop now only waits

    def run(self, command: list[str]) -> int:
        """Run one training in its own process group; it is ended if the sweep leaves early."""
        self.child, self.signalled_at = subprocess.Popen(command, start_new_session=True), None
        try:
            if self.stopping:  # stopped while the training was being started
                self.end_child(signal.SIGTERM)
            return self.wait()
        finally:
            if self.child.poll() is None:  # the sweep is leaving through an exception: end the training too
                self.end_child(signal.SIGTERM)
                self.wait()
            self.child = None


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)  # the child leads its own group (start_new_session)
    except ProcessLookupError:
        pass


def _one_line_error(message: str) -> None:
    raise UserError(f"{message} (see scripts/sweep.py --help)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise UserError("put the training command after --, e.g. sweep.py --out DIR --seeds 0 1 2 -- python train_spot.py ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", required=True, help="sweep folder: <out>/<configuration>/seed_<s>/<run folder>")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--grid", nargs="*", default=[], help="flag=v1,v2 ... (every combination is run)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    parser.add_argument("--stop_on_failure", action="store_true", help="stop at the first failed run")
    parser.add_argument("--grace_period", type=float, default=60.0,
                        help="seconds a training may take to checkpoint and exit after the sweep is stopped "
                             "(SIGTERM/SIGINT/SIGHUP) before it is killed")
    parser.error = _one_line_error  # type: ignore[method-assign]
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        raise UserError("the training command after -- is empty")
    clash = [flag for flag in OWN_FLAGS if any(a == flag or a.startswith(flag + "=") for a in command)]
    if clash:
        raise UserError(f"the sweep sets {', '.join(clash)} itself; remove it from the training command")
    grid = parse_grid(args.grid)
    for name, _ in grid:
        if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in command):
            raise UserError(f"--{name} is both in --grid and in the training command; keep one")

    runs = [(folder, flags, seed) for folder, flags in configurations(grid) for seed in args.seeds]
    if not args.grace_period >= 0:
        raise UserError(f"--grace_period {args.grace_period} must be a number of seconds >= 0")
    forwarder = Forwarder(args.grace_period)
    try:
        return _run_all(args, command, runs, forwarder)
    finally:
        forwarder.close()


def _run_all(args: argparse.Namespace, command: list[str], runs: list[tuple[str, list[str], int]],
             forwarder: Forwarder) -> int:
    """Run (or skip, when finished) every (configuration, seed) in turn; the sweep's exit code."""
    failed, stopped = [], []
    for index, (folder, flags, seed) in enumerate(runs, 1):
        log_path = Path(args.out) / folder / f"seed_{seed}"
        label = f"[{index}/{len(runs)}] {folder} seed {seed}"
        full = [*command, *flags, "--seed", str(seed), "--log_path", str(log_path), "--auto_resume"]
        if finished(log_path):
            print(f"{label}: finished, skipped", flush=True)
            continue
        print(f"{label}: {' '.join(full)}", flush=True)
        if args.dry_run:
            continue
        code = forwarder.run(full)
        if code != 0:
            failed.append(label)
            print(f"{label}: failed with exit code {code}", flush=True)
            if args.stop_on_failure:
                break
        elif not finished(log_path):
            stopped.append(label)
        if forwarder.stopping:
            print("sweep interrupted; run the same command again to resume", flush=True)
            break
    if failed or stopped:
        print(f"{len(failed)} failed, {len(stopped)} stopped before the end: {'; '.join(failed + stopped)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
