"""On a real GPU: tiny jobs end to end through the launcher on CUDA (float32, fp16, and bf16 where
the GPU has it natively), the causal mask and MATE with the teacher cache on and off, a job resumed
with fewer visible GPUs than it started with, and a two-process DDP job.

Every test is marked `cuda` (`pytest -m cuda` selects them) and skipped where no CUDA GPU is
present; the multi-GPU ones are skipped with fewer than two. Jobs run in their own processes (the
local executor, or torchrun), so each sees the CUDA_VISIBLE_DEVICES it was started with.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from harness.launch import main as launch
from harness.run.layout import GridPaths, JobPaths, State

ROOT = Path(__file__).resolve().parents[1]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
BF16_NATIVE = GPUS > 0 and torch.cuda.get_device_capability(0) >= (8, 0)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU")]
two_gpus = pytest.mark.skipif(GPUS < 2, reason="needs at least 2 CUDA GPUs")

CAUSAL_MASKS = '[methods.cakd_gradient]\nterms = ["kd", "fa", "at"]\nmask = "gradient"\n'
MATE_CACHED = '[methods.mate_cached]\nterms = ["mate"]\nteacher_cache = "clean"\n'


def sets(**keys: str) -> list[str]:
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


ONE_EPOCH = sets(**{"grid.seed": "[0]", "train.epochs": "1", "teachers.small.epochs": "1"})


def grid_with(write_grid, tmp_path: Path, extra: str = "") -> Path:
    """The tiny grid (local executor: every job in its own process) with extra method tables."""
    path = tmp_path / "cuda.toml"
    path.write_text(write_grid().read_text() + extra)
    return path


def completed(out: Path, name: str = "tiny") -> tuple[list[dict], list[dict]]:
    """The runs and epochs tables, every run completed (a failure shows its error)."""
    grid = GridPaths(out / name)
    runs = pq.read_table(grid.runs_table).to_pylist()
    epochs = pq.read_table(grid.epochs_table).to_pylist()
    for run in runs:
        assert run["status"] == State.COMPLETED, (run["method"], run.get("error"))
    return runs, epochs


def launch_ok(grid: Path, out: Path, *args: str) -> tuple[list[dict], list[dict]]:
    code = launch([str(grid), "--out", str(out), *args])
    assert code != 2, "the launcher refused the grid or its data (its message is in the captured output)"
    runs, epochs = completed(out)
    assert code == 0
    return runs, epochs


def assert_ran_on_cuda(runs: list[dict], precision: str | None = None) -> None:
    for run in runs:
        assert run["device"].startswith("cuda"), run["device"]
        assert precision is None or run["mixed_precision"] == precision
        assert run["test_top1"] is not None and 0 <= run["test_ece"] <= 100


def test_a_tiny_grid_runs_end_to_end_on_cuda(write_grid, tmp_path):
    """Teacher and kd student: training, the end-of-job metrics (with agreement), saved weights."""
    out = tmp_path / "out"
    runs, epochs = launch_ok(grid_with(write_grid, tmp_path), out, "--set", "grid.method=['kd']", *ONE_EPOCH)
    assert sorted(r["stage"] for r in runs) == ["student", "teacher"] and len(epochs) == 2
    assert_ran_on_cuda(runs, "bf16" if BF16_NATIVE else "no")  # what mixed_precision "auto" resolves to
    student = next(r for r in runs if r["stage"] == "student")
    assert 0 <= student["agreement_ensemble"] <= 100 and list(json.loads(student["agreement_teachers"])) == ["small"]
    for run in runs:
        bins = json.loads(run["test_reliability"])
        assert len(bins) == 15 and sum(b["count"] for b in bins) == 100  # limit_test
        assert GridPaths(out / "tiny").job(run["job_key"]).model.is_file()
    confusion = pq.read_table(GridPaths(out / "tiny").confusion_table).to_pylist()
    assert sum(c["count"] for c in confusion) == 2 * 100


@pytest.mark.parametrize("precision", [
    "no", "fp16",
    pytest.param("bf16", marks=pytest.mark.skipif(not BF16_NATIVE, reason="bf16 needs compute capability ≥ 8.0"))])
def test_mixed_precision_on_cuda(write_grid, tmp_path, precision):
    runs, epochs = launch_ok(grid_with(write_grid, tmp_path), tmp_path / "out", "--set", "grid.method=['ce']",
                             *ONE_EPOCH, *sets(**{"train.mixed_precision": precision}))
    assert_ran_on_cuda(runs, precision)
    assert all(math.isfinite(e["train_loss"]) for e in epochs)  # fp16: the loss scaler works


def test_the_causal_mask_on_cuda(write_grid, tmp_path):
    grid = grid_with(write_grid, tmp_path, CAUSAL_MASKS)
    runs, epochs = launch_ok(grid, tmp_path / "out", "--set", "grid.method=['cakd', 'cakd_gradient']", *ONE_EPOCH)
    assert_ran_on_cuda(runs)
    students = {r["job_key"] for r in runs if r["stage"] == "student"}
    rows = [e for e in epochs if e["job_key"] in students]
    assert len(rows) == 2 and all(0 < e["mask_kept_fraction"] <= 1 and e["loss_fa"] > 0 for e in rows)


def test_mate_with_the_teacher_cache_on_and_off_on_cuda(write_grid, tmp_path):
    out = tmp_path / "out"
    grid = grid_with(write_grid, tmp_path, MATE_CACHED)
    runs, epochs = launch_ok(grid, out, "--set", "grid.method=['mate', 'mate_cached']", *ONE_EPOCH)
    assert_ran_on_cuda(runs)
    students = {r["job_key"] for r in runs if r["stage"] == "student"}
    rows = [e for e in epochs if e["job_key"] in students]
    assert len(rows) == 2
    assert all(e["mate_weight_small"] == pytest.approx(1) and e["loss_cam"] > 0 and e["loss_kd"] > 0 for e in rows)
    (cache,) = [p for p in (out / "tiny" / "teacher_cache").iterdir() if p.is_dir()]
    assert (cache / "manifest.json").is_file()


# ---------------------------------------------------------------------- several GPUs


def env_with_gpus(devices: str) -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": devices}


def launch_in_process_group(grid: Path, out: Path, args: list[str], devices: str) -> subprocess.Popen:
    """The launcher and its job in their own session (killable together), seeing `devices`."""
    return subprocess.Popen([sys.executable, "-m", "harness.launch", str(grid), "--out", str(out), *args],
                            cwd=ROOT, env=env_with_gpus(devices), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def launch_seeing(grid: Path, out: Path, args: list[str], devices: str) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.launch", str(grid), "--out", str(out), *args],
                          cwd=ROOT, env=env_with_gpus(devices), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text()[-chars:] if path.is_file() else f"(no {path.name})"


def kill_after_the_first_checkpoint(proc: subprocess.Popen, jobs: Path) -> JobPaths:
    """Kill the launcher and its job once the job has logged an epoch (its checkpoint is written
    before); return the job's folder."""
    deadline = time.time() + 300
    logged = lambda: any(JobPaths(f).epochs.exists() for f in jobs.glob("*"))
    while time.time() < deadline and not logged() and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (job,) = map(JobPaths, jobs.iterdir())
    assert not job.result.exists(), "the job finished before it could be killed"
    assert job.checkpoint.exists()
    return job


@two_gpus
def test_a_job_started_with_every_gpu_visible_resumes_with_one(write_grid, tmp_path):
    """The checkpoint of a run that saw every GPU resumes where only GPU 0 is visible, and (with
    deterministic kernels) ends with the numbers of an uninterrupted run."""
    grid = grid_with(write_grid, tmp_path)
    args = sets(**{"grid.method": "['ce']", "grid.seed": "[0]", "train.epochs": "10", "data.limit_train": "500",
                   "train.deterministic": "true"})
    every = ",".join(str(i) for i in range(GPUS))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    job = kill_after_the_first_checkpoint(launch_in_process_group(grid, killed, args, every),
                                          GridPaths(killed / "tiny").jobs)
    launch_seeing(grid, killed, args, "0")
    assert "resuming after epoch" in job.log.read_text()
    launch_seeing(grid, clean, args, "0")
    (resumed,), epochs_resumed = completed(killed)
    (uninterrupted,), epochs_clean = completed(clean)
    assert resumed["attempts"] == 2 and [e["epoch"] for e in epochs_resumed] == list(range(1, 11))
    for column in ("test_top1", "best_val_top1", "test_top1_at_best_val"):
        assert resumed[column] == uninterrupted[column], column
    for e_resumed, e_clean in zip(epochs_resumed, epochs_clean):
        assert (e_resumed["train_loss"], e_resumed["val_top1"]) == (e_clean["train_loss"], e_clean["val_top1"])


@two_gpus
def test_a_two_process_ddp_job_under_torchrun(write_grid, tmp_path):
    """A job planned for two GPUs (as a SLURM grid with gpus_per_job = 2 plans it: the rank count
    is in its key) and run by torchrun, one rank per GPU over NCCL; rank 0 writes."""
    from harness.analysis import collect
    from tests.conftest import planned_jobs

    out = tmp_path / "out"
    (paths,) = planned_jobs(write_grid(executor="slurm"), out, "--set", "grid.method=['ce']",
                            *sets(**{"grid.seed": "[0]", "train.epochs": "2", "cluster.gpus_per_job": "2"}))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "harness.job", str(paths.folder)], cwd=ROOT, env=env_with_gpus("0,1"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:] + tail(paths.log)
    collect.collect(out / "tiny")
    (run,), epochs = completed(out)
    assert run["world_size"] == 2 and run["device"] == "cuda:0" and len(epochs) == 2
    assert run["test_top1"] is not None and 0 <= run["test_ece"] <= 100
    assert "× 2 process(es)" in paths.log.read_text()
    assert paths.model.is_file() and paths.confusion.is_file()
