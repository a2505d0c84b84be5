"""The SLURM executor's logic without a cluster: what it asks SLURM for (sbatch parameters, the
scripts submitit writes, `sbatch --test-only`), how it reads a refusal, and how it reads sacct and
squeue, on recorded outputs through a fake command runner (`queries.run_command` replaced).
tests/test_slurm.py runs the same executor against a real SLURM.

The sbatch scripts are compared with tests/golden/slurm_submission.sbatch (paths, the Python
executable and the random `--comment` normalised). After a deliberate change (of the parameters, or
of submitit's script), regenerate it and review the diff:

    KD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_slurm_logic.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.atomic import atomic_write_json
from harness.config import grid as gridlib
from harness.executors.slurm import SlurmError, SlurmExecutor, params, queries
from harness.run.layout import GridPaths
from tests.conftest import TINY_GRID

GOLDEN = Path(__file__).parent / "golden" / "slurm_submission.sbatch"
GPU_CLUSTER = """partition = "gpu"
account = "kd-lab"
qos = "normal"
timeout_min = 240
cpus_per_task = 8
mem_gb = 64
gpus_per_job = 2
constraint = "a100"
setup = ["module load cuda/12.1", "source .venv/bin/activate"]
sbatch_args = ["--exclude=node7", "--exclusive"]
"""


def planned(tmp_path: Path, cluster: str = "") -> gridlib.Plan:
    """The tiny grid (one teacher, four students) on SLURM with these [cluster] lines."""
    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID.format(root=tmp_path / "data", executor="slurm") + cluster)
    return gridlib.plan(gridlib.load(path))


def written(plan: gridlib.Plan, root: Path) -> gridlib.Plan:
    """The plan with each job's spec in its folder, as the launcher leaves it before starting."""
    for job in plan.jobs:
        atomic_write_json(GridPaths(root).job(job.key).spec, {"key": job.key})
    return plan


class FakeSlurm:
    """Stands in for `queries.run_command`: answers each command with the recorded output of the
    first entry all of whose words it contains, and keeps what was asked."""

    def __init__(self, answers: list[tuple[tuple[str, ...], str | tuple[int, str]]] = ()):
        self.answers, self.calls = list(answers), []

    def __call__(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        self.calls.append(args)
        answer = next((a for words, a in self.answers if set(words) <= set(args)), "")
        code, text = answer if isinstance(answer, tuple) else (0, answer)
        return subprocess.CompletedProcess(args, code, text if code == 0 else "", text if code else "")


@pytest.fixture
def slurm(monkeypatch) -> FakeSlurm:
    fake = FakeSlurm()
    monkeypatch.setattr(queries, "run_command", fake)
    return fake


# (a) what is asked of SLURM

def test_sbatch_parameters_of_a_cpu_cluster(tmp_path):
    assert params.sbatch_parameters(planned(tmp_path).grid["cluster"]) == {
        "time": 240, "cpus_per_task": 2, "ntasks_per_node": 1, "nodes": 1, "signal_delay_s": 90, "setup": [],
        "additional_parameters": {}}


def test_sbatch_parameters_of_a_gpu_cluster_one_task_per_gpu(tmp_path):
    assert params.sbatch_parameters(planned(tmp_path, GPU_CLUSTER).grid["cluster"]) == {
        "time": 240, "cpus_per_task": 8, "ntasks_per_node": 2, "nodes": 1, "signal_delay_s": 90,
        "setup": ["module load cuda/12.1", "source .venv/bin/activate"], "srun_args": ["--kill-on-bad-exit=1"],
        "partition": "gpu", "account": "kd-lab", "qos": "normal", "constraint": "a100", "gpus_per_node": 2,
        "mem": "64GB", "additional_parameters": {"exclude": "node7", "exclusive": True}}


def test_sbatch_parameters_of_several_cpu_tasks(tmp_path):
    got = params.sbatch_parameters(planned(tmp_path, "tasks_per_job = 2\n").grid["cluster"])
    assert got["ntasks_per_node"] == 2 and got["srun_args"] == ["--kill-on-bad-exit=1"] and "gpus_per_node" not in got


def test_the_array_and_collect_parameters(tmp_path):
    cluster = planned(tmp_path, GPU_CLUSTER).grid["cluster"]
    array = params.array_parameters(cluster, "kd-tiny-student", "c0ffee", "afterok:7_0:7_1")
    assert array["additional_parameters"] == {"exclude": "node7", "exclusive": True, "kill-on-invalid-dep": "yes"}
    assert (array["job_name"], array["comment"], array["dependency"], array["array_parallelism"]) == (
        "kd-tiny-student", "c0ffee", "afterok:7_0:7_1", 64)
    assert "dependency" not in params.array_parameters(cluster, "kd-tiny-teacher", "c0ffee", None)
    collect = params.collect_parameters(cluster, "kd-tiny-collect", ["7", "8"])
    assert (collect["cpus_per_task"], collect["ntasks_per_node"], collect["time"]) == (1, 1, 30)
    assert not {"gpus_per_node", "mem", "constraint", "srun_args"} & set(collect)
    assert collect["partition"] == "gpu" and collect["dependency"] == "afterany:7:8"


def test_test_only_arguments(tmp_path):
    cpu = params.sbatch_parameters(planned(tmp_path).grid["cluster"])
    assert params.test_only_args(cpu, 1) == ["sbatch", "--test-only", "--time=240", "--cpus-per-task=2",
                                             "--ntasks-per-node=1", "--wrap", "true"]
    gpu = params.sbatch_parameters(planned(tmp_path, GPU_CLUSTER).grid["cluster"])
    assert params.test_only_args(gpu, 4) == [
        "sbatch", "--test-only", "--partition=gpu", "--time=240", "--cpus-per-task=8", "--ntasks-per-node=2",
        "--account=kd-lab", "--qos=normal", "--constraint=a100", "--gpus-per-node=2", "--mem=64GB", "--array=0-3",
        "--exclude=node7", "--exclusive", "--wrap", "true"]


def fake_sbatch(monkeypatch) -> None:
    """submitit as on a cluster, with `sbatch` answering like SLURM without queuing anything."""
    import submitit.slurm.slurm as submitit_slurm

    ids = iter(range(101, 200))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    monkeypatch.setattr(submitit_slurm.SlurmExecutor, "_make_submission_command",
                        lambda self, path: ["echo", f"Submitted batch job {next(ids)}"])


def normalised(text: str, root: Path) -> str:
    text = text.replace(str(root.resolve()), "<results>").replace(str(root), "<results>")
    text = text.replace(sys.executable, "<python>")
    return re.sub(r"--comment=[0-9a-f]{32}", "--comment=<unique>", text)


def test_the_sbatch_scripts_submitit_writes_match_the_golden_file(tmp_path, slurm, monkeypatch):
    """The whole submission of a GPU grid (a teacher job, a student array waiting on it, the
    collect job), sbatch's answers faked; the scripts are submitit's own."""
    fake_sbatch(monkeypatch)
    slurm.answers = [(("scontrol",), "MaxArraySize           = 1001\n")]
    plan, root = planned(tmp_path, GPU_CLUSTER), tmp_path / "results" / "tiny"
    executor = SlurmExecutor(root, plan.grid["cluster"])
    arrays = executor.submit([plan.stage("teacher"), plan.stage("student")])
    assert arrays == ["101", "102", "103", "104"]
    grid = GridPaths(root)
    records = {(j.method, j.seed): grid.job(j.key).read_slurm()["task_id"] for j in plan.jobs}
    assert records == {("ce", 7): "101", ("ce", 0): "102_0", ("ce", 1): "102_1", ("kd", 0): "103_0",
                       ("kd", 1): "103_1"}  # the teacher (seed 7), the ce students, the kd students
    assert not grid.slurm_intent.exists()
    scripts = [(grid.slurm / i / f"{i}_submission.sh").read_text() for i in arrays]
    assert "--dependency" not in scripts[0] + scripts[1]  # ce students wait for no teacher
    assert "#SBATCH --dependency=afterok:101\n" in scripts[2]
    assert "#SBATCH --dependency=afterany:101:102:103\n" in scripts[3]
    names = ("teacher", "ce students", "kd students", "collect")
    text = normalised("".join(f"# ---- {name}\n{s}" for name, s in zip(names, scripts)), root)
    if os.environ.get("KD_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the sbatch scripts changed: see this file's docstring to regenerate"


TWO_TEACHERS = TINY_GRID.replace('teacher_set = [["small"]]', 'teacher_set = [["small"], ["big"]]') + """
[teachers.big]
arch = "resnet20"
seed = 8
epochs = 3
"""


def two_teacher_plan(tmp_path: Path) -> gridlib.Plan:
    """Teachers small and big; students ce (needs none), kd with small, kd with big; seeds 0 and 1."""
    path = tmp_path / "grid.toml"
    path.write_text(TWO_TEACHERS.format(root=tmp_path / "data", executor="slurm"))
    return gridlib.plan(gridlib.load(path))


def test_students_are_grouped_by_the_teacher_tasks_they_need(tmp_path):
    from dataclasses import replace

    from harness.executors.slurm import dependency_groups

    plan = two_teacher_plan(tmp_path)
    small, big = plan.stage("teacher")
    students = plan.stage("student")
    both = replace(students[-1], key="both", teachers=(big.key, small.key), teacher_set="big+small")
    label = lambda jobs: sorted((j.method, j.teacher_set, j.seed) for j in jobs)
    queued = {small.key: "101_0", big.key: "101_1"}  # both teachers queued (by this launch or an earlier one)
    groups = dependency_groups(students + [both], queued)
    assert [(needed, label(jobs)) for needed, jobs in groups] == [
        ((), [("ce", "none", 0), ("ce", "none", 1)]),  # no dependency at all
        (("101_0",), [("kd", "small", 0), ("kd", "small", 1)]),
        (("101_1",), [("kd", "big", 0), ("kd", "big", 1)]),
        (("101_0", "101_1"), [("kd", "big+small", 1)])]
    # small has completed (not queued): its students need no dependency and join the ce students
    groups = dependency_groups(students, {big.key: "101_1"})
    assert [(needed, label(jobs)) for needed, jobs in groups] == [
        ((), [("ce", "none", 0), ("ce", "none", 1), ("kd", "small", 0), ("kd", "small", 1)]),
        (("101_1",), [("kd", "big", 0), ("kd", "big", 1)])]
    assert dependency_groups(plan.stage("teacher"), queued) == [((), plan.stage("teacher"))]


def test_each_teacher_set_gets_its_own_student_array(tmp_path, slurm, monkeypatch):
    """Submitted (sbatch faked): each teacher as a job of its own, the ce students in an array
    without a dependency, then one array per teacher waiting on that teacher's job alone; a teacher
    still queued from an earlier launch counts as queued."""
    fake_sbatch(monkeypatch)
    plan, root = two_teacher_plan(tmp_path), tmp_path / "results" / "tiny"
    written(plan, root)
    small, big = plan.stage("teacher")
    executor = SlurmExecutor(root, plan.grid["cluster"])
    slurm.answers = [(("scontrol",), "MaxArraySize = 1001\n")]
    arrays = executor.submit([plan.stage("teacher"), plan.stage("student")])
    assert arrays == ["101", "102", "103", "104", "105", "106"]
    scripts = {i: (GridPaths(root).slurm / i / f"{i}_submission.sh").read_text() for i in arrays}
    dependency = {i: re.findall(r"--dependency=(\S+)", text) for i, text in scripts.items()}
    job_name = {i: re.findall(r"--job-name=(\S+)", text)[0] for i, text in scripts.items()}
    tasks = {(j.method, j.teacher_set, j.seed): executor.record(j.key)["task_id"] for j in plan.jobs}
    assert tasks == {("ce", "none", 7): "101", ("ce", "none", 8): "102", ("ce", "none", 0): "103_0",
                     ("ce", "none", 1): "103_1", ("kd", "small", 0): "104_0", ("kd", "small", 1): "104_1",
                     ("kd", "big", 0): "105_0", ("kd", "big", 1): "105_1"}
    assert dependency == {"101": [], "102": [], "103": [], "104": ["afterok:101"], "105": ["afterok:102"],
                          "106": ["afterany:101:102:103:104:105"]}
    assert job_name == {"101": "kd-tiny-teacher", "102": "kd-tiny-teacher", "103": "kd-tiny-student",
                        "104": "kd-tiny-student-small", "105": "kd-tiny-student-big", "106": "kd-tiny-collect"}
    # relaunched with big still queued from then (squeue), small completed: one array waits on big alone
    atomic_write_json(GridPaths(root).job(small.key).result, {"status": "completed"})
    slurm.answers += [(("squeue",), "102|PENDING|Priority|N/A\n")]
    again = executor.submit([[], [j for j in plan.stage("student") if j.method == "kd"]])
    assert again == ["107", "108", "109"]
    assert [re.findall(r"--dependency=(\S+)", (GridPaths(root).slurm / i / f"{i}_submission.sh").read_text())
            for i in again] == [[], ["afterok:102"], ["afterany:107:108"]]


def test_a_student_whose_teacher_did_not_complete_does_not_start(tmp_path):
    """What SlurmTask checks first: SLURM counts a dependency on a vanished task as satisfied."""
    from harness.executors.slurm import teachers_not_completed

    grid = GridPaths(tmp_path / "results" / "tiny")
    external = tmp_path / "elsewhere.pt"
    spec = {"stage": "student", "method": "kd", "seed": 0, "config": {}, "teachers": []}
    atomic_write_json(grid.job("t1").spec, {**spec, "key": "t1", "stage": "teacher"})
    atomic_write_json(grid.job("t2").spec, {**spec, "key": "t2", "stage": "teacher"})
    atomic_write_json(grid.job("s").spec, {**spec, "key": "s", "teachers": [
        ["resnet20", str(grid.job("t1").model)], ["resnet20", str(grid.job("t2").model)], ["resnet56", str(external)]]})
    assert teachers_not_completed(grid.job("s").folder) == ["t1", "t2", str(external)]
    atomic_write_json(grid.job("t1").result, {"status": "completed"})
    atomic_write_json(grid.job("t2").result, {"status": "failed"})
    grid.job("t2").model.write_bytes(b"")  # a model written, then the job failed: not completed
    external.write_bytes(b"")
    assert teachers_not_completed(grid.job("s").folder) == ["t2"]


@pytest.fixture
def signal_handlers():
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_sigterm_stops_the_task_unless_submitit_requeues_it(signal_handlers, monkeypatch):
    """A task's SIGTERM handler (scancel, requeue): KeyboardInterrupt after a short grace; but a
    USR2 (submitit: checkpoint, requeue, exit) before it or during the grace has its way."""
    import signal
    import threading
    import time

    import harness.executors.slurm as executor

    monkeypatch.setattr(executor, "STOP_GRACE_S", 0.3)
    calls = []

    def submitits(signum, frame):  # as submitit's handler: requeues, then exits; SLURM's SIGTERM meanwhile
        calls.append("checkpoint")
        signal.raise_signal(signal.SIGTERM)
        calls.append("requeued")
        raise SystemExit(-1)

    signal.signal(signal.SIGUSR2, submitits)
    executor.stop_on_sigterm()
    began = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):  # scancel
        signal.raise_signal(signal.SIGTERM)
    assert 0.3 <= time.perf_counter() - began < 2
    with pytest.raises(SystemExit):  # a time limit's USR2, SIGTERM on its heels
        signal.raise_signal(signal.SIGUSR2)
    assert calls == ["checkpoint", "requeued"]
    calls.clear()
    signal.signal(signal.SIGUSR2, submitits)  # a fresh task: preempted, SIGTERM just before the USR2
    executor.stop_on_sigterm()
    threading.Timer(0.1, signal.pthread_kill, [threading.main_thread().ident, signal.SIGUSR2]).start()
    began = time.perf_counter()
    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGTERM)
    assert calls == ["checkpoint", "requeued"] and time.perf_counter() - began < 0.3  # within the grace


# (c) which grid key a refusal concerns

@pytest.mark.parametrize("message, key", [
    ("sbatch: error: invalid partition specified: nope", "cluster.partition"),
    ("Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)",
     "cluster.timeout_min"),
    ("Batch job submission failed: Invalid account or account/partition combination specified", "cluster.account"),
    ("Batch job submission failed: Invalid qos specification", "cluster.qos"),
    ("Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time "
     "limits)", "cluster.qos"),
    ("Memory specification can not be satisfied\nBatch job submission failed: Requested node configuration is not "
     "available", "cluster.mem_gb"),
    ("Batch job submission failed: Invalid generic resource (gres) specification", "cluster.gpus_per_job"),
    ("Batch job submission failed: Invalid feature specification", "cluster.constraint"),
    ("Batch job submission failed: Requested node configuration is not available", "cluster.cpus_per_task"),
    ("CPU count per node can not be satisfied\nBatch job submission failed: Requested node configuration is not "
     "available", "cluster.cpus_per_task"),
    ("Batch job submission failed: More processors requested than permitted", "cluster.cpus_per_task"),
    ("Batch job submission failed: Invalid job array specification", "cluster"),
    ("unrecognized option '--frobnicate'", "cluster.sbatch_args"),
])
def test_a_refusal_is_blamed_on_the_key_it_concerns(message, key):
    assert params.refused_key(message) == key


def test_check_asks_sbatch_test_only_and_names_the_key_it_refuses(tmp_path, slurm):
    plan = planned(tmp_path)
    executor = SlurmExecutor(tmp_path / "results" / "tiny", plan.grid["cluster"])
    executor.check([])
    assert slurm.calls == []  # nothing to queue, nothing to ask
    slurm.answers = [(("scontrol",), "MaxArraySize = 3\n"),
                     (("sbatch",), (1, "sbatch: error: Batch job submission failed: Invalid account or "
                                       "account/partition combination specified\n"))]
    with pytest.raises(SlurmError) as refused:
        executor.check(plan.jobs)
    assert refused.value.key == "cluster.account"
    assert str(refused.value) == ("cluster.account: SLURM refused the job parameters: Batch job submission failed: "
                                  "Invalid account or account/partition combination specified")
    assert slurm.calls[-1][:2] == ["sbatch", "--test-only"] and "--array=0-2" in slurm.calls[-1]  # MaxArraySize
    slurm.answers[1] = (("sbatch",), "sbatch: Job 7 to start at 2026-01-01T00:00:00 using 2 processors")
    executor.check(plan.jobs)


# (d) reading sacct and squeue

SACCT_STATES = """4101|COMPLETED|None
4102_0|COMPLETED|None
4102_1|CANCELLED by 0|None
4102_2|FAILED|NonZeroExitCode
4102_3|REQUEUED|None
4102_[4-5]|PENDING|Dependency
4103|TIMEOUT|None
4104||
4105_[0,2-3%2]|CANCELLED|Dependency
"""  # as SLURM 22.05 answers: an array cancelled before its tasks started keeps its one line
SQUEUE_STATES = """4102_3|PENDING|BeginTime|2026-11-25T23:32:58
4102_4|PENDING|Dependency|N/A
4102_5|RUNNING|None|2026-11-25T23:30:55
"""


def test_task_states_from_sacct_and_squeue(slurm):
    slurm.answers = [(("sacct",), SACCT_STATES), (("squeue",), SQUEUE_STATES)]
    ids = ["4101", "4102_0", "4102_1", "4102_2", "4102_3", "4102_4", "4102_5", "4103", "4104", "4105_0", "4105_1",
           "4105_3", "4199_0"]
    assert queries.task_states(ids) == {
        "4101": "COMPLETED", "4102_0": "COMPLETED", "4102_1": "CANCELLED", "4102_2": "FAILED",
        "4102_3": "PENDING",  # requeued: squeue's word wins over sacct's
        "4102_4": "PENDING", "4102_5": "RUNNING", "4103": "TIMEOUT", "4104": "UNKNOWN",
        "4105_0": "CANCELLED", "4105_1": "UNKNOWN", "4105_3": "CANCELLED",  # sacct's 4105_[0,2-3%2] read as its tasks
        "4199_0": "UNKNOWN"}
    assert slurm.calls == [["sacct", "-n", "-X", "-P", "-o", "JobID,State,Reason", "-j", "4101,4102,4103,4104,4105,4199"],
                           ["squeue", "-h", "-r", "-o", "%i|%T|%r|%S", "-j", "4101,4102,4103,4104,4105,4199"]]
    got = queries.tasks(["4102_2", "4102_3", "4102_5", "4105_2"])
    assert got == {"4102_2": queries.Task("FAILED", "NonZeroExitCode"),
                   "4102_3": queries.Task("PENDING", "BeginTime", "2026-11-25T23:32:58"),
                   "4102_5": queries.Task("RUNNING", "", "2026-11-25T23:30:55"),
                   "4105_2": queries.Task("CANCELLED", "Dependency")}
    assert queries.waiting_reason(got["4102_3"]) == "requeued, restarts after its delay (at 23:32:58)"
    assert queries.task_states([]) == {} and len(slurm.calls) == 4


@pytest.mark.parametrize("reason, said", [
    ("", "queued"), ("Resources", "waiting for free resources"), ("Priority", "waiting behind jobs of higher priority"),
    ("JobArrayTaskLimit", "waiting: array_parallelism tasks of its array are running"),
    ("QOSMaxJobsPerUserLimit", "waiting: a limit of its QOS or account (QOSMaxJobsPerUserLimit)"),
    ("Reservation", "Reservation")])  # one this does not know: SLURM's word
def test_why_a_task_waits(reason, said):
    assert queries.waiting_reason(queries.Task("PENDING", reason, "N/A")) == said


@pytest.mark.parametrize("slurm, folder, shown", [
    ("PENDING", "new", "pending"), ("REQUEUED", "partial", "pending"), ("RUNNING", "partial", "running"),
    ("COMPLETING", "new", "running"), ("CANCELLED", "partial", "interrupted"), ("CANCELLED", "new", "pending"),
    ("TIMEOUT", "partial", "interrupted"), ("OUT_OF_MEMORY", "new", "pending"), ("UNKNOWN", "partial", "interrupted"),
    ("", "new", "pending"), ("CANCELLED", "completed", "completed"), ("RUNNING", "failed", "failed")])
def test_slurms_words_onto_the_harness_states(slurm, folder, shown):
    """One vocabulary: runs.parquet's (State.shown) for what ended, `pending`/`running` for what SLURM holds."""
    from harness.run.layout import State

    assert queries.shown_state(slurm, State(folder)) == shown


def test_accounting_sums_every_attempt_of_a_task(slurm):
    slurm.answers = [(("sacct",), """4102_0|3600|billing=2,cpu=2,gres/gpu:a100=1,gres/gpu=1,mem=8G,node=1|COMPLETED
4102_1|1800|billing=4,cpu=4,gres/gpu=2,mem=16G,node=1|REQUEUED
4102_1|1800|billing=4,cpu=4,gres/gpu=2,mem=16G,node=1|COMPLETED
4102_2|0||CANCELLED by 0
4102_[3-4]|0||PENDING
4102_5|Unknown||RUNNING
4103|60|cpu=1,mem=1G,node=1|COMPLETED
""")]
    assert queries.accounting(["4102_0", "4102_1", "4102_2", "4102_3", "4102_5"]) == {
        "4102_0": {"elapsed_s": 3600.0, "cpu_hours": 2.0, "gpu_hours": 1.0},
        "4102_1": {"elapsed_s": 3600.0, "cpu_hours": 4.0, "gpu_hours": 2.0},
        "4102_2": {"elapsed_s": 0.0, "cpu_hours": 0.0, "gpu_hours": 0.0}}
    assert slurm.calls == [["sacct", "-n", "-X", "-P", "--duplicates", "-o", "JobID,ElapsedRaw,AllocTRES,State",
                            "-j", "4102"]]


def test_queued_or_running_jobs_are_left_alone_and_ended_ones_run_again(tmp_path, slurm):
    root = tmp_path / "results" / "tiny"
    plan = written(planned(tmp_path), root)
    executor = SlurmExecutor(root, plan.grid["cluster"])
    teacher, *students = plan.jobs
    executor.write_records({teacher.key: "4101", students[0].key: "4102_0", students[1].key: "4102_1"})
    slurm.answers = [(("sacct",), "4101|RUNNING|None\n4102_0|CANCELLED by 0|None\n"),
                     (("squeue",), "4102_1|PENDING|Priority|N/A\n")]
    assert executor.to_run(plan.jobs) == students[:1] + students[2:]  # the cancelled one again, the two new
    assert executor.active([students[2].key, students[3].key]) == {}


def test_a_launcher_killed_mid_submission_finds_its_array_by_comment(tmp_path, slurm):
    plan = planned(tmp_path)
    root = tmp_path / "results" / "tiny"
    executor = SlurmExecutor(root, plan.grid["cluster"])
    students = plan.stage("student")
    atomic_write_json(GridPaths(root).slurm_intent, {"comment": "c0ffee", "keys": [j.key for j in students]})
    slurm.answers = [(("%F %k",), "4100 other\n4102 c0ffee\n4102 c0ffee\n")]
    executor.recover_interrupted_submission()
    assert {j.key: executor.record(j.key)["task_id"] for j in students} == {
        j.key: f"4102_{i}" for i, j in enumerate(students)}
    assert not GridPaths(root).slurm_intent.exists()


def status_grid(tmp_path: Path):
    """The two-teacher grid's folders, planned as the launcher leaves them, with SLURM records:
    teachers 4100 (small) and 4101 (big), ce students 4102_0/1, kd-small 4103_0/1, kd-big 4104_0/1."""
    root = tmp_path / "results" / "tiny"
    plan = written(two_teacher_plan(tmp_path), root)
    atomic_write_json(GridPaths(root).plan, gridlib.to_record(plan))
    jobs = {(j.method, j.teacher_set, j.seed): j for j in plan.jobs}
    tasks = {("ce", "none", 7): "4100", ("ce", "none", 8): "4101", ("ce", "none", 0): "4102_0",
             ("ce", "none", 1): "4102_1", ("kd", "small", 0): "4103_0", ("kd", "small", 1): "4103_1",
             ("kd", "big", 0): "4104_0", ("kd", "big", 1): "4104_1"}
    SlurmExecutor(root, plan.grid["cluster"]).write_records({jobs[k].key: t for k, t in tasks.items()})
    return root, jobs


def started(root: Path, job, epochs: int = 1) -> None:
    """The job ran `epochs` epochs and left its checkpoint (then stopped)."""
    paths = GridPaths(root).job(job.key)
    atomic_write_json(paths.attempts, {"attempts": 1, "wall_time_s": 3.0})
    atomic_write_json(paths.epochs, [{"epoch": e + 1, "val_top1": 20.0} for e in range(epochs)])
    paths.checkpoint.write_bytes(b"")


def test_status_says_why_a_job_waits(tmp_path, slurm):
    """Teacher small runs, big waits for resources; the kd students wait for their own teacher; a
    ce student was requeued and sits in SLURM's requeue delay, the other runs."""
    from harness.analysis.status import job_rows, main, status_table

    root, jobs = status_grid(tmp_path)
    started(root, jobs[("ce", "none", 0)])
    slurm.answers = [(("sacct",), "4100|RUNNING|None\n4101|PENDING|Resources\n4102_0|REQUEUED|None\n"
                                  "4102_1|RUNNING|None\n4103_[0-1]|PENDING|Dependency\n4104_[0-1]|PENDING|Dependency\n"),
                     (("squeue",), "4100|RUNNING|None|2026-11-25T23:30:55\n4101|PENDING|Resources|N/A\n"
                                   "4102_0|PENDING|BeginTime|2026-11-25T23:32:58\n4102_1|RUNNING|None|2026-11-25T23:31:00\n"
                                   "4103_0|PENDING|Dependency|N/A\n4103_1|PENDING|Dependency|N/A\n"
                                   "4104_0|PENDING|Dependency|N/A\n4104_1|PENDING|Dependency|N/A\n")]
    rows = {(r["job"].method, r["job"].teacher_set, r["job"].seed): r for r in job_rows(root)}
    assert {k: (r["state"], r["reason"]) for k, r in rows.items()} == {
        ("ce", "none", 7): ("running", ""),
        ("ce", "none", 8): ("pending", "waiting for free resources"),
        ("ce", "none", 0): ("pending", "requeued, restarts after its delay (at 23:32:58)"),
        ("ce", "none", 1): ("running", ""),
        ("kd", "small", 0): ("pending", "waiting for teacher small (task 4100)"),
        ("kd", "small", 1): ("pending", "waiting for teacher small (task 4100)"),
        ("kd", "big", 0): ("pending", "waiting for teacher big (task 4101)"),
        ("kd", "big", 1): ("pending", "waiting for teacher big (task 4101)")}
    table = render(status_table(root, list(rows.values())))
    assert "4102_0 PENDING (BeginTime)" in table and "waiting for teacher big (task 4101)" in table
    assert main([str(root)]) == 1


def test_status_says_why_a_job_ended_in_the_words_of_runs_parquet(tmp_path, slurm):
    """Teacher big failed: SLURM cancelled the kd-big students (one before squeue let it go, one
    already gone); teacher small completed and so did its students but one, cancelled mid-training
    (scancel); a ce student timed out for good. The states are runs.parquet's words (interrupted,
    not cancelled), SLURM's own next to them."""
    from harness.analysis.collect import collect
    from harness.analysis.status import failures, job_rows, main

    root, jobs = status_grid(tmp_path)
    for key in (("ce", "none", 7), ("ce", "none", 1), ("kd", "small", 0)):
        started(root, jobs[key], 3)
        atomic_write_json(GridPaths(root).job(jobs[key].key).result, {"status": "completed"})
    started(root, jobs[("ce", "none", 8)])
    atomic_write_json(GridPaths(root).job(jobs[("ce", "none", 8)].key).result,
                      {"status": "failed", "error": "Traceback ...\nNonFiniteLoss: loss term 'ce' became non-finite"})
    started(root, jobs[("ce", "none", 0)], 2)
    started(root, jobs[("kd", "small", 1)], 2)
    slurm.answers = [(("sacct",), "4100|COMPLETED|None\n4101|FAILED|NonZeroExitCode\n4102_0|TIMEOUT|None\n"
                                  "4102_1|COMPLETED|None\n4103_0|COMPLETED|None\n4103_1|CANCELLED by 0|None\n"
                                  "4104_0|CANCELLED|Dependency\n"),
                     (("squeue",), "4104_1|PENDING|DependencyNeverSatisfied|N/A\n")]
    rows = {(r["job"].method, r["job"].teacher_set, r["job"].seed): r for r in job_rows(root)}
    assert {k: (r["state"], r["reason"]) for k, r in rows.items()} == {
        ("ce", "none", 7): ("completed", ""),
        ("ce", "none", 8): ("failed", "NonFiniteLoss: loss term 'ce' became non-finite"),
        ("ce", "none", 0): ("interrupted", "time limit reached, not requeued; the next launch resumes it"),
        ("ce", "none", 1): ("completed", ""),
        ("kd", "small", 0): ("completed", ""),
        ("kd", "small", 1): ("interrupted", "cancelled; the next launch resumes it"),
        ("kd", "big", 0): ("pending", "cancelled: teacher big failed (task 4101)"),
        ("kd", "big", 1): ("pending", "teacher big failed (task 4101): SLURM cancels it")}
    words = {r["job_key"]: r["status"] for r in collect(root)[0].to_pylist()}
    assert {r["job"].key: r["state"] for r in rows.values()} == words  # one vocabulary
    listed = failures(list(rows.values()))
    assert [line.split(":")[0] for line in listed] == [
        f"teacher {jobs[('ce', 'none', 8)].key} failed (NonFiniteLoss",
        f"student {jobs[('ce', 'none', 0)].key} interrupted (time limit reached, not requeued; the next launch resumes it)",
        f"student {jobs[('kd', 'small', 1)].key} interrupted (cancelled; the next launch resumes it)",
        f"student {jobs[('kd', 'big', 0)].key} pending (cancelled"]
    assert "(no log)" in listed[-1]
    assert main([str(root)]) == 1


def render(table) -> str:
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(table)
    return console.export_text()
