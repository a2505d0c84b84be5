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
    assert arrays == ["101", "102", "103"]
    grid = GridPaths(root)
    records = {j.key: grid.job(j.key).read_slurm()["task_id"] for j in plan.jobs}
    assert sorted(records.values()) == ["101", "102_0", "102_1", "102_2", "102_3"]
    assert not grid.slurm_intent.exists()
    scripts = [(grid.slurm / i / f"{i}_submission.sh").read_text() for i in arrays]
    assert "#SBATCH --dependency=afterok:101" in scripts[1] and "#SBATCH --dependency=afterany:101:102" in scripts[2]
    text = normalised("".join(f"# ---- {name}\n{s}" for name, s in zip(("teacher", "students", "collect"), scripts)),
                      root)
    if os.environ.get("KD_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "the sbatch scripts changed: see this file's docstring to regenerate"


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

SACCT_STATES = """4101|COMPLETED
4102_0|COMPLETED
4102_1|CANCELLED by 0
4102_2|FAILED
4102_3|REQUEUED
4102_[4-5]|PENDING
4103|TIMEOUT
4104|
"""
SQUEUE_STATES = """4102_3 PENDING
4102_4 PENDING
4102_5 RUNNING
"""


def test_task_states_from_sacct_and_squeue(slurm):
    slurm.answers = [(("sacct",), SACCT_STATES), (("squeue",), SQUEUE_STATES)]
    ids = ["4101", "4102_0", "4102_1", "4102_2", "4102_3", "4102_4", "4102_5", "4103", "4104", "4199_0"]
    assert queries.task_states(ids) == {
        "4101": "COMPLETED", "4102_0": "COMPLETED", "4102_1": "CANCELLED", "4102_2": "FAILED",
        "4102_3": "PENDING",  # requeued: squeue's word wins over sacct's
        "4102_4": "PENDING", "4102_5": "RUNNING",  # sacct knows a pending array only as 4102_[4-5]
        "4103": "TIMEOUT", "4104": "UNKNOWN", "4199_0": "UNKNOWN"}
    assert slurm.calls == [["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", "4101,4102,4103,4104,4199"],
                           ["squeue", "-h", "-r", "-o", "%i %T", "-j", "4101,4102,4103,4104,4199"]]
    assert queries.task_states([]) == {} and len(slurm.calls) == 2


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
    slurm.answers = [(("sacct",), "4101|RUNNING\n4102_0|CANCELLED by 0\n"), (("squeue",), "4102_1 PENDING\n")]
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


def test_status_shows_slurms_word_where_the_folder_says_nothing_final(tmp_path, slurm):
    from harness.analysis.status import failures, job_rows

    root = tmp_path / "results" / "tiny"
    plan = written(planned(tmp_path), root)
    atomic_write_json(GridPaths(root).plan, gridlib.to_record(plan))
    teacher, running, cancelled, requeued, new = plan.jobs
    atomic_write_json(GridPaths(root).job(teacher.key).result, {"status": "completed"})
    executor = SlurmExecutor(root, plan.grid["cluster"])
    executor.write_records({teacher.key: "4101", running.key: "4102_0", cancelled.key: "4102_1",
                            requeued.key: "4102_2"})
    slurm.answers = [(("sacct",), "4101|COMPLETED\n4102_0|RUNNING\n4102_1|CANCELLED by 0\n4102_2|REQUEUED\n"),
                     (("squeue",), "4102_0 RUNNING\n4102_2 PENDING\n")]
    rows = {r["job"].key: r for r in job_rows(root)}
    assert {key: (r["state"], r["task"]) for key, r in rows.items()} == {
        teacher.key: ("completed", "4101"), running.key: ("running", "4102_0"),
        cancelled.key: ("cancelled", "4102_1"), requeued.key: ("pending", "4102_2"), new.key: ("pending", "")}
    (failed,) = failures(list(rows.values()))
    assert failed.startswith(f"student {cancelled.key} cancelled: ") and "(no log)" in failed
