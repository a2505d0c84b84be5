"""Executors: where and how the jobs of a plan run.

Every executor takes the plan's stages (teachers, then students) as lists of `Job`s whose folders
hold their `job.json`, and runs or submits them so that a student starts only after the teachers
it needs completed. `local` runs each job in a fresh process, one after another; `debug` runs
them in this process (pdb works; tiny data by default, see harness.schema). A cluster executor
is one more class with the same `run`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import job as job_runner
from harness.display import GridDisplay
from harness.grid import Job


class Executor:
    name = "base"

    def __init__(self, root: Path):
        self.root = root  # results/<grid>

    def folder(self, job: Job) -> Path:
        return self.root / "jobs" / job.key

    def run(self, stages: list[list[Job]], display: GridDisplay) -> None:
        """Run the stages in order; a job whose teachers did not complete is skipped."""
        for stage in stages:
            for job in stage:
                missing = [k for k in job.teachers if self.teacher_missing(k)]
                if missing:
                    display.start(job)
                    display.finish(job, None, f"skipped: teacher {', '.join(m[:8] for m in missing)} not completed")
                    continue
                display.start(job)
                result = self.run_one(job, lambda event, job=job: display.event(job, event))
                display.finish(job, result)

    def teacher_missing(self, key: str) -> bool:
        folder = self.root / "jobs" / key
        return (folder / "job.json").exists() and job_runner.state(folder) != "completed"

    def run_one(self, job: Job, on_event) -> dict | None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Each job in a fresh `python -m harness.job` process; its stderr goes to the job's log."""

    name = "local"

    def run_one(self, job: Job, on_event) -> dict | None:
        folder = self.folder(job)
        with open(folder / "log.txt", "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.job", str(folder), "--events"],
                                    stdout=subprocess.PIPE, stderr=log, text=True)
            try:
                for line in proc.stdout:
                    if line.startswith(job_runner.EVENT_PREFIX):
                        on_event(json.loads(line[len(job_runner.EVENT_PREFIX):]))
                    else:
                        log.write(line)
            finally:
                proc.wait()
        return job_runner.read_json(folder / "result.json")


class DebugExecutor(Executor):
    """In this process: breakpoints and pdb work, exceptions are still recorded per job."""

    name = "debug"

    def run_one(self, job: Job, on_event) -> dict | None:
        return job_runner.run(self.folder(job), on_event)


EXECUTORS = {cls.name: cls for cls in (LocalExecutor, DebugExecutor)}
