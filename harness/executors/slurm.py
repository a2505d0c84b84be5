"""SLURM through submitit: one job array per stage, students depending (afterok) on exactly the
teacher tasks they need, a small collect job after the last student; the launcher returns once
everything is queued.

Each task runs one job folder (`SlurmTask`, a submitit `Checkpointable`): on the USR2 warning
before its time limit, or on preemption, it is requeued and resumes from its last epoch checkpoint.
With several tasks per job (GPUs, or CPU tasks for testing) each task exports the torch.distributed
environment from submitit and accelerate builds a DDP group over it; rank 0 alone writes.

What was queued is recorded per job (`jobs/<key>/slurm.json`) right after each array is accepted,
and an intent file (`slurm/submitting.json`, with a unique `--comment`) before it is sent, so a
launcher killed mid-submission leaves nothing the next launch cannot find.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from harness.run import job as job_runner
from harness.run.layout import State, read_json
from harness.atomic import atomic_write_json
from harness.config.grid import Job, world_size
from harness.executors import Executor, ExecutorError, Started

# SLURM's words for a task's state (sacct, squeue)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}  # queued or running: a launch leaves it alone
MOVING = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"}  # active, and not held or suspended
FINISHED_BAD = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                "DEADLINE"}


class SlurmError(ExecutorError):
    """SLURM refused something; the message is SLURM's own, with the grid key it concerns."""


def run_command(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise SlurmError("cluster", f"`{shlex.join(args)}` failed: {(out.stderr or out.stdout).strip()}")
    return out


class SlurmTask:
    """What a SLURM task runs: one job folder. Requeued after a timeout or preemption (submitit
    calls `checkpoint`), it resumes from the job's last epoch checkpoint."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self) -> str:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        result = job_runner.run(Path(self.folder))
        if result["status"] != State.COMPLETED:  # a failed SLURM state keeps dependent students from starting
            raise RuntimeError(f"job {self.folder} failed:\n{result.get('error', '')}")
        return result["status"]

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def sbatch_parameters(cluster: dict) -> dict:
    """submitit SlurmExecutor parameters from the grid's [cluster] table."""
    tasks = world_size(cluster)
    params = {"time": cluster["timeout_min"], "cpus_per_task": cluster["cpus_per_task"], "ntasks_per_node": tasks,
              "nodes": 1, "signal_delay_s": cluster["signal_delay_s"], "setup": list(cluster["setup"])}
    if tasks > 1:  # a rank that fails ends the job's other ranks at once, not after a collective's timeout
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    optional = {"partition": cluster["partition"], "account": cluster["account"], "qos": cluster["qos"],
                "constraint": cluster["constraint"], "gpus_per_node": cluster["gpus_per_job"] or None,
                "mem": f"{cluster['mem_gb']}GB" if cluster["mem_gb"] else None}
    params.update({k: v for k, v in optional.items() if v is not None})
    extra = {}
    for arg in cluster["sbatch_args"]:
        name, sep, value = arg.lstrip("-").partition("=")
        extra[name] = value if sep else True
    params["additional_parameters"] = extra
    return params


def test_only_args(params: dict, array_size: int) -> list[str]:
    """The sbatch command that asks SLURM, without queuing, whether it would accept our jobs."""
    flags = {"partition": params.get("partition"), "time": params["time"], "cpus-per-task": params["cpus_per_task"],
             "ntasks-per-node": params["ntasks_per_node"], "account": params.get("account"), "qos": params.get("qos"),
             "constraint": params.get("constraint"), "gpus-per-node": params.get("gpus_per_node"),
             "mem": params.get("mem"), "array": f"0-{array_size - 1}" if array_size > 1 else None}
    args = ["sbatch", "--test-only", *(f"--{k}={v}" for k, v in flags.items() if v is not None)]
    args += [f"--{k}" if v is True else f"--{k}={v}" for k, v in params["additional_parameters"].items()]
    return args + ["--wrap", "true"]


def refused_key(message: str) -> str:
    """The [cluster] key an sbatch refusal is most likely about."""
    text = message.lower()
    for word, key in (("partition", "cluster.partition"), ("time limit", "cluster.timeout_min"),
                      ("account", "cluster.account"), ("qos", "cluster.qos"), ("memory", "cluster.mem_gb"),
                      ("gres", "cluster.gpus_per_job"), ("gpu", "cluster.gpus_per_job"),
                      ("feature", "cluster.constraint"), ("array", "cluster"), ("cpu", "cluster.cpus_per_task")):
        if word in text:
            return key
    return "cluster.sbatch_args"


def task_states(ids: list[str]) -> dict[str, str]:
    """SLURM's state of each task id (`123_4` or `123`): sacct for what started or ended, squeue
    (one line per array task) for what waits or runs, which wins."""
    if not ids:
        return {}
    arrays = sorted({i.split("_")[0] for i in ids})
    states = {}
    acct = run_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(arrays)], check=False)
    for line in acct.stdout.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else "UNKNOWN"
    queue = run_command(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], check=False)
    for line in queue.stdout.splitlines():
        job_id, _, state = line.partition(" ")
        states[job_id] = state.strip()
    return {i: states.get(i, "UNKNOWN") for i in ids}


class SlurmExecutor(Executor):
    name = "slurm"

    def record(self, key: str) -> dict | None:
        return self.job_paths(key).read_slurm()

    def active(self, keys: list[str]) -> dict[str, str]:
        """key → SLURM task id, for those of `keys` queued or running now."""
        self.recover_interrupted_submission()
        recorded = {key: r["task_id"] for key in keys if (r := self.record(key))}
        states = task_states(list(recorded.values()))
        return {key: task for key, task in recorded.items() if states[task] in ACTIVE}

    def to_run(self, jobs: list[Job]) -> list[Job]:
        busy = self.active([j.key for j in jobs])
        return [j for j in jobs if not self.completed(j.key) and j.key not in busy]

    def check(self, jobs: list[Job]) -> None:
        """Ask SLURM (`sbatch --test-only`) before anything of the grid is queued."""
        if not jobs:
            return
        params = sbatch_parameters(self.cluster)
        out = run_command(test_only_args(params, min(len(jobs), self.max_array_size())), check=False)
        if out.returncode != 0:
            message = (out.stderr or out.stdout).strip().replace("sbatch: error: ", "")
            raise SlurmError(refused_key(message), f"SLURM refused the job parameters: {message}")

    def max_array_size(self) -> int:
        out = run_command(["scontrol", "show", "config"], check=False)
        for line in out.stdout.splitlines():
            if line.strip().startswith("MaxArraySize"):
                return int(line.split("=")[1])
        return 1001

    def start(self, stages: list[list[Job]], console) -> Started:
        """Queue the stages (the launcher returns at once; `harness.status` follows them)."""
        total = sum(len(stage) for stage in stages)
        if not total:
            return Started(ended=False, note="nothing to submit")
        began = time.perf_counter()
        arrays = self.submit(stages)
        return Started(ended=False, queued=total,
                       note=f"queued {total} jobs in {len(arrays) - 1} array(s) + a collect job "
                            f"({', '.join(arrays)}) in {time.perf_counter() - began:.1f}s")

    def submit(self, stages: list[list[Job]]) -> list[str]:
        """Queue the stages; return the SLURM array ids, in order."""
        import submitit

        # students wait on their teachers' tasks: those queued by this launch, or still active from an earlier one
        busy = self.active(sorted({k for stage in stages for j in stage for k in j.teachers}))
        arrays, teacher_tasks = [], dict(busy)
        with submitit.helpers.clean_env():  # the launcher may itself be a SLURM job (slurm/launch.sbatch)
            for stage in stages:
                needed = sorted({teacher_tasks[k] for j in stage for k in j.teachers if k in teacher_tasks})
                dependency = f"afterok:{':'.join(needed)}" if needed else None
                for chunk in chunks(stage, self.max_array_size()):
                    tasks = self.submit_array(chunk, dependency)
                    teacher_tasks.update(tasks)
                    arrays.append(next(iter(tasks.values())).split("_")[0])
            if arrays:
                arrays.append(self.submit_collect(arrays))
        return arrays

    def executor(self, dependency: str | None, comment: str, name: str):
        import submitit

        ex = submitit.SlurmExecutor(folder=self.paths.slurm / "%j", max_num_timeout=self.cluster["max_requeues"])
        params = sbatch_parameters(self.cluster)
        params["additional_parameters"] = {**params["additional_parameters"], "kill-on-invalid-dep": "yes"}
        ex.update_parameters(**params, array_parallelism=self.cluster["array_parallelism"], job_name=name,
                             comment=comment, **({"dependency": dependency} if dependency else {}))
        return ex

    def submit_array(self, jobs: list[Job], dependency: str | None) -> dict[str, str]:
        token = uuid.uuid4().hex
        intent = self.paths.slurm_intent
        atomic_write_json(intent, {"comment": token, "keys": [j.key for j in jobs]})
        ex = self.executor(dependency, token, f"kd-{self.root.name}-{jobs[0].stage}")
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
        out = run_command(["squeue", "-h", "-o", "%F %k"], check=False)
        arrays = [line.split()[0] for line in out.stdout.splitlines() if line.split()[1:] == [intent["comment"]]]
        if arrays:  # submitit sends a single job as a plain job, more as an array
            keys = intent["keys"]
            self.write_records({key: arrays[0] if len(keys) == 1 else f"{arrays[0]}_{i}" for i, key in enumerate(keys)})
        intent_path.unlink()

    def submit_collect(self, arrays: list[str]) -> str:
        import submitit

        ex = submitit.SlurmExecutor(folder=self.paths.slurm / "%j")
        params = sbatch_parameters(self.cluster)
        params.update(cpus_per_task=1, ntasks_per_node=1, time=30)
        params.pop("gpus_per_node", None)
        ex.update_parameters(**params, job_name=f"kd-{self.root.name}-collect",
                             dependency="afterany:" + ":".join(arrays))
        # the collect command, not its function: the executors sit below the analysis layer
        collect = submitit.helpers.CommandFunction([sys.executable, "-m", "harness.collect", str(self.root.resolve())])
        return ex.submit(collect).job_id


def chunks(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def accounting(task_ids: list[str]) -> dict[str, dict]:
    """Per task: elapsed seconds over all its attempts, and CPU- and GPU-hours (elapsed ×
    allocated CPUs / GPUs), from sacct."""
    if not task_ids:
        return {}
    arrays = sorted({i.split("_")[0] for i in task_ids})
    out = run_command(["sacct", "-n", "-X", "-P", "--duplicates", "-o", "JobID,ElapsedRaw,AllocTRES,State",
                       "-j", ",".join(arrays)], check=False)
    usage: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        job_id, elapsed, tres, _ = (line.split("|") + ["", "", ""])[:4]
        if job_id not in task_ids or not elapsed.isdigit():
            continue
        alloc = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
        u = usage.setdefault(job_id, {"elapsed_s": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0})
        u["elapsed_s"] += int(elapsed)
        u["cpu_hours"] += int(elapsed) * int(alloc.get("cpu", 0)) / 3600
        u["gpu_hours"] += int(elapsed) * int(alloc.get("gres/gpu", 0)) / 3600
    return usage
