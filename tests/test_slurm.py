"""The slurm executor against a real local SLURM (`slurm/local-cluster up`; .ci/run starts one).
Skipped, with the reason, where no SLURM answers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.launch import main as launch
from harness.analysis.status import job_rows
from harness.executors.slurm.queries import ACTIVE


def slurm_up() -> str | None:
    if not shutil.which("sinfo"):
        return "no SLURM installed (run `slurm/local-cluster up`)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        return f"SLURM does not answer: {out.stderr.strip()[:200]} (run `slurm/local-cluster up`)"
    return None


REASON = slurm_up()
if REASON and os.environ.get("KD_REQUIRE_SLURM") == "1":  # CI started one: its absence is a failure
    raise RuntimeError(f"KD_REQUIRE_SLURM=1 but {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))

SLURM = ["--set", "cluster.executor='slurm'", "--set", "cluster.timeout_min=10", "--set", "cluster.cpus_per_task=1",
         "--set", "grid.seed=[0]"]


def queued(row: dict) -> bool:
    """SLURM holds the job's task, queued or running (or does not know it yet)."""
    return bool(row["task"]) and row["slurm"] in ACTIVE | {"UNKNOWN"}


def wait(root: Path | list[Path], timeout: float = 300, until=lambda rows: not any(queued(r) for r in rows)
         ) -> list[dict]:
    """Poll the status of the grid (or grids, their rows together) until `until(rows)`. SLURM holds
    a requeued job back for about two minutes (its begin time); tests release such jobs at once,
    with the grid's own time limit back, to stay short."""
    roots, rows = (root if isinstance(root, list) else [root]), []
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [r for each in roots for r in job_rows(each)]
        if until(rows):
            return rows
        for r in rows:  # requeued: release now, with the grid's own time limit back
            if r["slurm_task"].reason == "BeginTime":
                subprocess.run(["scontrol", "update", f"jobid={r['task']}", "StartTime=now", "TimeLimit=10"],
                               capture_output=True)
        time.sleep(1)
    raise AssertionError(f"timed out: {[(r['job'].key, r['state'], r['reason']) for r in rows]}")


def wait_for_collect(root: Path, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (root / "runs.parquet").exists():
            runs = pq.read_table(root / "runs.parquet").to_pylist()
            if all(r["status"] == "completed" for r in runs):
                return runs
        time.sleep(1)
    raise AssertionError("the collect job did not write a completed runs.parquet")


def test_grid_on_slurm_end_to_end_and_relaunch_submits_nothing_twice(write_grid, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(write_grid()), "--out", str(out), *SLURM]
    assert launch(args) == 0
    said = capsys.readouterr().out
    assert "queued 3 jobs in 3 submission(s)" in said and "harness.status" in said  # teacher, ce, kd after the teacher
    assert launch(args) == 0  # while queued or running: nothing new
    said = capsys.readouterr().out
    assert "nothing to submit" in said or "queued 0" not in said
    root = out / "tiny"
    ids = [json.loads(p.read_text())["task_id"] for p in root.glob("jobs/*/slurm.json")]
    assert len(ids) == len(set(ids)) == 3
    rows = wait(root)
    assert {r["state"] for r in rows} == {"completed"}
    runs = wait_for_collect(root)  # written by the grid's own collect job
    assert all(r["slurm_job_id"] in ids and r["attempts"] == 1 and r["cpu_hours"] > 0 for r in runs)
    teacher = next(r for r in runs if r["stage"] == "teacher")
    kd = next(r for r in runs if r["method"] == "kd")
    deps = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,Start", "-j", ",".join({i.split('_')[0] for i in ids})],
                          capture_output=True, text=True).stdout
    start = dict(line.split("|") for line in deps.splitlines())
    assert start[kd["slurm_job_id"]] >= start[teacher["slurm_job_id"]]  # students after their teacher
    assert launch(args) == 0 and "nothing to submit" in capsys.readouterr().out


@pytest.mark.parametrize("setting, key, words", [
    ("cluster.partition='nosuchpart'", "cluster.partition", "invalid partition"),
    ("cluster.cpus_per_task=64", "cluster.cpus_per_task", "node configuration is not available")])  # a 2-CPU node
def test_refused_settings_fail_before_anything_is_queued(write_grid, tmp_path, capsys, setting, key, words):
    out = tmp_path / "out"
    code = launch([str(write_grid()), "--out", str(out), *SLURM, "--set", setting])
    assert code == 2
    said = capsys.readouterr().out
    assert f"{key}: SLURM refused" in said and words in said.lower()
    assert not list(out.glob("tiny/jobs/*/slurm.json"))


def test_cancelled_job_stops_at_once_and_is_rerun_by_next_launch(write_grid, tmp_path):
    """scancel mid-training: the task stops within seconds (not SLURM's KillWait later), with no
    result; status says interrupted, as runs.parquet does, and why."""
    out = tmp_path / "out"
    args = [str(write_grid()), "--out", str(out), *SLURM, "--set", "grid.method=['ce']", "--set", "train.epochs=30"]
    assert launch(args) == 0
    root = out / "tiny"
    (row,) = wait(root, until=lambda rows: rows[0]["state"] == "running" and rows[0]["epoch"] >= 1)
    paths = row["folder"]
    pid = int((paths / ".job.lock").read_text().split()[1])  # "pid N on host": the task's process
    subprocess.run(["scancel", row["task"]], check=True)
    cancelled = time.time()
    while alive(pid) and time.time() - cancelled < 30:
        time.sleep(0.1)
    stopped_s = time.time() - cancelled
    assert stopped_s < 6, f"the task trained on {stopped_s:.1f}s after scancel"
    (row,) = wait(root, until=lambda rows: not queued(rows[0]))
    assert (row["state"], row["slurm"], row["reason"]) == (
        "interrupted", "CANCELLED", "cancelled; the next launch resumes it")
    assert not (paths / "result.json").exists()
    assert "interrupted (SIGTERM from SLURM)" in (paths / "log.txt").read_text()
    from harness.analysis.status import main as status

    assert status([str(root)]) == 1
    assert launch(args) == 0
    (again,) = job_rows(root)
    assert again["task"] != row["task"]
    subprocess.run(["scancel", again["task"]], check=False)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


TWO_TEACHER_SETS = """
name = "tiny"
[data]
root = "{root}"
val_size = 100
limit_train = 300
limit_test = 100
[train]
arch = "resnet20"
epochs = 1
batch_size = 32
lr = 0.1
schedule = "cosine"
eval_batch_size = 200
[teachers.small]
arch = "resnet20"
seed = 7
[teachers.big]
arch = "resnet20"
seed = 8
[grid]
method = ["ce", "kd"]
seed = [0]
teacher_set = [["small"], ["big"]]
[cluster]
executor = "{executor}"
"""


def test_a_cancelled_teacher_cancels_only_its_own_students(write_grid, tmp_path):
    """Teachers small and big, students ce (no teacher), kd with small, kd with big: big's task is
    cancelled right after submission; SLURM cancels kd-big alone, the others complete."""
    out = tmp_path / "out"
    assert launch([str(write_grid(TWO_TEACHER_SETS)), "--out", str(out), *SLURM]) == 0
    root = out / "tiny"
    rows = {(r["job"].method, r["job"].teacher_set, r["job"].seed): r for r in job_rows(root)}
    big = rows[("ce", "none", 8)]
    subprocess.run(["scancel", big["task"]], check=True)
    rows = {(r["job"].method, r["job"].teacher_set, r["job"].seed): r for r in wait(root)}
    cancelled = rows.pop(("ce", "none", 8))
    assert {k: r["state"] for k, r in rows.items()} == {
        ("ce", "none", 7): "completed", ("ce", "none", 0): "completed", ("kd", "small", 0): "completed",
        ("kd", "big", 0): "pending"}
    assert cancelled["slurm"] == "CANCELLED" and cancelled["state"] in ("pending", "interrupted")
    assert rows[("kd", "big", 0)]["slurm"] == "CANCELLED" and rows[("kd", "big", 0)]["attempts"] == 0
    assert rows[("kd", "big", 0)]["reason"] == f"cancelled: teacher big was cancelled (task {big['task']})"


def test_requeue_and_timeout_resume_to_the_uninterrupted_result(write_grid, tmp_path):
    common = [*SLURM, "--set", "grid.method=['ce']", "--set", "data.limit_train=500", "--set", "train.epochs=12"]
    clean, requeued, timed = tmp_path / "clean", tmp_path / "requeued", tmp_path / "timed"
    grid = str(write_grid())
    assert launch([grid, "--out", str(clean), *common]) == 0
    assert launch([grid, "--out", str(requeued), *common]) == 0
    assert launch([grid, "--out", str(timed), *common, "--set", "cluster.signal_delay_s=50"]) == 0
    (row,) = wait(requeued / "tiny", until=lambda rows: rows[0]["epoch"] >= 2)
    subprocess.run(["scontrol", "requeue", row["task"]], check=True)
    # A time limit that runs out mid-training: cut the running job's limit to 1 minute, so SLURM
    # sends the USR2 warning (signal_delay_s before the limit) while training, not at python's
    # start-up (SLURM may signal up to 60 s early, which would kill a job started with 1 minute).
    (row,) = wait(timed / "tiny", until=lambda rows: rows[0]["epoch"] >= 2)
    subprocess.run(["scontrol", "update", f"jobid={row['task']}", "TimeLimit=1"], check=True)
    results = {}
    # all three together: a requeued job is released at once, whichever grid it is in (left in its
    # requeue delay, the timed job would restart with its 1-minute limit and be killed at start-up)
    rows = wait([clean / "tiny", requeued / "tiny", timed / "tiny"], timeout=900)
    for out, row in zip((clean, requeued, timed), rows):
        assert row["state"] == "completed", (out, row)
        results[out.name] = json.loads((row["folder"] / "result.json").read_text())
    assert results["requeued"]["attempts"] >= 2 and results["timed"]["attempts"] >= 2
    # scontrol requeue stopped the task at once (SIGTERM); the time limit requeued it through USR2
    assert "interrupted (SIGTERM from SLURM)" in (requeued / "tiny" / "jobs" / row["job"].key / "log.txt").read_text()
    assert "interrupted (exit -1)" in (timed / "tiny" / "jobs" / row["job"].key / "log.txt").read_text()
    for name in ("requeued", "timed"):
        for metric in ("test_top1", "best_val_top1", "test_top1_at_best_val"):
            assert results[name][metric] == results["clean"][metric], (name, metric)


def test_two_tasks_run_two_ranks(write_grid, tmp_path):
    out = tmp_path / "out"
    args = [str(write_grid()), "--out", str(out), *SLURM, "--set", "grid.method=['ce']",
            "--set", "cluster.tasks_per_job=2"]
    assert launch(args) == 0
    (row,) = wait(out / "tiny")
    assert row["state"] == "completed"
    result = json.loads((row["folder"] / "result.json").read_text())
    assert result["world_size"] == 2 and result["test_top1"] > 30
    assert "× 2 process(es)" in (row["folder"] / "log.txt").read_text()


def test_launcher_killed_mid_submission_leaves_nothing_orphaned(write_grid, tmp_path, monkeypatch, capsys):
    from harness.executors.slurm import SlurmExecutor

    def killed(self, tasks):  # sbatch accepted the array, then the launcher died before its records
        raise KeyboardInterrupt

    out = tmp_path / "out"
    args = [str(write_grid()), "--out", str(out), *SLURM, "--set", "grid.method=['ce']", "--set", "train.epochs=30"]
    with monkeypatch.context() as patch:
        patch.setattr(SlurmExecutor, "write_records", killed)
        assert launch(args) == 130
    root = out / "tiny"
    assert (root / "slurm" / "submitting.json").exists() and not list(root.glob("jobs/*/slurm.json"))
    queue = lambda: set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True).stdout.split())
    before = queue()
    assert launch(args) == 0  # finds the array by its comment instead of queuing the job again
    assert "1 queued or running (left alone)" in capsys.readouterr().out
    (row,) = job_rows(root)
    assert queued(row) and row["task"] in before
    assert queue() <= before  # nothing new was queued
    subprocess.run(["scancel", row["task"]], check=False)


def test_launcher_as_a_batch_job(write_grid, tmp_path):
    """slurm/launch.sbatch: the launcher runs as a job and queues the grid's arrays from inside it;
    submitted from another folder than the repository's, with paths relative to that folder."""
    root_dir = Path(__file__).resolve().parents[1]
    write_grid()
    venv = Path(sys.executable).parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("KD_VENV", "KD_REPO", "PYTHONPATH")}
    if venv.resolve() != (root_dir / ".venv").resolve():  # else the script's default, the repository's .venv
        env["KD_VENV"] = str(venv)
    job = subprocess.run(["sbatch", "--parsable", "--wait", str(root_dir / "slurm" / "launch.sbatch"), "grid.toml",
                          "--out", "out", *SLURM, "--set", "grid.method=['ce']"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    logs = list(tmp_path.glob("kd-launch-*.out"))  # the script's own --output, in the folder it was sent from
    assert job.returncode == 0, job.stderr + "".join(p.read_text() for p in logs)
    assert len(logs) == 1 and "queued 1 jobs" in logs[0].read_text()
    (row,) = wait(tmp_path / "out" / "tiny")
    assert row["state"] == "completed"


def test_wait_follows_the_grid_to_its_results(write_grid, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(write_grid()), "--out", str(out), *SLURM, "--set", "grid.method=['ce']", "--wait"]
    assert launch(args) == 0  # returns only when the grid has ended, with the summary
    said = capsys.readouterr().out
    assert "queued 1 jobs" in said and "test top-1" in said
    (run,) = pq.read_table(out / "tiny" / "runs.parquet").to_pylist()
    assert run["status"] == "completed"
