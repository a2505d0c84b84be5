"""A synthetic results folder shaped like a collected grid's, made-up numbers: what `harness.bench report` times."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from harness.analysis import collect


def synthetic_results(root: Path, methods=("ce", "kd", "kd+at", "kd+fa", "mate"), seeds=range(50),
                      teacher_sets=("r56", "r110", "dn121", "r56+r110"), epochs: int = 200, corruptions: int = 19,
                      seed: int = 0) -> Path:
    """A results folder shaped like a collected grid's (runs, epochs, confusion, robustness Parquet
    tables; grid.toml), with made-up numbers: what `report` is timed and tested on."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    runs = run_rows(methods, seeds, teacher_sets, epochs, rng)
    keys = [r["job_key"] for r in runs]
    collect.write_parquet(pa.Table.from_pylist(runs, schema=collect.RUNS_SCHEMA), root / "runs.parquet")
    collect.write_parquet(epoch_table(keys, epochs, rng), root / "epochs.parquet")
    collect.write_parquet(confusion_table(keys), root / "confusion.parquet")
    collect.write_parquet(robustness_table(keys, corruptions, rng), root / "robustness.parquet")
    (root / "grid.toml").write_text('name = "synthetic"\n')
    return root


def run_rows(methods, seeds, teacher_sets, epochs: int, rng: np.random.Generator) -> list[dict]:
    """One completed student run per method × teacher set × seed; method m scores about 90 + 0.2 m."""
    bins = [{"count": 10, "confidence": (i + 0.5) / 15, "accuracy": min(1.0, (i + 0.2) / 15)} for i in range(15)]
    runs = []
    for m, method in enumerate(methods):
        for teachers in teacher_sets:
            for s in seeds:
                runs.append({**{n: None for n in collect.RUNS_SCHEMA.names}, "schema_version": 1, "grid": "synthetic",
                             "job_key": f"{len(runs):016x}", "stage": "student", "method": method, "seed": s,
                             "teacher_set": teachers, "arch": "resnet20", "status": "completed",
                             "test_top1": 90 + m * 0.2 + rng.normal(0, 0.3), "best_val_top1": 90.5,
                             "test_top1_at_best_val": 90 + m * 0.2 + rng.normal(0, 0.3),
                             "epochs": epochs, "wall_time_s": 3600.0, "gpu_hours": 1.0, "torch_version": "2.5.1",
                             "device": "cuda:0", "git_commit": "abc1234", "executor": "slurm", "test_ece": 3.0,
                             "test_nll": 0.3, "test_reliability": json.dumps(bins)})
    return runs


def epoch_table(keys: list[str], epochs: int, rng: np.random.Generator) -> pa.Table:
    """Validation curves rising towards 90 % with noise, `epochs` rows per job."""
    n = len(keys)
    ep = np.tile(np.arange(1, epochs + 1), n)
    return pa.table({"schema_version": pa.array(np.ones(n * epochs, np.int32)), "job_key": np.repeat(keys, epochs),
                     "epoch": ep, "val_top1": 90 * (1 - np.exp(-ep / 30)) + rng.normal(0, 0.5, n * epochs)})


def confusion_table(keys: list[str]) -> pa.Table:
    """The same 10 × 10 confusion matrix (900 on the diagonal, 11 elsewhere) for every job."""
    n = len(keys)
    t, p = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    cells = np.where(t == p, 900, 11).ravel()
    return pa.table({"schema_version": pa.array(np.ones(n * 100, np.int32)), "job_key": np.repeat(keys, 100),
                     "true_class": np.tile(t.ravel(), n), "pred_class": np.tile(p.ravel(), n),
                     "count": np.tile(cells, n)})


def robustness_table(keys: list[str], corruptions: int, rng: np.random.Generator) -> pa.Table:
    """CIFAR-10-C top-1 per job, corruption and severity, falling 8 points per severity."""
    n, names, per_job = len(keys), [f"corruption_{i:02d}" for i in range(corruptions)], corruptions * 5
    sev = np.tile(np.repeat(np.arange(1, 6), corruptions), n)
    return pa.table({"schema_version": pa.array(np.ones(n * per_job, np.int32)), "job_key": np.repeat(keys, per_job),
                     "corruption": np.tile(names * 5, n), "severity": sev,
                     "top1": 85 - 8 * sev + rng.normal(0, 1, n * per_job), "n": np.full(n * per_job, 10000),
                     "corruption_source": ["generated"] * (n * per_job)})
