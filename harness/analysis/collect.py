"""Merge the per-job files of a grid into Parquet tables (schema in results/README.md).

    python -m harness.collect results/<grid>

`runs.parquet`: one row per planned job, whatever its state; `epochs.parquet`: one row per job ×
completed epoch, each loss term a `loss_<name>` column. Both are written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness.cli import refusing_unreadable
from harness.config import grid as gridlib
from harness.data import datasets
from harness.run.layout import GridPaths, JobPaths, read_json
from harness.atomic import atomic_write

SCHEMA_VERSION = 1

RUNS_SCHEMA = pa.schema([
    ("schema_version", pa.int32()), ("grid", pa.string()), ("job_key", pa.string()), ("stage", pa.string()),
    ("method", pa.string()), ("seed", pa.int64()), ("teacher_set", pa.string()), ("arch", pa.string()),
    ("status", pa.string()), ("test_top1", pa.float64()), ("best_val_top1", pa.float64()),
    ("test_top1_at_best_val", pa.float64()), ("best_epoch", pa.int64()), ("epochs", pa.int64()),
    ("wall_time_s", pa.float64()), ("train_time_s", pa.float64()), ("train_images_per_s", pa.float64()),
    ("executor", pa.string()), ("slurm_job_id", pa.string()), ("attempts", pa.int64()),
    ("git_commit", pa.string()), ("torch_version", pa.string()), ("device", pa.string()),
    ("mixed_precision", pa.string()), ("world_size", pa.int64()), ("cpu_hours", pa.float64()),
    ("gpu_hours", pa.float64()), ("host", pa.string()), ("error", pa.string()), ("config_json", pa.string()),
    ("test_nll", pa.float64()), ("test_ece", pa.float64()), ("agreement_ensemble", pa.float64()),
    ("agreement_teachers", pa.string()), ("test_per_class_top1", pa.string()), ("test_reliability", pa.string()),
    ("cifar10c_mean_top1", pa.float64()), ("cifar10c_mean_over", pa.string()), ("robustness_eval_s", pa.float64()),
    ("cifar10c_clean_top1", pa.float64()), ("cifar10c_images", pa.int64()), ("dataset", pa.string()),
])
ROBUSTNESS_SCHEMA = pa.schema([
    ("schema_version", pa.int32()), ("job_key", pa.string()), ("corruption", pa.string()), ("severity", pa.int64()),
    ("top1", pa.float64()), ("n", pa.int64()), ("corruption_source", pa.string()),
])
CONFUSION_SCHEMA = pa.schema([("schema_version", pa.int32()), ("job_key", pa.string()), ("true_class", pa.int64()),
                              ("pred_class", pa.int64()), ("count", pa.int64())])
EPOCH_COLUMNS = [("schema_version", pa.int32()), ("job_key", pa.string()), ("epoch", pa.int64()),
                 ("lr", pa.float64()), ("train_loss", pa.float64()), ("train_top1", pa.float64()),
                 ("val_top1", pa.float64()), ("epoch_time_s", pa.float64()), ("images_per_s", pa.float64())]


def run_row(grid: str, job: gridlib.Job, paths: JobPaths, usage: dict[str, dict]) -> dict:
    result = paths.read_result() or {}
    slurm = paths.read_slurm() or {}
    attempts = paths.read_attempts()
    status = result.get("status") or paths.state().shown
    row = {name: result.get(name) for name in RUNS_SCHEMA.names}
    row.update(schema_version=SCHEMA_VERSION, grid=grid, job_key=job.key, stage=job.stage, method=job.method,
               seed=job.seed, teacher_set=job.teacher_set, arch=job.arch, status=status,
               dataset=job.config["data"].get("dataset", datasets.DEFAULT),
               mixed_precision=job.config["recipe"]["mixed_precision"],
               attempts=attempts.get("attempts", 0), wall_time_s=result.get("wall_time_s", attempts.get("wall_time_s")),
               config_json=json.dumps(job.config, sort_keys=True))
    cpu_s = result.get("cpu_time_s", attempts.get("cpu_time_s"))
    row["cpu_hours"] = None if cpu_s is None else cpu_s / 3600  # the job's own processes; SLURM's accounting wins
    if slurm:  # the array task, and what SLURM accounted for it over all attempts
        row["slurm_job_id"] = slurm["task_id"]
        accounted = usage.get(slurm["task_id"], {})
        row.update({k: accounted[k] for k in ("cpu_hours", "gpu_hours") if accounted.get(k) is not None})
    if row["epochs"] is None:
        row["epochs"] = len(paths.read_epochs())
    return row


def epoch_rows(job: gridlib.Job, paths: JobPaths) -> list[dict]:
    return [{"schema_version": SCHEMA_VERSION, "job_key": job.key, **r} for r in paths.read_epochs()]


def confusion_rows(job: gridlib.Job, paths: JobPaths) -> list[dict]:
    return [{"schema_version": SCHEMA_VERSION, "job_key": job.key, "true_class": c["true"],
             "pred_class": c["pred"], "count": c["count"]}
            for c in read_json(paths.confusion) or []]


def robustness_rows(job: gridlib.Job, paths: JobPaths) -> list[dict]:
    return [{"schema_version": SCHEMA_VERSION, "job_key": job.key, **{k: r[k] for k in ROBUSTNESS_SCHEMA.names[2:]}}
            for r in (read_json(paths.robustness) or {}).get("rows", [])]


def epochs_schema(rows: list[dict]) -> pa.Schema:
    """The fixed columns, then each loss term and method summary (e.g. a mask's kept fraction)
    that any job logged, as float columns (null where a job's method has none)."""
    fixed = {name for name, _ in EPOCH_COLUMNS}
    extra = sorted({k for r in rows for k in r if k not in fixed})
    return pa.schema(EPOCH_COLUMNS + [(name, pa.float64()) for name in extra])


def write_parquet(table: pa.Table, path: Path) -> None:
    """Atomic: a reader sees the old table or the new one, never half of one."""
    atomic_write(path, lambda f: pq.write_table(table, f))


def slurm_accounting(tasks: list[str]) -> dict[str, dict]:
    from harness.executors.slurm.queries import accounting

    try:
        return accounting(tasks)
    except (OSError, subprocess.SubprocessError):  # no SLURM here (results copied off the cluster)
        return {}


def collect(root: Path) -> tuple[pa.Table, pa.Table]:
    """Read every planned job's files under `root` (results/<grid>) and write both tables."""
    grid = GridPaths(root)
    record = grid.read_plan()
    jobs = [(j, grid.job(j.key)) for j in gridlib.from_record(record)]
    tasks = [r["task_id"] for _, paths in jobs if (r := paths.read_slurm())]
    usage = slurm_accounting(tasks) if tasks else {}
    runs = [run_row(record["name"], j, paths, usage) for j, paths in jobs]
    epochs = [row for j, paths in jobs for row in epoch_rows(j, paths)]
    schema = epochs_schema(epochs)
    runs_table = pa.Table.from_pylist(runs, schema=RUNS_SCHEMA)
    epochs_table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in epochs], schema=schema)
    write_parquet(runs_table, grid.runs_table)
    write_parquet(epochs_table, grid.epochs_table)
    confusion = [row for j, paths in jobs for row in confusion_rows(j, paths)]
    write_parquet(pa.Table.from_pylist(confusion, schema=CONFUSION_SCHEMA), grid.confusion_table)
    robustness = [row for j, paths in jobs for row in robustness_rows(j, paths)]
    write_parquet(pa.Table.from_pylist(robustness, schema=ROBUSTNESS_SCHEMA), grid.robustness_table)
    for path in (p for _, paths in jobs for p in damaged(paths)):
        print(f"warning: {path}: not JSON (edited or damaged): left out of the tables", file=sys.stderr)
    return runs_table, epochs_table


def damaged(paths: JobPaths) -> list[Path]:
    """A job's files that are there but unreadable: the job writes each atomically, so never half
    of one; left out of the tables, and said, rather than taken for a job that wrote nothing."""
    return [p for p in (paths.result, paths.epochs, paths.confusion, paths.robustness, paths.attempts)
            if p.is_file() and read_json(p) is None]


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.collect",
                                     description="Merge a grid's job folders into runs.parquet and epochs.parquet.")
    parser.add_argument("root", type=Path, help="the grid's results folder, e.g. results/quick")
    args = parser.parse_args(argv)
    grid = GridPaths(args.root)
    if not grid.plan.is_file():
        print(f"error: {args.root} holds no {grid.plan.name}: is it a grid's results folder?", file=sys.stderr)
        return 2
    runs, epochs = collect(args.root)
    print(f"{grid.runs_table}: {runs.num_rows} rows; {grid.epochs_table}: {epochs.num_rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
