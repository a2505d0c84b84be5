"""SLURM through submitit: each teacher a job of its own, the students in one job array per set of
teacher tasks they need, each depending (afterok) on exactly those (none for students that need no
teacher), so that a teacher that fails or is cancelled cancels only its own students; a small
collect job after the last student; the launcher returns once everything is queued.

Each task runs one job folder (`SlurmTask`, a submitit `Checkpointable`): on the USR2 warning
before its time limit, or on preemption, it is requeued and resumes from its last epoch checkpoint.
On SIGTERM (scancel, `scontrol requeue`) it stops within seconds, as a local job stops on the
launcher's interrupt: its last epoch checkpoint kept, no result written (`stop_on_sigterm`).
With several tasks per job (GPUs, or CPU tasks for testing) each task exports the torch.distributed
environment from submitit and accelerate builds a DDP group over it; rank 0 alone writes.

What was queued is recorded per job (`jobs/<key>/slurm.json`) right after each array is accepted,
and an intent file (`slurm/submitting.json`, with a unique `--comment`) before it is sent, so a
launcher killed mid-submission leaves nothing the next launch cannot find.

`params` turns the grid's [cluster] table into what is asked of SLURM, `queries` asks SLURM what
it holds; both are tested without a cluster (tests/test_slurm_logic.py).
"""
from __future__ import annotations

import signal
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness.atomic import atomic_write_json
from harness.config.grid import Job
from harness.executors import Executor, Started
from harness.executors.slurm import queries
from harness.executors.slurm.params import (array_parameters, collect_parameters, refused_key, sbatch_parameters,
                                            test_only_args)
from harness.executors.slurm.queries import ACTIVE, FINISHED_BAD, MOVING, SlurmError, accounting, task_states
from harness.run import job as job_runner
from harness.run.layout import JobPaths, State, read_json

__all__ = ["ACTIVE", "FINISHED_BAD", "MOVING", "SlurmError", "SlurmExecutor", "SlurmTask", "accounting", "task_states"]


class SlurmTask:
    """What a SLURM task runs: one job folder. Requeued after a timeout or preemption (submitit
    calls `checkpoint`), it resumes from the job's last epoch checkpoint."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self) -> str:
        import submitit

        stop_on_sigterm()
        missing = teachers_not_completed(Path(self.folder))
        if missing:  # SLURM let it start all the same (see `submissions`): it ends without a result, to run again
            raise RuntimeError(f"job {self.folder} not started: its teacher(s) {', '.join(missing)} did not complete")
        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        result = job_runner.run(Path(self.folder))
        if result["status"] != State.COMPLETED:  # a failed SLURM state keeps dependent students from starting
            raise RuntimeError(f"job {self.folder} failed:\n{result.get('error', '')}")
        return result["status"]

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def teachers_not_completed(folder: Path) -> list[str]:
    """The job's teachers that have not completed: their keys (their folders' names), or, for a
    teacher trained elsewhere, its checkpoint's path where the file is missing."""
    missing = []
    for _, model in JobPaths(folder).read_spec()["teachers"]:
        teacher = JobPaths(Path(model).parent)
        if teacher.spec.exists():
            missing += [] if teacher.state() == State.COMPLETED else [teacher.folder.name]
        elif not Path(model).exists():
            missing.append(model)
    return missing


STOP_GRACE_S = 2.0  # how long a task that got SIGTERM waits for a preemption's USR2


def stop_on_sigterm() -> None:
    """Make SIGTERM (scancel, `scontrol requeue`, SLURM's kill at the end of a time limit) stop the
    task: a KeyboardInterrupt, as the local launcher's SIGINT gives its jobs, so the job ends
    interrupted, keeping its last epoch checkpoint, and writes no result.

    submitit ignores SIGTERM (a job cancelled mid-training would then train on until SLURM kills
    it, KillWait later, and might even be recorded completed) because SLURM may send it beside the
    USR2 on which submitit checkpoints and requeues the job (a preemption; a time limit reached):
    so once a USR2 has come, SIGTERM is still ignored and submitit's handler requeues the job; and
    a SIGTERM first waits STOP_GRACE_S for a USR2, whose handler then runs (and exits) instead.
    Called in the task, after submitit has set its handlers."""
    import submitit

    usr = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
    requeue = signal.getsignal(usr)  # submitit's: checkpoint, requeue, exit
    requeueing = []

    def on_usr(signum, frame):
        requeueing.append(signum)
        if callable(requeue):
            requeue(signum, frame)

    def stop(signum, frame):
        if not requeueing:
            time.sleep(STOP_GRACE_S)  # a USR2 now runs on_usr from within this sleep
        if not requeueing:
            raise KeyboardInterrupt("SIGTERM from SLURM")

    signal.signal(usr, on_usr)
    signal.signal(signal.SIGTERM, stop)


class SlurmExecutor(Executor):
    name = "slurm"

    def record(self, key: str) -> dict | None:
        return self.job_paths(key).read_slurm()

    def active(self, keys: list[str]) -> dict[str, str]:
        """key → SLURM task id, for those of `keys` queued or running now."""
        self.recover_interrupted_submission()
        recorded = {key: r["task_id"] for key in keys if (r := self.record(key))}
        states = queries.task_states(list(recorded.values()))
        return {key: task for key, task in recorded.items() if states[task] in ACTIVE}

    def to_run(self, jobs: list[Job]) -> list[Job]:
        busy = self.active([j.key for j in jobs])
        return [j for j in jobs if not self.completed(j.key) and j.key not in busy]

    def check(self, jobs: list[Job]) -> None:
        """Ask SLURM (`sbatch --test-only`) before anything of the grid is queued."""
        if not jobs:
            return
        args = test_only_args(sbatch_parameters(self.cluster), min(len(jobs), queries.max_array_size()))
        message = queries.refusal(args)
        if message is not None:
            raise SlurmError(refused_key(message), f"SLURM refused the job parameters: {message}")

    def start(self, stages: list[list[Job]], console) -> Started:
        """Queue the stages (the launcher returns at once; `harness.status` follows them)."""
        total = sum(len(stage) for stage in stages)
        if not total:
            return Started(ended=False, note="nothing to submit")
        began = time.perf_counter()
        arrays = self.submit(stages)
        return Started(ended=False, queued=total,
                       note=f"queued {total} jobs in {len(arrays) - 1} submission(s) + a collect job "
                            f"({', '.join(arrays)}) in {time.perf_counter() - began:.1f}s")

    def submit(self, stages: list[list[Job]]) -> list[str]:
        """Queue the stages; return the SLURM array ids, in order. Within a stage, one array per
        set of teacher tasks its jobs wait on (`afterok` on exactly those, none for the jobs that
        need no teacher, or whose teachers have completed), so that a teacher that fails cancels
        only the students that need it."""
        import submitit

        # students wait on their teachers' tasks: those queued by this launch, or still active from an earlier one
        depended_on = {k for stage in stages for j in stage for k in j.teachers}
        teacher_tasks = self.active(sorted(depended_on))
        arrays, largest = [], queries.max_array_size()
        with submitit.helpers.clean_env():  # the launcher may itself be a SLURM job (slurm/launch.sbatch)
            for stage in stages:
                for needed, group in dependency_groups(stage, teacher_tasks):
                    dependency = f"afterok:{':'.join(needed)}" if needed else None
                    for chunk in submissions(group, depended_on, largest):
                        tasks = self.submit_array(chunk, dependency)
                        teacher_tasks.update(tasks)
                        arrays.append(next(iter(tasks.values())).split("_")[0])
            if arrays:
                arrays.append(self.submit_collect(arrays))
        return arrays

    def executor(self, dependency: str | None, comment: str, name: str):
        import submitit

        ex = submitit.SlurmExecutor(folder=self.paths.slurm / "%j", max_num_timeout=self.cluster["max_requeues"])
        ex.update_parameters(**array_parameters(self.cluster, name, comment, dependency))
        return ex

    def submit_array(self, jobs: list[Job], dependency: str | None) -> dict[str, str]:
        token = uuid.uuid4().hex
        intent = self.paths.slurm_intent
        atomic_write_json(intent, {"comment": token, "keys": [j.key for j in jobs]})
        ex = self.executor(dependency, token, array_name(self.root.name, jobs))
        with ex.batch():
            submitted = [ex.submit(SlurmTask(str(self.job_paths(j.key).folder.resolve()))) for j in jobs]
        tasks = {j.key: s.job_id for j, s in zip(jobs, submitted)}
        self.write_records(tasks)
        intent.unlink()
        return tasks

    def write_records(self, tasks: dict[str, str]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key, task in tasks.items():
            atomic_write_json(self.job_paths(key).slurm, {"task_id": task, "submitted": now})

    def recover_interrupted_submission(self) -> None:
        """A launcher killed between sbatch and its records: find the array by its comment."""
        intent_path = self.paths.slurm_intent
        intent = read_json(intent_path)
        if not intent:
            return
        arrays = queries.arrays_with_comment(intent["comment"])
        if arrays:  # submitit sends a single job as a plain job, more as an array
            keys = intent["keys"]
            self.write_records({key: arrays[0] if len(keys) == 1 else f"{arrays[0]}_{i}" for i, key in enumerate(keys)})
        intent_path.unlink()

    def submit_collect(self, arrays: list[str]) -> str:
        import submitit

        ex = submitit.SlurmExecutor(folder=self.paths.slurm / "%j")
        ex.update_parameters(**collect_parameters(self.cluster, f"kd-{self.root.name}-collect", arrays))
        # the collect command, not its function: the executors sit below the analysis layer
        collect = submitit.helpers.CommandFunction([sys.executable, "-m", "harness.collect", str(self.root.resolve())])
        return ex.submit(collect).job_id


def dependency_groups(stage: list[Job], teacher_tasks: dict[str, str]) -> list[tuple[tuple[str, ...], list[Job]]]:
    """The stage's jobs grouped by the teacher tasks they wait on (`teacher_tasks`: teacher key →
    its task queued or running; a teacher not there has completed, or is external), in the order
    the groups first occur: (sorted task ids, jobs), the jobs that wait on none first."""
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in stage:
        needed = tuple(sorted({teacher_tasks[k] for k in job.teachers if k in teacher_tasks}))
        groups.setdefault(needed, []).append(job)
    return sorted(groups.items(), key=lambda group: bool(group[0]))


def array_name(grid: str, jobs: list[Job]) -> str:
    """`kd-<grid>-<stage>`, and the teacher set where all the array's jobs have the same one."""
    labels = {j.teacher_set for j in jobs if j.teachers} | ({"none"} if any(not j.teachers for j in jobs) else set())
    return f"kd-{grid}-{jobs[0].stage}" + (f"-{labels.pop()}" if labels != {"none"} and len(labels) == 1 else "")


def submissions(group: list[Job], depended_on: set[str], largest: int) -> list[list[Job]]:
    """How a group is sent: a job that others wait on (a teacher) as a job of its own, the rest in
    arrays of at most `largest` tasks. SLURM (22.05) keeps no record of an array task cancelled
    while it waits in its array, and then counts a dependency on it as satisfied: the students of
    a teacher cancelled before it started would start without it."""
    alone = [[j] for j in group if j.key in depended_on]
    return alone + chunks([j for j in group if j.key not in depended_on], largest)


def chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]
