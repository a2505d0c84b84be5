"""What the executor and `status`/`collect` ask SLURM: task states and why they wait or ended
(sacct + squeue), accounting (sacct), the largest array, the arrays holding a comment. Each runs
its command through `run_command`, which a test replaces (tests/test_slurm_logic.py feeds recorded
outputs).

SLURM's words are mapped onto the harness's (`State`, and `running`) in one place: `shown_state`;
what its reasons mean, in words for `harness.status`: `WAITING`, `ENDED`, `waiting_reason`.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass

from harness.executors import ExecutorError
from harness.run.layout import State

# SLURM's words for a task's state
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}  # queued or running: a launch leaves it alone
MOVING = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"}  # active, and not held or suspended
FINISHED_BAD = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}
DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize

# SLURM's words onto the harness's: a queued task's job is `pending`, a running one's `running`
# (the one word State has not: a folder never says it), and an ended one's is what its folder says
# (`State.shown`: completed, failed, interrupted or pending), as in runs.parquet.
RUNNING = "running"
WAITS = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
RUNS = ACTIVE - WAITS


def shown_state(slurm: str, folder: State) -> str:
    """The state a table shows for a job, from its folder's state and SLURM's word for its task
    ("" where it has none): the folder's when final (completed, failed) or when SLURM has no task
    queued or running for it."""
    if folder in (State.COMPLETED, State.FAILED):
        return folder.value
    if slurm in WAITS:
        return State.PENDING.value
    if slurm in RUNS:
        return RUNNING
    return folder.shown.value


# squeue's reason (%r) for a pending task, in words; `Dependency` and `DependencyNeverSatisfied`
# are said by `harness.status`, which knows the teachers; a reason not listed is shown as SLURM's word.
WAITING = {
    "None": "queued",
    "BeginTime": "requeued, restarts after its delay",  # SLURM holds a requeued job back ~2 minutes
    "Resources": "waiting for free resources",
    "Priority": "waiting behind jobs of higher priority",
    "JobArrayTaskLimit": "waiting: array_parallelism tasks of its array are running",
    "JobHeldUser": "held: `scontrol release` it",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "waiting: the nodes it may use are not available",
    "PartitionTimeLimit": "its time limit is above the partition's (cluster.timeout_min)",
    "PartitionDown": "waiting: the partition is down",
    "PartitionInactive": "waiting: the partition is inactive",
}
# sacct's state of an ended task whose folder holds no result, in words
ENDED = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "time limit reached, not requeued",
    "OUT_OF_MEMORY": "out of memory (cluster.mem_gb)",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "its deadline passed",
    "FAILED": "ended without a result (see its log)",
    "COMPLETED": "ended without a result (see its log)",
}


@dataclass(frozen=True)
class Task:
    """What SLURM says of one task: its state (SLURM's word; UNKNOWN where neither squeue nor sacct
    knows it), and for a queued one squeue's reason and expected start, for an ended one sacct's
    reason ("" where SLURM gives none)."""

    state: str
    reason: str = ""
    start: str = ""


def waiting_reason(task: Task) -> str:
    """A pending task's reason in words (`Dependency` and the like are left to the caller)."""
    if task.reason.startswith(("QOS", "AssocGrp", "AssocMax", "MaxCpu", "MaxGRES")):
        return f"waiting: a limit of its QOS or account ({task.reason})"
    text = WAITING.get(task.reason or "None", task.reason)
    if task.reason == "BeginTime" and task.start not in ("", "N/A", "Unknown"):
        text += f" (at {task.start.partition('T')[2] or task.start})"
    return text


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
    """SLURM's state of each task id (`123_4` or `123`); UNKNOWN where neither knows it."""
    return {i: t.state for i, t in tasks(ids).items()}


def tasks(ids: list[str]) -> dict[str, Task]:
    """What SLURM says of each task id (`123_4` or `123`): sacct for what started or ended, squeue
    (one line per array task) for what waits or runs, which wins; UNKNOWN where neither knows it."""
    if not ids:
        return {}
    arrays = array_ids(ids)
    acct = run_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State,Reason", "-j", arrays], check=False)
    queue = run_command(["squeue", "-h", "-r", "-o", "%i|%T|%r|%S", "-j", arrays], check=False)
    known = {**sacct_tasks(acct.stdout), **squeue_tasks(queue.stdout)}
    return {i: known.get(i, Task("UNKNOWN")) for i in ids}


def expand(job_id: str) -> list[str]:
    """sacct's id of array tasks it has not split yet (`123_[0-3,7%4]`: pending, or cancelled
    before they started) as the task ids; any other id as itself."""
    found = re.fullmatch(r"(\d+)_\[([\d,-]+)(?:%\d+)?\]", job_id)
    if not found:
        return [job_id]
    out = []
    for part in found[2].split(","):
        first, _, last = part.partition("-")
        out += [f"{found[1]}_{i}" for i in range(int(first), int(last or first) + 1)]
    return out


def sacct_tasks(text: str) -> dict[str, Task]:
    """`sacct -P -o JobID,State,Reason` lines: the state's first word (`CANCELLED by 0` is
    CANCELLED), the reason ("None" is "")."""
    found = {}
    for line in text.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        task = Task(state.split()[0] if state.strip() else "UNKNOWN", "" if reason == "None" else reason)
        found.update(dict.fromkeys(expand(job_id), task))
    return found


def squeue_tasks(text: str) -> dict[str, Task]:
    """`squeue -r -o "%i|%T|%r|%S"` lines."""
    found = {}
    for line in text.splitlines():
        job_id, state, reason, start = (line.split("|") + ["", "", ""])[:4]
        if state:
            found[job_id] = Task(state.strip(), "" if reason == "None" else reason, start.strip())
    return found


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
