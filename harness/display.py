"""What the launcher shows while a grid runs: a rich progress display (grid: jobs done / total;
current job: steps with ETA, loss, val top-1) and one log line per finished job."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from harness.config.grid import Job
from harness.run.layout import State


def make_console() -> Console:
    """rich's console; where output is not a terminal (logs, CI), wide enough for our tables."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def describe(job: Job) -> str:
    teachers = "" if job.teacher_set == "none" else f" ← {job.teacher_set}"
    return escape(f"{job.stage} {job.arch} {job.method} seed {job.seed}{teachers} [{job.key[:8]}]")


class GridDisplay:
    """Context manager; the executors call `start`, `event` and `finish` for each job."""

    def __init__(self, total: int, console: Console | None = None):
        self.console = console or make_console()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=self.console, transient=False)
        self.grid_task = self.progress.add_task("grid jobs", total=total, info="")
        self.job_task = None
        self.val = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def start(self, job: Job) -> None:
        self.val = None
        self.job_task = self.progress.add_task(describe(job), total=None, info="starting")

    def event(self, job: Job, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            total = event["epochs"] * event["steps_per_epoch"]
            done = event["resumed_from"] * event["steps_per_epoch"]
            self.progress.reset(self.job_task, total=total, completed=done,
                                info=f"resumed after epoch {done // event['steps_per_epoch']}" if done else "")
        elif kind == "step":
            self.progress.update(self.job_task, completed=event["epoch"] * event["steps"] + event["step"],
                                 info=self._info(event["epoch"] + 1, event["loss"]))
        elif kind == "epoch":
            self.val = event["val_top1"]
            self.progress.update(self.job_task, info=self._info(event["epoch"], event["train_loss"]))

    def _info(self, epoch: int, loss: float) -> str:
        val = f" val {self.val:.1f}%" if self.val is not None else ""
        return f"epoch {epoch} loss {loss:.3f}{val}"

    def finish(self, job: Job, result: dict | None, note: str = "") -> None:
        if self.job_task is not None:
            self.progress.remove_task(self.job_task)
            self.job_task = None
        self.progress.advance(self.grid_task)
        if result and result["status"] == State.COMPLETED:
            self.console.print(f"[green]✓[/] {describe(job)}: test top-1 {result['test_top1']:.2f}%, "
                               f"{result['wall_time_s']:.0f}s")
        else:
            why = note or (result or {}).get("error", "no result").strip().splitlines()[-1]
            self.console.print(f"[red]✗[/] {escape(describe(job))}: {escape(why)}")
