"""`python -m harness.status results/<grid>`: every job of a grid, where it stands.

One row per job: stage, key, method, seed, teacher set, SLURM task id and its state (from sacct
and squeue, where the grid ran on SLURM), attempts, elapsed, last validation top-1; failed jobs
are listed below with the path and last lines of their log. Exit code 0 only when every job
completed, 1 otherwise, 2 when the folder is no grid's results.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from harness.config import grid as gridlib
from harness.display import make_console
from harness.executors.slurm.queries import FINISHED_BAD, MOVING, task_states
from harness.run.layout import GridPaths, JobPaths, State

BAD = {State.FAILED, *(s.lower() for s in FINISHED_BAD)}  # listed with their logs' last lines
GOING = {State.PENDING, State.INTERRUPTED, *(s.lower() for s in MOVING)}  # `follow` waits while a queued job is in one


def job_rows(root: Path) -> list[dict]:
    """Each planned job's state: the job's own files first, SLURM's word where they say nothing final."""
    grid = GridPaths(root)
    jobs = gridlib.from_record(grid.read_plan())
    records = {j.key: grid.job(j.key).read_slurm() for j in jobs}
    try:
        slurm = task_states([r["task_id"] for r in records.values() if r])
    except (OSError, subprocess.SubprocessError):
        slurm = {}
    rows = []
    for job in jobs:
        paths = grid.job(job.key)
        record, epochs = records[job.key], paths.read_epochs()
        cost = paths.read_attempts()
        local = paths.state()
        queue = slurm.get(record["task_id"], "") if record else ""
        state = local if local in (State.COMPLETED, State.FAILED) else (queue.lower() or local.shown)
        rows.append({"job": job, "folder": paths.folder, "state": state, "task": record["task_id"] if record else "",
                     "attempts": cost.get("attempts", 0), "elapsed_s": cost.get("wall_time_s"),
                     "epoch": len(epochs), "val_top1": epochs[-1]["val_top1"] if epochs else None})
    return rows


def status_table(root: Path, rows: list[dict]) -> Table:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    table = Table(title=f"{root.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for column in ("stage", "key", "method", "seed", "teachers", "slurm", "state", "attempts", "elapsed", "epoch",
                   "val top-1"):
        table.add_column(column, justify="right" if column in ("seed", "attempts", "elapsed", "epoch", "val top-1") else "left")
    colour = {State.COMPLETED: "green", State.FAILED: "red", "running": "cyan", "cancelled": "red", "timeout": "red"}
    for r in rows:
        job = r["job"]
        table.add_row(job.stage, job.key, job.method, str(job.seed), job.teacher_set, r["task"],
                      f"[{colour.get(r['state'], 'white')}]{r['state']}[/]", str(r["attempts"]),
                      f"{r['elapsed_s']:.0f}s" if r["elapsed_s"] is not None else "",
                      str(r["epoch"]), f"{r['val_top1']:.2f}" if r["val_top1"] is not None else "")
    return table


def failures(rows: list[dict], lines: int = 8) -> list[str]:
    out = []
    for r in rows:
        if r["state"] in BAD:
            log = JobPaths(r["folder"]).log
            tail = log.read_text().strip().splitlines()[-lines:] if log.exists() else ["(no log)"]
            out.append(f"{r['job'].stage} {r['job'].key} {r['state']}: {log}\n    " + "\n    ".join(tail))
    return out


def follow(root: Path, console, every_s: float = 5.0) -> None:
    """Until no job is queued or running: a live count of the grid's states."""
    from rich.live import Live

    with Live(console=console, refresh_per_second=1) as live:
        while True:
            rows = job_rows(root)
            live.update(status_table(root, rows))
            if not any(r["state"] in GOING and r["task"] for r in rows):
                return
            time.sleep(every_s)


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
        console.print(text, highlight=False)
    return 0 if all(r["state"] == State.COMPLETED for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
