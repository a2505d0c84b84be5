"""What a grid will cost before anything runs: the images each job processes (epochs × training
split, plus the validation pass and the teachers' forward passes) divided by its architecture's
training throughput as measured by `python -m harness.bench archs --record` on each kind of device
(throughput.json beside this module, one entry per kind, naming the device it was measured on, with
figures per batch size: a job is costed at the measured batch size nearest its own).

An estimate, and said to be one: a forward pass is counted as a third of a training step
(forward + backward ≈ 3 forwards), Grad-CAM and causal masks add teacher work it does not count,
and the throughput was measured at one batch size with random images.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import atomic_write_json
from harness.data.datasets import TRAIN_IMAGES

TABLE = Path(__file__).with_name("throughput.json")
FORWARD = 1 / 3  # a forward pass, in training steps


def measured() -> dict:
    """The throughput table: {"cpu" | "cuda": {"device", "images_per_s": {batch: {arch: img/s}}, ...}}."""
    try:
        return json.loads(TABLE.read_text())
    except (OSError, ValueError):
        return {}


def record(kind: str, batch: int, rates: dict[str, float], about: dict) -> None:
    """One device kind's figures at one batch size (`python -m harness.bench archs --record`): kept
    beside its other batch sizes where the device is the same, else the kind's entry starts anew."""
    entry = measured().get(kind, {})
    kept = entry.get("images_per_s", {}) if entry.get("device") == about["device"] else {}
    table = {**measured(), kind: {**about, "images_per_s": {**kept, str(batch): rates}}}
    atomic_write_json(TABLE, table)


def nearest(per_batch: dict[str, dict], batch: int) -> dict[str, float]:
    """The figures measured at the batch size nearest `batch` (by ratio)."""
    return per_batch[min(per_batch, key=lambda b: abs(math.log(int(b) / batch)))]


@dataclass(frozen=True)
class Estimate:
    seconds: float  # of one device (a GPU, or the measured CPU with its threads)
    device: str
    unknown: tuple[str, ...] = ()  # architectures the table has no figure for (left out of `seconds`)


def images(recipe: dict, data: dict) -> int:
    """Training images one job processes: epochs × the training split."""
    n_train = data.get("limit_train") or TRAIN_IMAGES - data["val_size"]
    return recipe["epochs"] * n_train


def job_cost(job, teacher_archs: dict[str, str], data: dict, per_batch: dict[str, dict]) -> tuple[float, set[str]]:
    """Seconds of one job at the rates measured nearest its batch size: its training steps, its
    validation passes and its teachers' forward passes; and the architectures without a rate."""
    rates = nearest(per_batch, job.config["recipe"]["batch_size"])
    archs = [job.arch, *(teacher_archs.get(k, "") for k in job.teachers)]
    missing = {a for a in archs if a not in rates}
    if missing:
        return 0.0, missing
    recipe = job.config["recipe"]
    steps = images(recipe, data) / rates[job.arch]
    validation = recipe["epochs"] * data["val_size"] * FORWARD / rates[job.arch]
    teachers = sum(images(recipe, data) * FORWARD / rates[teacher_archs[k]] for k in job.teachers)
    return steps + validation + teachers, set()


def estimate(plan, jobs: list | None = None, kind: str | None = None) -> Estimate | None:
    """The cost of `jobs` (default: the whole plan) on the device kind its jobs get (cuda where the
    grid asks SLURM for GPUs or, locally, where this host has one; else cpu); None where that
    kind was never measured."""
    kind = kind or device_kind(plan.grid)
    entry = measured().get(kind)
    if not entry:
        return None
    teacher_archs = {j.key: j.arch for j in plan.jobs if j.stage == "teacher"}
    teacher_archs.update({key: t["arch"] for key, t in plan.external.items()})
    seconds, unknown = 0.0, set()
    for job in plan.jobs if jobs is None else jobs:
        s, missing = job_cost(job, teacher_archs, plan.grid["data"], entry["images_per_s"])
        seconds, unknown = seconds + s, unknown | missing
    batches = "/".join(sorted(entry["images_per_s"], key=int))
    threads = f"{entry['threads']} threads, " if kind == "cpu" and "threads" in entry else ""
    return Estimate(seconds, f"{entry['device']} ({entry['precision']}, {threads}batch {batches}, "
                             f"measured {entry['measured']})", tuple(sorted(unknown)))


def device_kind(grid: dict) -> str:
    cluster = grid["cluster"]
    if cluster.get("executor") == "slurm":
        return "cuda" if cluster.get("gpus_per_job") else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def human(seconds: float, kind: str) -> str:
    """≈ 3.1 CPU-days / ≈ 40 GPU-hours."""
    unit = "GPU" if kind == "cuda" else "CPU"
    hours = seconds / 3600
    return f"≈ {hours / 24:.1f} {unit}-days" if hours >= 48 else f"≈ {hours:.1f} {unit}-hours"
