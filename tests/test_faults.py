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
import pytest

from harness.run import job as job_runner
from harness.run.layout import GridPaths, JobPaths, State
from harness.launch import main as launch

ROOT = Path(__file__).resolve().parents[1]
ONE = ["--set", "grid.method=['ce']", "--set", "grid.seed=[0]"]


def one_job(write_grid, out: Path, *extra: str, executor: str = "debug") -> JobPaths:
    assert launch([str(write_grid(executor=executor)), "--out", str(out), *ONE, *extra]) in (0, 1)
    (folder,) = GridPaths(out / "tiny").jobs.iterdir()
    return JobPaths(folder)


def runs(out: Path) -> list[dict]:
    return pq.read_table(GridPaths(out / "tiny").runs_table).to_pylist()


def test_a_job_run_by_hand_on_a_running_job_is_refused(write_grid, tmp_path):
    job = one_job(write_grid, tmp_path / "out", "--set", "train.epochs=1")
    with job_runner.job_lock(job.folder):
        out = subprocess.run([sys.executable, "-m", "harness.job", str(job.folder)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is being trained by another process now (pid" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_truncated_checkpoint_is_set_aside_and_the_job_trains_again(write_grid, tmp_path):
    out = tmp_path / "out"
    job = one_job(write_grid, out, "--set", "train.epochs=2")
    first = runs(out)[0]
    ckpt = job.checkpoint
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # a disk that filled up mid-write, say
    job.result.unlink()
    (job.folder / f".{job.model.name}.x1y2.tmp").write_bytes(b"half")  # and a temp file a killed write left
    one_job(write_grid, out, "--set", "train.epochs=2")
    again = runs(out)[0]
    log = job.log.read_text()
    assert f"{ckpt.name} was unreadable" in log and "training starts again from the first epoch" in log
    assert "removed 1 partial file(s)" in log and not list(job.folder.glob(".*.tmp"))
    assert again["status"] == State.COMPLETED and again["test_top1"] == first["test_top1"]  # from scratch, same seed
    assert len(list(job.folder.glob(f"{ckpt.name}.unreadable-*"))) == 1


def test_a_link_planted_as_the_log_is_refused_not_followed(write_grid, tmp_path):
    out = tmp_path / "out"
    job = one_job(write_grid, out, "--set", "train.epochs=1", executor="local")
    target = tmp_path / "elsewhere.txt"
    job.result.unlink()
    job.log.unlink()
    job.log.symlink_to(target)
    one_job(write_grid, out, "--set", "train.epochs=1", executor="local")
    assert not target.exists()
    (run,) = runs(out)
    assert run["status"] != State.COMPLETED


def _launch_until_first_epoch(write_grid, out: Path, sigint_ignored: bool = False) -> tuple[subprocess.Popen, JobPaths]:
    """A launcher in the background, its one job past its first epoch: (launcher, job folder).
    `sigint_ignored`: started as a script's `cmd &` starts it, SIGINT ignored (and inherited so)."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen([sys.executable, "-m", "harness.launch", str(write_grid(executor="local")), "--out",
                             str(out), *ONE, "--set", "train.epochs=8", "--set", "data.limit_train=500"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=ignore)
    jobs = GridPaths(out / "tiny").jobs
    _wait_for(lambda: any(JobPaths(f).epochs.exists() for f in jobs.glob("*")))
    (folder,) = jobs.iterdir()
    return proc, JobPaths(folder)


def _wait_for(condition, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def _job_processes(folder: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"harness.job {folder}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "started-in-background"])
def test_the_launcher_interrupted_alone_stops_its_job_promptly(write_grid, tmp_path, sigint_ignored):
    proc, job = _launch_until_first_epoch(write_grid, tmp_path / "out", sigint_ignored)
    proc.send_signal(signal.SIGINT)  # to the launcher only, as `kill -INT <pid>` does
    started = time.time()
    assert proc.wait(timeout=120) == 130
    _wait_for(lambda: not _job_processes(job.folder), timeout_s=30)
    assert time.time() - started < 60
    assert not job.result.exists() and job.checkpoint.exists()
    assert "interrupted: no result" in job.log.read_text()  # it stopped itself, not killed after the grace


def test_a_killed_launchers_job_finishes_on_its_own(write_grid, tmp_path):
    proc, job = _launch_until_first_epoch(write_grid, tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)  # the launcher alone; its job is orphaned
    proc.wait()
    # its seven remaining epochs take seconds on a quiet machine; a loaded one (CI beside other
    # work) has been seen training them at 3-6 images/s, so the wait is long: it is no speed test
    _wait_for(lambda: job.read_result() is not None, timeout_s=1200)
    assert job.read_result()["status"] == State.COMPLETED
