"""The executors that run jobs on this machine, one after another, while the launcher waits."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

from harness.run import job as job_runner
from harness.run.layout import State
from harness.atomic import open_append
from harness.display import GridDisplay
from harness.config.grid import Job
from harness.executors import Executor, Started


class SequentialExecutor(Executor):
    def start(self, stages: list[list[Job]], console) -> Started:
        """Run every job here, with a progress display; they have ended when this returns."""
        total = sum(len(stage) for stage in stages)
        if total:
            with GridDisplay(total, console) as display:
                self.run(stages, display)
        return Started(ended=True)

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
        paths = self.job_paths(job.key)
        try:
            log = open_append(paths.log)
        except OSError as e:  # e.g. a symbolic link planted there: refused, never followed
            return {"status": State.FAILED, "error": f"cannot open {paths.log}: {e.strerror}"}
        with log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.job", str(paths.folder), "--events"],
                                    stdout=subprocess.PIPE, stderr=log, text=True)
            try:
                for line in proc.stdout:
                    if line.startswith(job_runner.EVENT_PREFIX):
                        on_event(json.loads(line[len(job_runner.EVENT_PREFIX):]))
                    else:
                        log.write(line)
            except BaseException:  # the launcher is interrupted: so is its job, now, not at its end
                stop(proc)
                raise
            finally:
                proc.wait()
        return paths.read_result()


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Interrupt a job process (it keeps its last epoch's checkpoint); kill it if it does not stop."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()


class DebugExecutor(SequentialExecutor):
    """In this process: breakpoints and pdb work, exceptions are still recorded per job."""

    name = "debug"

    def run_one(self, job: Job, on_event) -> dict | None:
        try:
            return job_runner.run(self.job_paths(job.key).folder, on_event)
        except job_runner.JobLocked as e:
            return {"status": State.FAILED, "error": str(e)}
