"""What the executor asks SLURM for, from the grid's [cluster] table: submitit's sbatch parameters,
the `sbatch --test-only` command that asks before anything is queued, and the grid key an sbatch
refusal concerns. Pure functions: tests/test_slurm_logic.py checks them without a cluster."""
from __future__ import annotations

from harness.config.grid import world_size

COLLECT = {"cpus_per_task": 1, "ntasks_per_node": 1, "time": 30}  # the collect job: one CPU, half an hour


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


def array_parameters(cluster: dict, name: str, comment: str, dependency: str | None) -> dict:
    """The parameters of one stage's job array: a student array that waits on a teacher that
    failed is cancelled by SLURM (kill-on-invalid-dep), not left pending forever."""
    params = sbatch_parameters(cluster)
    params["additional_parameters"] = {**params["additional_parameters"], "kill-on-invalid-dep": "yes"}
    params.update(array_parallelism=cluster["array_parallelism"], job_name=name, comment=comment)
    if dependency:
        params["dependency"] = dependency
    return params


def collect_parameters(cluster: dict, name: str, arrays: list[str]) -> dict:
    """The collect job's parameters: after every array has ended, whatever their outcome. It keeps
    what reaching the cluster needs (partition, account, qos, setup, sbatch_args) and drops what
    training needs (GPUs, memory, node features, the multi-task srun flags)."""
    params = {**sbatch_parameters(cluster), **COLLECT}
    for training_only in ("gpus_per_node", "mem", "constraint", "srun_args"):
        params.pop(training_only, None)
    return {**params, "job_name": name, "dependency": "afterany:" + ":".join(arrays)}


def test_only_args(params: dict, array_size: int) -> list[str]:
    """The sbatch command that asks SLURM, without queuing, whether it would accept our jobs."""
    flags = {"partition": params.get("partition"), "time": params["time"], "cpus-per-task": params["cpus_per_task"],
             "ntasks-per-node": params["ntasks_per_node"], "account": params.get("account"), "qos": params.get("qos"),
             "constraint": params.get("constraint"), "gpus-per-node": params.get("gpus_per_node"),
             "mem": params.get("mem"), "array": f"0-{array_size - 1}" if array_size > 1 else None}
    args = ["sbatch", "--test-only", *(f"--{k}={v}" for k, v in flags.items() if v is not None)]
    args += [f"--{k}" if v is True else f"--{k}={v}" for k, v in params["additional_parameters"].items()]
    return args + ["--wrap", "true"]


# Words of SLURM's refusals (lower case) → the [cluster] key they concern; the first that occurs
# wins, so the more specific come first. A refusal naming none is blamed on the extra sbatch_args.
REFUSALS = (
    ("invalid account", "cluster.account"),  # "Invalid account or account/partition combination specified"
    ("qos", "cluster.qos"),  # "Invalid qos specification", "Job violates accounting/QOS policy (...)"
    ("partition", "cluster.partition"),  # "invalid partition specified: nope"
    ("time limit", "cluster.timeout_min"),  # "Requested time limit is invalid (missing or exceeds some limit)"
    ("account", "cluster.account"),
    ("memory", "cluster.mem_gb"),  # "Memory specification can not be satisfied"
    ("gres", "cluster.gpus_per_job"),  # "Invalid generic resource (gres) specification"
    ("gpu", "cluster.gpus_per_job"),
    ("feature", "cluster.constraint"),  # "Invalid feature specification"
    ("array", "cluster"),  # more tasks than MaxArraySize
    ("cpu", "cluster.cpus_per_task"),  # "CPU count per node can not be satisfied"
    ("processors", "cluster.cpus_per_task"),  # "More processors requested than permitted"
    # what SLURM says alone where no node has that many CPUs per task (the memory and gres
    # refusals above come with their own words)
    ("node configuration is not available", "cluster.cpus_per_task"),
)


def refused_key(message: str) -> str:
    """The [cluster] key an sbatch refusal is most likely about."""
    text = message.lower()
    return next((key for words, key in REFUSALS if words in text), "cluster.sbatch_args")
