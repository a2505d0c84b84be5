"""Executors: where and how the jobs of a plan run. One module per backend:

- `local` (harness.executors.local): each job in a fresh process, one after another; or `debug`: in
  this process (pdb works; tiny data by default, see harness.config.schema).
- `slurm` (harness.executors.slurm): each teacher a SLURM job, the students in one job array per
  set of teacher jobs they wait on (afterok on exactly those); the launcher returns once everything
  is queued.

Every executor answers the launcher the same way (`Executor`): which of the plan's jobs to start
(`to_run`), whether the backend would take them (`check`, before anything starts), and `start`,
given the stages (teachers, then students) as lists of `Job`s whose folders already hold their
`job.json`; what `start` returns (`Started`) says whether the jobs ran or were queued.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.config.grid import Job
from harness.run.layout import GridPaths, JobPaths, State


class ExecutorError(Exception):
    """The backend refuses the grid's settings; the message is the backend's own, with the grid key
    it concerns (e.g. `cluster.partition`)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class Started:
    """What `Executor.start` did with the jobs it was given."""

    ended: bool  # they ran here and have ended (or there were none to run): the results are final
    queued: int = 0  # otherwise: how many now wait in the backend's queue (0: none needed to)
    note: str = ""  # otherwise: what was queued, or that nothing was, in a line for the launcher to print


class Executor:
    """The launcher calls `to_run(plan.jobs)`, `check(pending)`, then `start(stages, console)`."""

    name = "base"

    def __init__(self, root: Path, cluster: dict):
        self.root, self.cluster = root, cluster  # results/<grid>, the grid's [cluster] table
        self.paths = GridPaths(root)

    def job_paths(self, key: str) -> JobPaths:
        return self.paths.job(key)

    def completed(self, key: str) -> bool:
        """External teachers have no folder and count as completed."""
        job = self.job_paths(key)
        return not job.spec.exists() or job.state() == State.COMPLETED

    def to_run(self, jobs: list[Job]) -> list[Job]:
        """The jobs of the plan this launch must start."""
        return [j for j in jobs if not self.completed(j.key)]

    def check(self, jobs: list[Job]) -> None:
        """Raise ExecutorError where the backend would refuse these jobs; nothing has started yet."""

    def start(self, stages: list[list[Job]], console: Console) -> Started:
        """Run or queue the stages in order; a job whose teachers did not complete must not run."""
        raise NotImplementedError


def make_executor(root: Path, cluster: dict) -> Executor:
    from harness.executors.local import DebugExecutor, LocalExecutor
    from harness.executors.slurm import SlurmExecutor

    classes = {cls.name: cls for cls in (LocalExecutor, DebugExecutor, SlurmExecutor)}
    return classes[cluster["executor"]](root, cluster)
