"""What the executor and `status`/`collect` ask SLURM: task states (sacct + squeue), accounting
(sacct), the largest array, the arrays holding a comment. Each runs its command through
`run_command`, which a test replaces (tests/test_slurm_logic.py feeds recorded outputs)."""
from __future__ import annotations

import shlex
import subprocess

from harness.executors import ExecutorError

# SLURM's words for a task's state
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}  # queued or running: a launch leaves it alone
MOVING = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"}  # active, and not held or suspended
FINISHED_BAD = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize


class SlurmError(ExecutorError):
    """SLURM refused something; the message is SLURM's own, with the grid key it concerns."""


def run_command(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise SlurmError("cluster", f"`{shlex.join(args)}` failed: {(out.stderr or out.stdout).strip()}")
    return out


def array_ids(task_ids: list[str]) -> str:
    """The `-j` argument that selects the arrays (or plain jobs) of task ids `123_4` or `123`."""
    return ",".join(sorted({i.split("_")[0] for i in task_ids}))


def task_states(ids: list[str]) -> dict[str, str]:
    """SLURM's state of each task id (`123_4` or `123`): sacct for what started or ended, squeue
    (one line per array task) for what waits or runs, which wins; UNKNOWN where neither knows it."""
    if not ids:
        return {}
    arrays = array_ids(ids)
    acct = run_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", arrays], check=False)
    queue = run_command(["squeue", "-h", "-r", "-o", "%i %T", "-j", arrays], check=False)
    states = {**sacct_states(acct.stdout), **squeue_states(queue.stdout)}
    return {i: states.get(i, "UNKNOWN") for i in ids}


def sacct_states(text: str) -> dict[str, str]:
    """`sacct -P -o JobID,State` lines: the state's first word (`CANCELLED by 0` is CANCELLED)."""
    states = {}
    for line in text.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else "UNKNOWN"
    return states


def squeue_states(text: str) -> dict[str, str]:
    """`squeue -r -o "%i %T"` lines."""
    states = {}
    for line in text.splitlines():
        job_id, _, state = line.partition(" ")
        states[job_id] = state.strip()
    return states


def accounting(task_ids: list[str]) -> dict[str, dict]:
    """Per task: elapsed seconds over all its attempts, and CPU- and GPU-hours (elapsed ×
    allocated CPUs / GPUs), from sacct."""
    if not task_ids:
        return {}
    out = run_command(["sacct", "-n", "-X", "-P", "--duplicates", "-o", "JobID,ElapsedRaw,AllocTRES,State",
                       "-j", array_ids(task_ids)], check=False)
    return usage_of(out.stdout, task_ids)


def usage_of(text: str, task_ids: list[str]) -> dict[str, dict]:
    """`sacct --duplicates -P -o JobID,ElapsedRaw,AllocTRES,State` lines, one per attempt, summed per task."""
    usage: dict[str, dict] = {}
    for line in text.splitlines():
        job_id, elapsed, tres, _ = (line.split("|") + ["", "", ""])[:4]
        if job_id not in task_ids or not elapsed.isdigit():
            continue
        alloc = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
        u = usage.setdefault(job_id, {"elapsed_s": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0})
        u["elapsed_s"] += int(elapsed)
        u["cpu_hours"] += int(elapsed) * int(alloc.get("cpu", 0)) / 3600
        u["gpu_hours"] += int(elapsed) * int(alloc.get("gres/gpu", 0)) / 3600
    return usage


def max_array_size() -> int:
    """The cluster's MaxArraySize (`scontrol show config`)."""
    out = run_command(["scontrol", "show", "config"], check=False)
    for line in out.stdout.splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=")[1])
    return DEFAULT_MAX_ARRAY_SIZE


def arrays_with_comment(comment: str) -> list[str]:
    """The queued jobs (array ids for arrays) whose `--comment` is `comment`."""
    out = run_command(["squeue", "-h", "-o", "%F %k"], check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == [comment]]


def refusal(args: list[str]) -> str | None:
    """Run an `sbatch --test-only` command: None where SLURM would accept the jobs, else its refusal."""
    out = run_command(args, check=False)
    if out.returncode == 0:
        return None
    return (out.stderr or out.stdout).strip().replace("sbatch: error: ", "")
