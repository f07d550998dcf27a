"""One writer per run folder: the lock refuses a second writer, takes over a dead one's, and the
sweep ends its training's process group when it is stopped (docs/distributed.md)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train_spot
from ground.errors import UserError
from utils.checkpoint import load_checkpoint
from utils.errors import run_cli
from utils.run import LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "shapes", "--image_size", "16", "--which_encoder", "vit_patch_p2", "--no_pretrained",
    "--num_slots", "3", "--slot_size", "16", "--mlp_hidden_size", "32", "--mlp_dec_hidden", "32",
    "--dec_type", "mlp", "--train_permutations", "standard", "--use_slot_proj", "False", "--lr_warmup_steps", "0",
    "--batch_size", "4", "--eval_batch_size", "8", "--train_samples", "16", "--val_samples", "8",
    "--num_workers", "0", "--epochs", "1", "--data_seed", "0",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# A process that holds a run folder's lock as a training would (flock + its record), until killed.
HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "earlier"}).encode())
print("ready", flush=True)
time.sleep(120)
"""
# train_spot with 0.25 s per training step, so that a second process surely meets it mid-run.
SLOW_TRAIN = """
import sys, time
from models.spot import SPOT
forward = SPOT.forward
def slow(self, batch):
    if self.training:
        time.sleep(0.25)
    return forward(self, batch)
SPOT.forward = slow
import train_spot
from utils.errors import run_cli
run_cli(lambda: train_spot.main(sys.argv[1:]))
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def hold_lock(run: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
    except BaseException:
        holder.kill()
        raise
    return holder


@pytest.fixture()
def finished_run(tmp_path: Path) -> Path:
    # Through run_cli, as from the command line: the lock is released at the end.
    run_cli(lambda: train_spot.main([*TINY, "--log_path", str(tmp_path / "logs"), "--run_name", "x"]))
    return next((tmp_path / "logs").iterdir())


def test_a_second_writer_is_refused_with_one_line(finished_run: Path, capsys) -> None:
    holder = hold_lock(finished_run)
    try:
        before = load_checkpoint(finished_run)["step"]
        capsys.readouterr()
        for argv in (["--resume", str(finished_run), "--epochs", "3"],  # resuming by name
                     [*TINY, "--epochs", "3", "--log_path", str(finished_run.parent), "--run_name", "x",
                      "--auto_resume"]):  # the same command again, as a re-run sweep starts it
            with pytest.raises(SystemExit) as stop:
                run_cli(lambda: train_spot.main(argv))
            assert stop.value.code == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"is being written by PID {holder.pid} on host" in err[0], err
            assert "one writer" in err[0] and "started earlier" in err[0]
        assert load_checkpoint(finished_run)["step"] == before  # untouched
        assert len(list(finished_run.parent.iterdir())) == 1  # no second run folder either
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_writers_lock_is_taken_over_with_a_notice(finished_run: Path, caplog, monkeypatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (finished_run / LOCK_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                                      "started": "2020-01-01T00:00:00"}))
    from utils.train import Trainer

    seen, fit = [], Trainer.fit

    def fit_and_look(self):
        seen.append(json.loads((self.run_dir / LOCK_FILE).read_text()))  # the lock while training
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", fit_and_look)
    caplog.clear()
    run_cli(lambda: train_spot.main(["--resume", str(finished_run), "--epochs", "2"]))
    err = caplog.text
    assert f"took over the lock of run folder {finished_run} from PID {dead.pid}" in err and "no longer runs" in err
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == os.uname().nodename and seen[0]["started"]
    assert load_checkpoint(finished_run)["step"] == 8
    assert not (finished_run / LOCK_FILE).exists()  # released at the end


def test_a_read_only_run_folder_gives_one_line(finished_run: Path, capsys, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permissions: use a read-only mount instead
        mount = tmp_path / "ro"
        mount.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True).returncode:
            pytest.skip("needs a read-only folder: run as a normal user or where tmpfs can be mounted")
        subprocess.run(["cp", "-r", str(finished_run), str(mount)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        run = mount / finished_run.name
    else:
        run = finished_run
        run.chmod(0o555)
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli(lambda: train_spot.main(["--resume", str(run), "--epochs", "2"]))
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is read-only" in err and "resume the copy" in err, err
        assert "Traceback" not in err
        # Past the lock, TensorBoard's writer thread meets the same folder: still one line, no thread traceback.
        from utils.logging import RunLogger

        with pytest.raises(UserError, match="cannot write TensorBoard events into"):
            RunLogger(run)
        time.sleep(0.2)  # the writer thread has failed by now
        assert "Traceback" not in capsys.readouterr().err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(tmp_path / "ro")], check=False)
        else:
            run.chmod(0o755)


@pytest.mark.slow
def test_two_training_processes_on_one_folder(tmp_path: Path) -> None:
    """The issue's case: the same --auto_resume command twice; the second stops, the first finishes (about 20 s)."""
    argv = [*TINY, "--epochs", "10", "--eval_every", "2", "--log_path", str(tmp_path), "--run_name", "x",
            "--auto_resume", "--checkpoint_every", "4"]
    first = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, *argv], cwd=REPO, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list(tmp_path.glob(f"*/checkpoint.pt.tar")) or first.poll() is not None, what="a checkpoint")
    second = subprocess.run([sys.executable, "train_spot.py", *argv], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=120)
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2 and f"is being written by PID {first.pid}" in second.stderr, second.stderr[-2000:]
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    run = next(tmp_path.iterdir())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [8, 16, 24, 32, 40]  # no step twice
    assert len(list(run.glob("events.out.tfevents.*"))) == 1 and load_checkpoint(run)["step"] == 40


# --- the sweep ---------------------------------------------------------------------------------
# A stand-in training for the sweep: writes its PID and a grandchild's (as torchrun's workers), then
# waits; IGNORE makes it ignore SIGTERM as a hung training would.
FAKE_TRAINING = """
import os, signal, subprocess, sys, time
if "IGNORE" in os.environ:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
out = sys.argv[sys.argv.index("--log_path") + 1]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {worker.pid}")
os.replace(os.path.join(out, "pids.tmp"), os.path.join(out, "pids"))
time.sleep(120)
"""


def start_sweep(out: Path, command: list[str], *extra: str, env: dict | None = None,
                output: int = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "scripts/sweep.py", "--out", str(out), "--seeds", "0", *extra, "--",
                             *command], cwd=REPO, env=env or ENV, stdout=output, stderr=output, text=True)


def fake_training_pids(out: Path, sweep: subprocess.Popen) -> tuple[int, int]:
    pids = out / "base" / "seed_0" / "pids"
    wait_until(lambda: pids.is_file() or sweep.poll() is not None, what="the training to start")
    assert sweep.poll() is None, sweep.communicate()
    training, worker = map(int, pids.read_text().split())
    return training, worker


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_sweep_ends_its_training_and_its_workers(tmp_path: Path, sig: int) -> None:
    sweep = start_sweep(tmp_path, [sys.executable, "-c", FAKE_TRAINING])
    training, worker = fake_training_pids(tmp_path, sweep)
    sweep.send_signal(sig)
    stdout, stderr = sweep.communicate(timeout=30)
    assert sweep.returncode == 1 and "sweep interrupted" in stdout, stdout + stderr
    wait_until(lambda: not alive(training) and not alive(worker), timeout=10, what="the training to end")


def test_a_training_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    sweep = start_sweep(tmp_path, [sys.executable, "-c", FAKE_TRAINING], "--grace_period", "0.5",
                        env={**ENV, "IGNORE": "1"})
    training, worker = fake_training_pids(tmp_path, sweep)
    started = time.monotonic()
    sweep.send_signal(signal.SIGHUP)  # the terminal closed
    stdout, _ = sweep.communicate(timeout=30)
    assert "did not stop within --grace_period 0.5 s; killing it" in stdout
    assert time.monotonic() - started < 10  # not the default 60 s
    wait_until(lambda: not alive(training) and not alive(worker), timeout=10, what="the training to be killed")


@pytest.mark.slow
def test_a_rerun_sweep_after_kill_9_does_not_start_a_second_writer(tmp_path: Path) -> None:
    """kill -9 leaves the sweep's training running; a re-run meets its lock (about 15 s)."""
    command = [sys.executable, "-c", SLOW_TRAIN, *TINY, "--epochs", "40"]
    sweep = start_sweep(tmp_path, command, output=subprocess.DEVNULL)  # the orphan would hold a pipe open
    locks = lambda: list((tmp_path / "base" / "seed_0").glob(f"*/{LOCK_FILE}"))  # noqa: E731
    wait_until(lambda: locks() or sweep.poll() is not None, what="the training's lock")
    sweep.kill()
    sweep.wait()
    orphan = json.loads(locks()[0].read_text())["pid"]
    try:
        assert alive(orphan)
        again = start_sweep(tmp_path, command)
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 1 and "failed with exit code 2" in stdout, stdout + stderr
        assert f"is being written by PID {orphan}" in stderr and "Traceback" not in stderr, stderr
        assert len(list((tmp_path / "base" / "seed_0").iterdir())) == 1  # no second run folder
        assert alive(orphan)  # the first writer goes on undisturbed
    finally:
        os.kill(orphan, signal.SIGKILL)
