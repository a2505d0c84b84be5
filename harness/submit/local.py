"""The executors that run jobs on this machine, one after another, while the launcher waits."""
from __future__ import annotations

import json
import subprocess
import sys

from harness import job as job_runner
from harness.display import GridDisplay
from harness.grid import Job
from harness.submit import Executor


class SequentialExecutor(Executor):
    def run(self, stages: list[list[Job]], display: GridDisplay) -> None:
        """Run the stages in order; a job whose teachers did not complete is skipped."""
        for stage in stages:
            for job in stage:
                display.start(job)
                missing = [k[:8] for k in job.teachers if not self.completed(k)]
                if missing:
                    display.finish(job, None, f"skipped: teacher {', '.join(missing)} not completed")
                    continue
                display.finish(job, self.run_one(job, lambda event, job=job: display.event(job, event)))

    def run_one(self, job: Job, on_event) -> dict | None:
        raise NotImplementedError


class LocalExecutor(SequentialExecutor):
    """Each job in a fresh `python -m harness.job` process; its stderr goes to the job's log."""

    name = "local"

    def run_one(self, job: Job, on_event) -> dict | None:
        folder = self.folder(job.key)
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


class DebugExecutor(SequentialExecutor):
    """In this process: breakpoints and pdb work, exceptions are still recorded per job."""

    name = "debug"

    def run_one(self, job: Job, on_event) -> dict | None:
        return job_runner.run(self.folder(job.key), on_event)
