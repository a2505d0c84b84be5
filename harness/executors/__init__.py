"""Executors: where and how the jobs of a plan run. One module per backend:

- `local` (harness.executors.local): each job in a fresh process, one after another; or `debug`: in
  this process (pdb works; tiny data by default, see harness.config.schema).
- `slurm` (harness.executors.slurm): one submitit job array per stage, students depending on the
  teacher jobs they need; the launcher returns once everything is queued.

Every executor gets the plan's stages (teachers, then students) as lists of `Job`s whose folders
already hold their `job.json`.
"""
from __future__ import annotations

from pathlib import Path

from harness.config.grid import Job
from harness.run.layout import GridPaths, JobPaths, State


class Executor:
    name = "base"
    blocking = True  # runs the jobs before returning (False: queues them)

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


def make_executor(root: Path, cluster: dict) -> Executor:
    from harness.executors.local import DebugExecutor, LocalExecutor
    from harness.executors.slurm import SlurmExecutor

    classes = {cls.name: cls for cls in (LocalExecutor, DebugExecutor, SlurmExecutor)}
    return classes[cluster["executor"]](root, cluster)
