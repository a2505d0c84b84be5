"""Per-architecture training throughput: images/s of every architecture of the zoo in a plain loop."""
from __future__ import annotations

import argparse

from harness.bench.timing import Row, alternate
from harness.bench.workloads import plain_loop


def bench_archs(args) -> list[Row]:
    """Training throughput of every architecture of the zoo (a plain loop at the bench's batch and
    precision): what a job's cost is planned from. Large networks are slow on a CPU, so at most 3
    steps × 2 repeats each."""
    from harness.models import ARCHS

    short = argparse.Namespace(**{**vars(args), "steps": min(args.steps, 3)})
    rows = []
    for arch in ARCHS:
        seconds = alternate(min(args.repeats, 2), step=plain_loop(short, arch))["step"]
        rows.append(Row(f"train {arch}", args.batch / seconds, "≥", 0, " img/s",
                        f"{seconds * 1e3:.0f} ms per step of {args.batch}"))
    return rows
