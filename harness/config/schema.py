"""Every valid key of a grid file: its type, default and meaning. The single place that defines
valid parameters: validation (`harness.config.grid`), the README's key reference and `--help` read it.

`affects_result=False` marks keys left out of the job key (the key covers everything
that changes the result and nothing that does not).
"""
from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

from harness.data.datasets import NAMES as DATASETS
from harness.models import ARCHS
from harness.config.precision import CHOICES as PRECISIONS

REQUIRED = object()
SEED_MAX = 2**31 - 1  # seeds feed 64-bit generator arithmetic (seed · 100003 + epoch): keep it far from overflow


@dataclass(frozen=True)
class Key:
    type: str  # "str" | "int" | "float" | "bool" | "list[int]" | "list[float]" | "list[str]" | "list[list[str]]"
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple = ()
    minimum: float | None = None
    optional: bool = False  # may be absent (None) with no default
    affects_result: bool = True
    maximum: float | None = None
    above: float | None = None  # a strict lower bound (e.g. a learning rate of 0 trains nothing)



TOP = {
    "name": Key("str", doc="grid name: results go to <out>/<name>/"),
    "description": Key("str", "", "free text, copied into the report", affects_result=False),
}

DATA = {
    "dataset": Key("str", "cifar10", "the data set (its classes set the models' outputs)", choices=DATASETS),
    "root": Key("str", "~/data", "cache written by `python -m harness.data prepare --root`", affects_result=False),
    "val_size": Key("int", 5000, "validation images held out of the 50k training set, stratified", minimum=10),
    "split_seed": Key("int", 0, "seed of the train/val split: fixed, never the run's seed", minimum=0, maximum=SEED_MAX),
    "limit_train": Key("int", doc="seeded stratified subset of the training split (quick runs)", optional=True, minimum=10),
    "limit_test": Key("int", doc="seeded stratified subset of the test set (quick runs)", optional=True, minimum=10),
}

TRAIN = {
    "arch": Key("str", "resnet20", "student architecture (of the one student of a grid without [students.NAME] "
                "tables; leave it out where there are some)", choices=ARCHS),
    "epochs": Key("int", 200, "training epochs", minimum=1),
    "batch_size": Key("int", 128, "global batch size (split across ranks)", minimum=1),
    "optimizer": Key("str", "sgd", "optimizer", choices=("sgd",)),
    "lr": Key("float", 0.1, "peak learning rate", above=0),
    "momentum": Key("float", 0.9, "SGD momentum", minimum=0, maximum=1),
    "nesterov": Key("bool", True, "Nesterov momentum"),
    "weight_decay": Key("float", 5e-4, "L2 weight decay", minimum=0),
    "schedule": Key("str", "multistep", "learning-rate schedule", choices=("multistep", "cosine", "constant")),
    "milestones": Key("list[float]", [0.5, 0.75], "multistep: epochs where lr *= gamma; values < 1 are fractions of `epochs`"),
    "gamma": Key("float", 0.1, "multistep: lr factor at each milestone", minimum=0),
    "warmup_epochs": Key("float", 0.0, "linear warm-up from 0, in epochs", minimum=0),
    "label_smoothing": Key("float", 0.0, "label smoothing of the cross-entropy", minimum=0, maximum=1),
    "mixed_precision": Key("str", "auto", "autocast precision; auto: bf16 where the hardware has it natively "
                           "(Ampere+ GPUs, CPUs with AVX-512 BF16/AMX), else float32; fp16 needs a GPU",
                           choices=PRECISIONS),
    "eval_batch_size": Key("int", 1000, "batch size of evaluation", minimum=1, affects_result=False),
    "channels_last": Key("bool", True, "NHWC memory format for the convnets", affects_result=False),
    "compile": Key("bool", False, "torch.compile student and teachers (minutes of compilation; pays off on GPUs)",
                   affects_result=False),
    "deterministic": Key("bool", False, "deterministic kernels (slower on GPUs; bit-identical reruns and resumes there)",
                         affects_result=False),
}

# A teacher: an architecture and seed, its own recipe where it differs from [train] (every [train]
# key but `arch` may be overridden), or a checkpoint trained elsewhere.
TEACHER = {
    "arch": Key("str", doc="teacher architecture", choices=ARCHS),
    "seed": Key("int", 0, "the teacher's training seed (fixed across student seeds)", minimum=0, maximum=SEED_MAX),
    "checkpoint": Key("str", doc="weights trained elsewhere: no teacher job", optional=True),
    **{name: replace(k, default=None, doc=f"override of train.{name}", optional=True)
       for name, k in TRAIN.items() if name != "arch"},
}

# A student: an architecture, the teacher sets it learns from, and its own recipe where it differs
# from [train] (every [train] key but `arch`). Without any [students.NAME] table, [train] is the one
# student. A `methods` sub-table ([students.NAME.methods.METHOD]) is checked apart (`grid.check_students`).
STUDENT = {
    "arch": Key("str", doc="student architecture", choices=ARCHS),
    "teacher_sets": Key("list[list[str]]", doc="the teacher sets it learns from, each a list of [teachers.<name>] "
                        "names (default: grid.teacher_set); a variant's own teacher_sets still win", optional=True),
    **{name: replace(k, default=None, doc=f"override of train.{name}", optional=True)
       for name, k in TRAIN.items() if name != "arch"},
}

GRID = {
    "method": Key("list[str]", doc="methods: a term (`kd`), a composition (`kd+at`) or a [methods.<name>] variant"),
    "seed": Key("list[int]", [0], "student seeds (distinct)", minimum=0, maximum=SEED_MAX),
    "teacher_set": Key("list[list[str]]", [], "teacher sets, each a list of [teachers.<name>] names (of every "
                       "student without its own teacher_sets)"),
}

_cluster = dict(affects_result=False)
CLUSTER = {
    "executor": Key("str", "local", "where jobs run: one process after another; in-process for pdb; "
                    "SLURM job arrays through submitit", choices=("local", "debug", "slurm"), **_cluster),
    "debug_limit_train": Key("int", 512, "debug executor: limit_train where the grid sets none", minimum=10, **_cluster),
    "debug_limit_test": Key("int", 500, "debug executor: limit_test where the grid sets none", minimum=10, **_cluster),
    "partition": Key("str", doc="slurm: partition (default: the cluster's default)", optional=True, **_cluster),
    "account": Key("str", doc="slurm: account to charge", optional=True, **_cluster),
    "qos": Key("str", doc="slurm: quality of service", optional=True, **_cluster),
    "timeout_min": Key("int", 240, "slurm: time limit of each job, minutes (a job past it is requeued and resumes)",
                       minimum=1, **_cluster),
    "signal_delay_s": Key("int", 90, "slurm: seconds before the limit when a job checkpoints and requeues", minimum=1, **_cluster),
    "max_requeues": Key("int", 10, "slurm: requeues after timeouts before a job is left failed", minimum=0, **_cluster),
    "cpus_per_task": Key("int", 2, "slurm: CPUs of each task", minimum=1, **_cluster),
    "mem_gb": Key("int", doc="slurm: memory per job in GB", optional=True, minimum=1, **_cluster),
    "gpus_per_job": Key("int", 0, "slurm: GPUs per job (one task per GPU, DDP over NCCL)", minimum=0, **_cluster),
    "tasks_per_job": Key("int", doc="slurm: tasks per job (default: gpus_per_job, or 1 on CPU; >1 on CPU = DDP over gloo)",
                         optional=True, minimum=1, **_cluster),
    "constraint": Key("str", doc="slurm: node features (--constraint)", optional=True, **_cluster),
    "setup": Key("list[str]", [], "slurm: shell lines run before each job (module load, activate the venv)", **_cluster),
    "sbatch_args": Key("list[str]", [], "slurm: extra sbatch options, e.g. [\"--exclude=node7\"]", **_cluster),
    "array_parallelism": Key("int", 64, "slurm: tasks of one array running at once", minimum=1, **_cluster),
}

# Evaluation after training: changes no result of training, so nothing here enters a job key.
_eval = dict(affects_result=False)
EVAL = {
    "corruptions": Key("str|list[str]", [], "CIFAR-10-C corruptions each job is evaluated on at the end: \"all\" "
                       "(every one the cache holds) or names; [] = none. Needs `python -m harness.data prepare "
                       "--cifar10-c ...`", **_eval),
    "severities": Key("list[int]", [1, 2, 3, 4, 5], "CIFAR-10-C severities (1..5)", minimum=1, maximum=5, **_eval),
    "limit": Key("int", doc="CIFAR-10-C: only the first N images of each corruption × severity (quick runs)",
                 optional=True, minimum=1, **_eval),
}

# Experiment tracking (harness.run.tracking): how runs are watched, never what they compute.
# Each backend: the modules it needs, installed by the extra of the same name (pyproject.toml).
TRACKERS = {"tensorboard": ("tensorboard",), "wandb": ("wandb",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}
_tracking = dict(affects_result=False)
TRACKING = {
    "backends": Key("list[str]", [], "experiment trackers, one run per job, resumed with the job: any of "
                    "\"tensorboard\", \"wandb\", \"mlflow\" (each an extra: pip install 'kd-harness[wandb]')",
                    **_tracking),
    "project": Key("str", doc="W&B project and MLflow experiment (default: the grid name)", optional=True, **_tracking),
    "mlflow_uri": Key("str", doc="MLflow tracking URI (default: sqlite:///<out>/<name>/mlflow.db; a relative "
                      "sqlite path is taken from where launch runs)", optional=True, **_tracking),
    "wandb_mode": Key("str", doc="W&B mode; unset: W&B's own setting (WANDB_MODE, `wandb offline`)", optional=True,
                      choices=("online", "offline"), **_tracking),
}

SECTIONS = {"data": DATA, "train": TRAIN, "grid": GRID, "eval": EVAL, "cluster": CLUSTER, "tracking": TRACKING}


def suggest(word: str, options) -> str:
    """'; did you mean X? (allowed: ...)' for a near miss, else the list of what is allowed."""
    options = list(options)
    allowed = f"allowed: {', '.join(repr(o) for o in options)}" if options else ""
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}? ({allowed})"
    return f"; {allowed}" if allowed else ""


def type_ok(value: Any, type_: str) -> bool:
    """Whether a TOML value has the declared type (an int is a valid float; a bool is no int);
    `a|b` accepts either."""
    if "|" in type_:
        return any(type_ok(value, t) for t in type_.split("|"))
    if type_.startswith("list["):
        inner = type_[5:-1]
        return isinstance(value, list) and all(type_ok(v, inner) for v in value)
    if type_ == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is {"str": str, "int": int, "bool": bool}[type_]


def reference_markdown() -> str:
    """The README's key reference, generated from the tables above (`python -m harness.schema`)."""
    sections = [("top level", TOP), ("[data]", DATA), ("[train]", TRAIN),
                ("[teachers.NAME]", TEACHER), ("[students.NAME]", STUDENT), ("[grid]", GRID), ("[eval]", EVAL), ("[cluster]", CLUSTER),
                ("[tracking]", TRACKING)]
    lines = []
    for title, keys in sections:
        lines += [f"**{title}**", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, key in keys.items():
            if title in ("[teachers.NAME]", "[students.NAME]") and name in TRAIN and name != "arch":
                continue
            default = "required" if key.default is REQUIRED and not key.optional else (
                "unset" if key.default in (REQUIRED, None) else f"`{json.dumps(key.default)}`")
            doc = key.doc + (f" ({', '.join(map(str, key.choices))})" if key.choices and len(key.choices) < 8 else "")
            lines.append(f"| `{name}` | {key.type} | {default} | {doc} |")
        if title == "[teachers.NAME]":
            lines.append("| *any `[train]` key but `arch`* | | inherited | the teacher's own recipe |")
        if title == "[students.NAME]":
            lines.append("| *any `[train]` key but `arch`* | | inherited | the student's own recipe |")
            lines.append("| `methods.METHOD` | table | unset | the student's own parameters of a grid method, as in "
                         "`[methods.METHOD]` and laid over it for this student's jobs, e.g. "
                         "`[students.r8x4.methods.dkd] beta = 8` |")
        lines.append("")
    return "\n".join(lines + method_reference())


def method_reference() -> list[str]:
    from methods import TERMS

    lines = ["**[methods.TERM]** (a term's parameters for the whole grid) and **[methods.VARIANT]** "
             "(`terms = [...]` plus any of their parameters; `teacher_sets = [[...], ...]` runs the variant with "
             "these teacher sets instead of the student's `teacher_sets` or `grid.teacher_set`)", "",
             "| term | teachers | parameter | default | what it is |", "| --- | --- | --- | --- | --- |"]
    for name, term in TERMS.items():
        summary = (term.__module__ and sys.modules[term.__module__].__doc__ or "").strip().splitlines()[0]
        for i, (key, default) in enumerate(term.defaults.items() or [("–", None)]):
            lines.append(f"| `{name}` | {'yes' if term.uses_teachers else 'no'} | `{key}` | "
                         f"{'' if default is None else json.dumps(default)} | {summary if i == 0 else ''} |")
    return lines + [""]


def main(argv=None) -> int:
    import argparse

    argparse.ArgumentParser(prog="python -m harness.schema", description="Print the grid-file key reference "
                            "(Markdown), as README.md's 'Grid file reference' holds it.").parse_args(argv)
    print(reference_markdown())
    return 0
