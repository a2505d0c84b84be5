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

from harness.run import job as job_runner
from harness.config.grid import Job


class Executor:
    name = "base"
    blocking = True  # runs the jobs before returning (False: queues them)

    def __init__(self, root: Path, cluster: dict):
        self.root, self.cluster = root, cluster  # results/<grid>, the grid's [cluster] table

    def folder(self, key: str) -> Path:
        return self.root / "jobs" / key

    def completed(self, key: str) -> bool:
        """External teachers have no folder and count as completed."""
        folder = self.folder(key)
        return not (folder / "job.json").exists() or job_runner.state(folder) == "completed"

    def to_run(self, jobs: list[Job]) -> list[Job]:
        """The jobs of the plan this launch must start."""
        return [j for j in jobs if not self.completed(j.key)]


def make_executor(root: Path, cluster: dict) -> Executor:
    from harness.executors.local import DebugExecutor, LocalExecutor
    from harness.executors.slurm import SlurmExecutor

    classes = {cls.name: cls for cls in (LocalExecutor, DebugExecutor, SlurmExecutor)}
    return classes[cluster["executor"]](root, cluster)
