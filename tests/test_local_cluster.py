"""Tests against a REAL SLURM (e.g. the one `sudo slurm/local-cluster up` starts): sbatch, sacct, submitit.

They skip, saying why, where no SLURM answers. With KD_REQUIRE_SLURM=1 (CI, after `local-cluster up`)
they fail instead of skipping, so a broken cluster cannot pass unnoticed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

HINT = "start one with `sudo slurm/local-cluster up`"


def _run(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _unavailable(reason: str):
    if os.environ.get("KD_REQUIRE_SLURM") == "1":
        pytest.fail(f"KD_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(f"no usable SLURM: {reason} ({HINT})")


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of a SLURM that answers and has a usable node; skip otherwise."""
    for tool in ("sinfo", "sbatch", "sacct", "srun"):
        if shutil.which(tool) is None:
            _unavailable(f"`{tool}` is not installed")
    try:
        info = _run("sinfo", "-h", "-o", "%P %T", timeout=20)
    except subprocess.TimeoutExpired:
        _unavailable("`sinfo` did not answer within 20 s")
    if info.returncode != 0:
        _unavailable(f"`sinfo` failed: {_last_line(info.stderr or info.stdout)}")
    rows = [line.split() for line in info.stdout.splitlines() if line.strip()]
    usable = [p for p, state in rows if state in {"idle", "mixed", "allocated", "completing"}]
    if not usable:
        _unavailable(f"no node is up (sinfo: {info.stdout.strip() or 'empty'})")
    default = [p for p in usable if p.endswith("*")]
    name = (default or usable)[0].rstrip("*")
    try:
        acct = _run("sacct", "-n", "-X", "-S", "now-1hours", timeout=20)
    except subprocess.TimeoutExpired:
        _unavailable("`sacct` did not answer within 20 s (is slurmdbd running?)")
    if acct.returncode != 0:
        _unavailable(f"`sacct` failed (no accounting?): {_last_line(acct.stderr)}")
    return name


def _sacct_states(job_id: str) -> dict[str, str]:
    """JobID -> State from sacct (allocations only, array tasks expanded)."""
    out = _run("sacct", "-j", job_id, "-n", "-X", "-P", "-o", "JobID,State").stdout
    states = {}
    for line in out.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            states[jid] = state.split()[0] if state else state
    return states


def _wait_sacct(job_id: str, want: int, timeout: float = 30) -> dict[str, str]:
    """Poll sacct until `want` rows of job_id are all in a final state (slurmdbd lags a little)."""
    deadline = time.monotonic() + timeout
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED"}
    while True:
        states = _sacct_states(job_id)
        if len(states) >= want and all(s in final for s in states.values()):
            return states
        if time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_sbatch_wait_then_sacct_completed(partition: str, tmp_path: Path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/bash\necho hello from job $SLURM_JOB_ID on $(hostname -s)\n")
    res = _run(
        "sbatch", "--wait", "--parsable", "-p", partition, "-t", "1", "-n", "1", "--mem=100M",
        "-J", "kd-test-hello", "-D", str(tmp_path), "-o", str(tmp_path / "out-%j.txt"), str(script),
        timeout=50,
    )
    assert res.returncode == 0, f"sbatch --wait failed: {res.stderr}"
    job_id = res.stdout.strip().split(";")[0]
    assert job_id.isdigit(), res.stdout
    assert f"hello from job {job_id}" in (tmp_path / f"out-{job_id}.txt").read_text()
    states = _wait_sacct(job_id, want=1)
    assert states.get(job_id) == "COMPLETED", f"sacct -j {job_id}: {states}"
    # the exact command the README names
    state = _run("sacct", "-j", job_id, "-n", "-X", "-o", "State").stdout.split()
    assert state == ["COMPLETED"]


def test_submitit_map_array(partition: str, tmp_path: Path):
    submitit = pytest.importorskip("submitit")

    def square_plus(x: int) -> tuple[int, str]:  # nested: cloudpickle ships it by value
        import os

        return x * x + 1, os.environ["SLURM_ARRAY_JOB_ID"]

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    # submitit asks SLURM for USR2 `signal_delay_s` (default 90) seconds before the time limit; with a
    # 1-minute limit that is "at once", and a task still importing Python dies of the signal (FAILED).
    executor.update_parameters(timeout_min=1, slurm_partition=partition, slurm_signal_delay_s=20)
    jobs = executor.map_array(square_plus, [1, 2, 3])
    assert len(jobs) == 3
    array_id = jobs[0].job_id.split("_")[0]
    assert all(j.job_id.startswith(array_id + "_") for j in jobs)
    results = [j.result() for j in jobs]  # raises if a task failed (its stderr in the message)
    assert [r[0] for r in results] == [2, 5, 10]
    assert {r[1] for r in results} == {array_id}
    states = _wait_sacct(array_id, want=3)
    assert states == {f"{array_id}_{i}": "COMPLETED" for i in range(3)}, states
    # submitit's own view, read from sacct (job.state is cached between watcher polls: force one)
    assert [j.get_info(mode="force").get("State") for j in jobs] == ["COMPLETED"] * 3
