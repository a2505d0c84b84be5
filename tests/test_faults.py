"""Process faults: a second process on a running job, a damaged checkpoint, leftovers of a killed
write, links planted in the results folder, the launcher interrupted or killed on its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from harness.run import job as job_runner
from harness.launch import main as launch

ROOT = Path(__file__).resolve().parents[1]
ONE = ["--set", "grid.method=['ce']", "--set", "grid.seed=[0]"]


def one_job(write_grid, out: Path, *extra: str, executor: str = "debug") -> Path:
    assert launch([str(write_grid(executor=executor)), "--out", str(out), *ONE, *extra]) in (0, 1)
    (folder,) = (out / "tiny" / "jobs").iterdir()
    return folder


def test_a_job_run_by_hand_on_a_running_job_is_refused(write_grid, tmp_path):
    folder = one_job(write_grid, tmp_path / "out", "--set", "train.epochs=1")
    with job_runner.job_lock(folder):
        out = subprocess.run([sys.executable, "-m", "harness.job", str(folder)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is being trained by another process now (pid" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_truncated_checkpoint_is_set_aside_and_the_job_trains_again(write_grid, tmp_path):
    out = tmp_path / "out"
    folder = one_job(write_grid, out, "--set", "train.epochs=2")
    first = pq.read_table(out / "tiny" / "runs.parquet").to_pylist()[0]
    ckpt = folder / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a disk that filled up mid-write, say
    (folder / "result.json").unlink()
    (folder / ".model.pt.x1y2.tmp").write_bytes(b"half")  # and a temp file a killed write left
    one_job(write_grid, out, "--set", "train.epochs=2")
    again = pq.read_table(out / "tiny" / "runs.parquet").to_pylist()[0]
    log = (folder / "log.txt").read_text()
    assert "checkpoint.pt was unreadable" in log and "training starts again from the first epoch" in log
    assert "removed 1 partial file(s)" in log and not list(folder.glob(".*.tmp"))
    assert again["status"] == "completed" and again["test_top1"] == first["test_top1"]  # from scratch, same seed
    assert len(list(folder.glob("checkpoint.pt.unreadable-*"))) == 1


def test_a_link_planted_as_the_log_is_refused_not_followed(write_grid, tmp_path):
    out = tmp_path / "out"
    folder = one_job(write_grid, out, "--set", "train.epochs=1", executor="local")
    target = tmp_path / "elsewhere.txt"
    (folder / "result.json").unlink()
    (folder / "log.txt").unlink()
    (folder / "log.txt").symlink_to(target)
    one_job(write_grid, out, "--set", "train.epochs=1", executor="local")
    assert not target.exists()
    (run,) = pq.read_table(out / "tiny" / "runs.parquet").to_pylist()
    assert run["status"] != "completed"


def _launch_until_first_epoch(write_grid, out: Path) -> tuple[subprocess.Popen, Path]:
    """A launcher in the background, its one job past its first epoch: (launcher, job folder)."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.launch", str(write_grid(executor="local")), "--out",
                             str(out), *ONE, "--set", "train.epochs=8", "--set", "data.limit_train=500"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jobs = out / "tiny" / "jobs"
    _wait_for(lambda: list(jobs.glob("*/epochs.json")))
    (folder,) = jobs.iterdir()
    return proc, folder


def _wait_for(condition, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def _job_processes(folder: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"harness.job {folder}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_the_launcher_interrupted_alone_stops_its_job_promptly(write_grid, tmp_path):
    proc, folder = _launch_until_first_epoch(write_grid, tmp_path / "out")
    proc.send_signal(signal.SIGINT)  # to the launcher only, as `kill -INT <pid>` does
    started = time.time()
    assert proc.wait(timeout=120) == 130
    _wait_for(lambda: not _job_processes(folder), timeout_s=30)
    assert time.time() - started < 60
    assert not (folder / "result.json").exists() and (folder / "checkpoint.pt").exists()


def test_a_killed_launchers_job_finishes_on_its_own(write_grid, tmp_path):
    proc, folder = _launch_until_first_epoch(write_grid, tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)  # the launcher alone; its job is orphaned
    proc.wait()
    _wait_for(lambda: job_runner.read_json(folder / "result.json") is not None)
    assert job_runner.read_json(folder / "result.json")["status"] == "completed"
