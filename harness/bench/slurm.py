"""SLURM integration: sbatch calls and time to queue a 1,000-job grid, and the job wrapper's start-up overhead."""
from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from harness.bench.timing import Row, timer
from harness.bench.workloads import random_cifar


def bench_slurm(args) -> list[Row]:
    """On a running SLURM (slurm/local-cluster up): queue a 1,000-job grid (held, then cancelled)
    and count sbatch calls and time to all queued; run one small job and time its wrapper, from
    SLURM's start of the task to the first training step (the job log's "training on" line)."""
    folder = Path(tempfile.mkdtemp())
    grid = write_grid(folder)
    queued_s, jobs, arrays = queue_held(grid, folder / "held")
    overhead = wrapper_overhead(grid, folder / "one")
    return [Row("slurm queue 1000 jobs", queued_s, "<", 10.0, " s", f"{jobs} jobs in {len(arrays)} array(s)"),
            Row("slurm sbatch calls", len(arrays) + 1, "≤", 2.0, "", "one array per stage chunk + the collect job"),
            Row("slurm job wrapper", overhead, "<", 5.0, " s", "task start (sacct) → first training step (1 s resolution)")]


def write_grid(folder: Path) -> Path:
    """A 1,000-seed ce grid of one-epoch jobs on a small random data cache, for the slurm executor."""
    from harness.data.cache import RawCifar, write_cache

    cifar = random_cifar(1200)
    write_cache(folder / "data", RawCifar(cifar.x_train, cifar.y_train, cifar.x_test[:100], cifar.y_test[:100]), "random")
    grid = folder / "grid.toml"
    grid.write_text(f'name = "bench"\n[data]\nroot = "{folder / "data"}"\nval_size = 100\nlimit_train = 256\n'
                    f'limit_test = 100\n[train]\nepochs = 1\nbatch_size = 64\n[grid]\nmethod = ["ce"]\n'
                    f'seed = {list(range(1000))}\n[cluster]\nexecutor = "slurm"\ncpus_per_task = 1\n')
    return grid


def queue_held(grid: Path, out: Path) -> tuple[float, int, list[str]]:
    """Seconds to queue the grid held, the jobs queued and their arrays; then cancels them all."""
    from harness.launch import main as launch
    from harness.run import job as job_runner

    def queue() -> None:
        assert launch([str(grid), "--out", str(out), "--set", "cluster.sbatch_args=['--hold']"]) == 0

    seconds = timer(queue)()
    records = [job_runner.read_json(p) for p in (out / "bench" / "jobs").glob("*/slurm.json")]
    arrays = sorted({r["task_id"].split("_")[0] for r in records})
    subprocess.run(["scancel", *arrays], check=False)
    subprocess.run(["scancel", "--name", "kd-bench-collect"], check=False)
    return seconds, len(records), arrays


def wrapper_overhead(grid: Path, out: Path) -> float:
    """Run one job of the grid; seconds from SLURM's start of its task to its first training step."""
    from harness.launch import main as launch
    from harness.run import job as job_runner

    assert launch([str(grid), "--out", str(out), "--set", "grid.seed=[0]"]) == 0
    (job,) = (out / "bench" / "jobs").iterdir()
    deadline = time.time() + 300
    while not (job / "result.json").exists() and time.time() < deadline:
        time.sleep(1)
    task = job_runner.read_json(job / "slurm.json")["task_id"]
    started = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Start", "-j", task], capture_output=True,
                             text=True).stdout.split()[0]
    first_step = next(line[:19] for line in (job / "log.txt").read_text().splitlines() if "training on" in line)
    return (datetime.fromisoformat(first_step.replace(" ", "T")) - datetime.fromisoformat(started)).total_seconds()
