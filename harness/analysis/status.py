"""`python -m harness.status results/<grid>`: every job of a grid, where it stands.

One row per job: stage, key, method, seed, teacher set, state, why (where it waits or ended
without a result), its SLURM task and SLURM's word for it (from sacct and squeue, where the grid
ran on SLURM), attempts, elapsed, last validation top-1; jobs that failed or whose task SLURM
ended (cancelled, timed out...) are listed below with the path and last lines of their log.

The state is the word runs.parquet uses (completed, failed, interrupted, pending), and `running`
for a job whose task runs now: a queued task's job is pending, an ended task's job is what its
folder says. Exit code 0 only when every job completed, 1 otherwise, 2 when the folder is no
grid's results.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from harness.cli import refusing_unreadable
from harness.config import grid as gridlib
from harness.display import make_console
from harness.executors.slurm import queries
from harness.executors.slurm.queries import ENDED, FINISHED_BAD, MOVING, RUNNING, Task, shown_state
from harness.run.layout import GridPaths, JobPaths, State


def job_rows(root: Path) -> list[dict]:
    """Each planned job's state: the job's own files first, SLURM's word where they say nothing
    final; and why it waits, or ended without a result."""
    grid = GridPaths(root)
    jobs = gridlib.from_record(grid.read_plan())
    records = {j.key: grid.job(j.key).read_slurm() for j in jobs}
    try:
        slurm = queries.tasks([r["task_id"] for r in records.values() if r])
    except (OSError, subprocess.SubprocessError):
        slurm = {}
    rows = []
    for job in jobs:
        paths = grid.job(job.key)
        record, epochs = records[job.key], paths.read_epochs()
        cost = paths.read_attempts()
        local = paths.state()
        task = slurm.get(record["task_id"], Task("")) if record else Task("")
        rows.append({"job": job, "folder": paths.folder, "local": local, "state": shown_state(task.state, local),
                     "task": record["task_id"] if record else "", "slurm": task.state, "slurm_task": task,
                     "attempts": cost.get("attempts", 0), "elapsed_s": cost.get("wall_time_s"),
                     "epoch": len(epochs), "val_top1": epochs[-1]["val_top1"] if epochs else None})
    teachers = teacher_rows(rows)
    for row in rows:
        row["reason"] = reason(row, teachers)
    return rows


def teacher_rows(rows: list[dict]) -> dict[str, tuple[str, dict | None]]:
    """Teacher key → (its name in the grid, its row; None for a teacher trained elsewhere)."""
    by_key = {r["job"].key: r for r in rows}
    names = {}
    for r in rows:  # a student's teacher set names its teachers in order
        job = r["job"]
        names.update(zip(job.teachers, job.teacher_set.split("+")))
    return {key: (name, by_key.get(key)) for key, name in names.items()}


def reason(row: dict, teachers: dict[str, tuple[str, dict | None]]) -> str:
    """Why the job waits, or ended without a result, in a few words; "" where there is nothing to say."""
    local, task, job = row["local"], row["slurm_task"], row["job"]
    if local == State.COMPLETED:
        return ""
    if local == State.FAILED:
        error = (JobPaths(row["folder"]).read_result() or {}).get("error", "")
        last = error.strip().splitlines()[-1] if error.strip() else ""
        return last[:80] + ("…" if len(last) > 80 else "")
    if not row["task"] or not task.state:
        return ""
    waiting = [(name, t) for key, (name, t) in teachers.items() if key in job.teachers
               and t is not None and t["local"] != State.COMPLETED]
    if task.state in queries.WAITS:
        if task.reason == "Dependency":
            return "waiting for " + teacher_list(waiting) if waiting else "waiting for its teachers (Dependency)"
        if task.reason == "DependencyNeverSatisfied":
            return f"{teacher_outcomes(waiting) or 'a teacher failed'}: SLURM cancels it"
        return queries.waiting_reason(task)
    if task.state in queries.RUNS:
        return "" if task.state != "SUSPENDED" else "suspended by SLURM"
    if task.state == "UNKNOWN":
        return f"SLURM does not know task {row['task']} (its accounting was purged?)"
    said = ENDED.get(task.state, task.state.lower())
    if row["attempts"] == 0 and waiting:  # ended before it started: a teacher did not complete
        return f"{said}: {teacher_outcomes(waiting) or 'a teacher did not complete'}"
    return said + ("; the next launch resumes it" if local == State.PARTIAL else "; the next launch runs it")


def teacher_list(teachers: list[tuple[str, dict]]) -> str:
    """`teacher resnet56 (task 123)`, or `teachers a (task 1), b (task 2)`."""
    named = [f"{name} (task {t['task']})" if t["task"] else name for name, t in teachers]
    return ("teacher " if len(named) == 1 else "teachers ") + ", ".join(named)


def teacher_outcomes(teachers: list[tuple[str, dict]]) -> str:
    """`teacher resnet56 failed (task 123)`, for those of `teachers` no longer queued or running."""
    ended = [(name, t) for name, t in teachers if t["slurm"] not in queries.ACTIVE]
    return ", ".join(f"teacher {name} {outcome(t)}" + (f" (task {t['task']})" if t["task"] else "")
                     for name, t in ended)


def outcome(row: dict) -> str:
    if row["local"] == State.FAILED:
        return "failed"
    return {"CANCELLED": "was cancelled", "TIMEOUT": "timed out", "OUT_OF_MEMORY": "ran out of memory"}.get(
        row["slurm"], "failed" if row["slurm"] in FINISHED_BAD else "did not complete")


def status_table(root: Path, rows: list[dict]) -> Table:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    table = Table(title=f"{root.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for column in ("stage", "key", "method", "seed", "teachers", "state", "why", "slurm", "attempts", "elapsed",
                   "epoch", "val top-1"):
        table.add_column(column, justify="right" if column in ("seed", "attempts", "elapsed", "epoch", "val top-1") else "left")
    colour = {State.COMPLETED: "green", State.FAILED: "red", RUNNING: "cyan", State.INTERRUPTED: "yellow"}
    for r in rows:
        job = r["job"]
        table.add_row(job.stage, job.key, job.method, str(job.seed), job.teacher_set,
                      f"[{colour.get(r['state'], 'white')}]{r['state']}[/]", escape(r["reason"]),
                      slurm_text(r), str(r["attempts"]),
                      f"{r['elapsed_s']:.0f}s" if r["elapsed_s"] is not None else "",
                      str(r["epoch"]), f"{r['val_top1']:.2f}" if r["val_top1"] is not None else "")
    return table


def slurm_text(row: dict) -> str:
    """The task id, SLURM's word for it and SLURM's reason: `4102_3 PENDING (BeginTime)`."""
    task = row["slurm_task"]
    return " ".join(filter(None, (row["task"], task.state, f"({task.reason})" if task.reason else "")))


def failures(rows: list[dict], lines: int = 8) -> list[str]:
    out = []
    for r in rows:
        if r["state"] == State.FAILED or (r["state"] != State.COMPLETED and r["slurm"] in FINISHED_BAD):
            log = JobPaths(r["folder"]).log
            tail = log.read_text().strip().splitlines()[-lines:] if log.exists() else ["(no log)"]
            why = f" ({r['reason']})" if r["reason"] else ""
            out.append(f"{r['job'].stage} {r['job'].key} {r['state']}{why}: {log}\n    " + "\n    ".join(tail))
    return out


def going(row: dict) -> bool:
    """Queued or running on SLURM and moving (not suspended, nor held after a requeue), or SLURM
    could not be asked: what `follow` waits for."""
    return bool(row["task"]) and row["local"] not in (State.COMPLETED, State.FAILED) and (
        row["slurm"] in MOVING or not row["slurm"])


def follow(root: Path, console, every_s: float = 5.0) -> None:
    """Until no job is queued or running: a live count of the grid's states."""
    from rich.live import Live

    with Live(console=console, refresh_per_second=1) as live:
        while True:
            rows = job_rows(root)
            live.update(status_table(root, rows))
            if not any(going(r) for r in rows):
                return
            time.sleep(every_s)


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.status", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the grid's results folder, e.g. results/quick")
    args = parser.parse_args(argv)
    plan = GridPaths(args.root).plan
    if not plan.is_file():
        print(f"error: {args.root} holds no {plan.name}: is it a grid's results folder?", file=sys.stderr)
        return 2
    console = make_console()
    rows = job_rows(args.root)
    console.print(status_table(args.root, rows))
    for text in failures(rows):
        console.print(escape(text), highlight=False)  # log lines may hold [brackets]
    return 0 if all(r["state"] == State.COMPLETED for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
