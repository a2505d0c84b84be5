"""`python -m harness.report results/<grid>`: the grid's results as tables.

For now the summary: one row per stage × method × teacher set, mean ± std of test top-1 over
seeds (sample std), with the best-val-selected figure beside it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table

from harness.display import make_console


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def summary_table(runs: pa.Table, title: str = "test top-1 (%)") -> Table:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in runs.to_pylist():
        groups[(row["stage"], row["arch"], row["method"], row["teacher_set"])].append(row)
    table = Table(title=title)
    for column in ("stage", "arch", "method", "teachers", "done", "test top-1", "test @ best val", "best val"):
        table.add_column(column, justify="left" if column in ("stage", "arch", "method", "teachers") else "right")
    for (stage, arch, method, teachers), rows in sorted(groups.items(), key=lambda kv: (kv[0][0] != "teacher", kv[0])):
        done = [r for r in rows if r["status"] == "completed"]
        table.add_row(stage, arch, method, teachers, f"{len(done)}/{len(rows)}",
                      mean_std([r["test_top1"] for r in done]),
                      mean_std([r["test_top1_at_best_val"] for r in done if r["test_top1_at_best_val"] is not None]),
                      mean_std([r["best_val_top1"] for r in done]))
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the grid's results folder, e.g. results/quick")
    args = parser.parse_args(argv)
    path = args.root / "runs.parquet"
    if not path.is_file():
        print(f"error: no {path}; run `python -m harness.collect {args.root}` first", file=sys.stderr)
        return 2
    make_console().print(summary_table(pq.read_table(path), title=f"{args.root.name}: test top-1 (%)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
