"""`python -m harness.launch grid.toml`: plan a grid, train the teachers it needs, then the
students, and collect the results into Parquet tables.

Exit codes: 0 every job completed (or --dry-run; with the slurm executor: everything queued), 1 some
job failed or was skipped, 2 bad input (grid file, arguments, missing data cache, settings SLURM
refuses), 130 interrupted (relaunch to resume; after queuing, --wait interrupted: the jobs go on).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from harness.analysis import collect, report
from harness.cli import interruptible
from harness.config import grid as gridlib
from harness.run.layout import FOLDER_STATES, GridPaths, State
from harness.atomic import atomic_write_json, atomic_write_text
from harness.display import make_console
from harness.config.grid import GridError, Job, Plan
from harness.executors import Executor, ExecutorError, Started, make_executor

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m harness.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", type=Path, help="the grid file (TOML; see README.md for every key)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan as a table; run nothing")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results folder; the grid's results go to OUT/<name>/ (default: results)")
    parser.add_argument("--wait", action="store_true",
                        help="slurm: after queuing, follow the grid live until it ends, then show the results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a grid key, the value in TOML syntax (a bare word is a string): --set train.epochs=3 (repeatable)")
    return parser.parse_args(argv)


def load_plan(args, say=lambda text: None) -> Plan:
    import torch

    grid = gridlib.load(args.grid, args.overrides, cuda_available=torch.cuda.is_available())
    for warning in grid["warnings"]:
        say(f"warning: {warning}")
    if grid["cluster"]["executor"] == "debug":  # tiny data unless the grid asks for a size
        for limit in ("limit_train", "limit_test"):
            if grid["data"][limit] is None:
                grid["data"][limit] = grid["cluster"][f"debug_{limit}"]
                say(f"debug executor: data.{limit} = {grid['data'][limit]} (set data.{limit} to choose)")
    return gridlib.plan(grid)


def main(argv=None) -> int:
    args = parse_args(argv)
    interruptible()
    console = make_console()
    try:
        plan = load_plan(args, console.print)
    except GridError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return EXIT_BAD_INPUT
    root = args.out / plan.grid["name"]
    problem = out_problem(args.out, root, writing=not args.dry_run)
    if problem:
        console.print(f"[red]error:[/] {escape(problem)}", highlight=False)
        return EXIT_BAD_INPUT
    if args.dry_run:
        console.print(plan_table(plan, root))
        console.print(cost_text(plan))
        return EXIT_OK
    from harness.run import robustness

    data = plan.grid["data"]
    problem = check_data(data) or robustness.check_cache(data["root"], plan.grid["eval"], data["dataset"])
    if problem:
        console.print(f"[red]error:[/] {escape(problem)}", highlight=False)
        return EXIT_BAD_INPUT
    executor = make_executor(root, plan.grid["cluster"])
    try:
        with grid_lock(root):
            write_plan(plan, root, args)
            started = start(plan, root, executor, console)
            if started.ended:
                return finish(plan, root, console)
    except GridLocked as e:
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False)
        return EXIT_BAD_INPUT
    except ExecutorError as e:
        console.print(f"[red]error:[/] grid file {args.grid}: {escape(str(e))}", highlight=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: relaunch the same command to resume")
        return EXIT_INTERRUPTED
    if args.wait and started.queued:  # outside the grid lock: following starts nothing
        from harness.analysis.status import follow

        try:
            follow(root, console)
        except KeyboardInterrupt:  # stops following only: the queued jobs go on
            console.print("[yellow]stopped following[/]: the jobs stay queued; "
                          f"python -m harness.status {escape(str(root))} shows them")
            return EXIT_INTERRUPTED
        return finish(plan, root, console)
    return EXIT_OK


def out_problem(out: Path, root: Path, writing: bool) -> str | None:
    """--out must be a folder (or one that can be made) that this user can write in."""
    for path in (out, root):
        if path.exists() and not path.is_dir():
            return f"--out {out}: {path} is a file; expected a folder"
    if writing:
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):  # EROFS on a read-only file system, also for root
            return f"--out {out}: cannot write in {existing} (read-only, or not this user's)"
    return None


def check_data(data: dict) -> str | None:
    """The data cache must be there before anything runs (or is queued)."""
    from harness.data import DataError, load_dataset

    try:
        load_dataset(data["root"], data["dataset"], val_size=data["val_size"], split_seed=data["split_seed"],
                     limit_train=data["limit_train"], limit_test=data["limit_test"])
    except DataError as e:
        return str(e)
    return None


class GridLocked(Exception):
    pass


@contextlib.contextmanager
def grid_lock(root: Path):
    """One launch of a grid at a time: two would train (or queue) the same jobs twice."""
    root.mkdir(parents=True, exist_ok=True)
    path = GridPaths(root).launch_lock
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GridLocked(f"another launch of this grid holds {path}; wait for it to finish") from None
        yield


def start(plan: Plan, root: Path, executor: Executor, console) -> Started:
    """Start what is not done (nor, on a queue, already queued or running); say what was queued."""
    pending = announce(plan, root, console, executor.to_run(plan.jobs))
    executor.check(pending)
    started = executor.start([[j for j in pending if j.stage == s] for s in ("teacher", "student")], console)
    if not started.ended:
        console.print(started.note)
    if started.queued:
        console.print(f"watch: python -m harness.status {root}")
    return started


def finish(plan: Plan, root: Path, console) -> int:
    runs, _ = collect.collect(root)
    console.print(report.summary_table(runs, title=f"{plan.grid['name']}: test top-1 (%)"))
    grid = GridPaths(root)
    console.print(f"results: {grid.runs_table}, {grid.epochs_table}")
    done = sum(1 for s in runs.column("status").to_pylist() if s == State.COMPLETED)
    return EXIT_OK if done == len(plan.jobs) else EXIT_FAILED


def write_plan(plan: Plan, root: Path, args) -> None:
    """The grid file as run, the plan, and each job's spec, before anything starts."""
    grid = GridPaths(root)
    overrides = "".join(f"# --set {o}\n" for o in args.overrides)
    atomic_write_text(grid.grid_file, overrides + args.grid.read_text())
    atomic_write_json(grid.plan, gridlib.to_record(plan))
    archs = {j.key: j.arch for j in plan.jobs}
    data_root = str(Path(plan.grid["data"]["root"]).expanduser().resolve())
    resolved = GridPaths(root.resolve())
    for job in plan.jobs:
        teachers = [[archs[k], str(resolved.job(k).model)] if k in archs
                    else [plan.external[k]["arch"], plan.external[k]["path"]] for k in job.teachers]
        spec = {"key": job.key, "grid": plan.grid["name"], "stage": job.stage, "method": job.method,
                "seed": job.seed, "teacher_set": job.teacher_set, "config": job.config,
                "runtime": job.runtime, "data_root": data_root, "teachers": teachers,
                "executor": plan.grid["cluster"]["executor"]}
        atomic_write_json(grid.job(job.key).spec, spec)


def announce(plan: Plan, root: Path, console, to_run: list[Job]) -> list[Job]:
    """Say what relaunching finds; return `to_run` (the executor's choice of jobs to start)."""
    states = {j.key: GridPaths(root).job(j.key).state() for j in plan.jobs}
    counts = {s: sum(1 for j in to_run if states[j.key] == s) for s in FOLDER_STATES}
    done = sum(1 for v in states.values() if v == State.COMPLETED)
    busy = len(plan.jobs) - done - len(to_run)
    console.print(f"[bold]{plan.grid['name']}[/]: {len(plan.jobs)} jobs — {done} completed (skipped), "
                  + (f"{busy} queued or running (left alone), " if busy else "")
                  + f"{counts[State.PARTIAL]} to resume, {counts[State.FAILED]} failed before (re-run), "
                  f"{counts[State.NEW]} new; executor {plan.grid['cluster']['executor']}; results in {root}")
    return to_run


def plan_table(plan: Plan, root: Path) -> Table:
    import torch

    from harness.config.grid import num_classes
    from harness.models import build_model, count_parameters

    with torch.device("meta"):  # counts need shapes only
        params = {arch: count_parameters(build_model(arch, num_classes(plan.grid))) / 1e6
                  for arch in {j.arch for j in plan.jobs}}
    table = Table(title=f"{plan.grid['name']}: {len(plan.jobs)} jobs "
                        f"({len(plan.stage('teacher'))} teachers, {len(plan.stage('student'))} students)")
    for column in ("stage", "key", "arch", "params (M)", "method", "seed", "teachers", "epochs", "state"):
        table.add_column(column, justify="right" if column in ("params (M)", "seed", "epochs") else "left")
    for job in plan.jobs:
        table.add_row(job.stage, job.key, job.arch, f"{params[job.arch]:.2f}", job.method, str(job.seed),
                      job.teacher_set, str(job.config["recipe"]["epochs"]), GridPaths(root).job(job.key).state())
    return table


def cost_text(plan: Plan) -> str:
    """What the plan will cost per stage and in all, from the measured throughput table."""
    from harness.config import cost

    kind = cost.device_kind(plan.grid)
    whole = cost.estimate(plan, kind=kind)
    if whole is None:
        return (f"cost: no {kind} throughput measured yet (python -m harness.bench archs --record on such a "
                "device fills harness/config/throughput.json)")
    parts = [f"{stage}s {cost.human(cost.estimate(plan, plan.stage(stage), kind).seconds, kind)}"
             for stage in ("teacher", "student") if plan.stage(stage)]
    lines = [f"cost: {cost.human(whole.seconds, kind)} ({', '.join(parts)}) at the training throughput "
             f"measured on {whole.device}; an estimate (see harness/config/cost.py)"]
    if whole.unknown:
        lines.append(f"      not counted: {', '.join(whole.unknown)} (no throughput measured on that device)")
    return escape("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
