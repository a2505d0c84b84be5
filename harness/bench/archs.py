"""Per-architecture training throughput: images/s of every architecture of the zoo in a plain loop,
and (`--record`) the table the launcher's dry run plans a grid's cost from."""
from __future__ import annotations

import argparse
import datetime
import platform

import torch

from harness.bench.timing import Row, alternate, device_name
from harness.bench.workloads import plain_loop
from harness.config import cost


def bench_archs(args) -> list[Row]:
    """Training throughput of every architecture of the zoo (a plain loop at the bench's batch and
    precision). Large networks are slow on a CPU, so there at most 3 steps × 2 repeats each.
    With `--record`, the figures become this device kind's entry of harness/config/throughput.json."""
    from harness.models import ARCHS

    on_gpu = torch.cuda.is_available()
    short = argparse.Namespace(**{**vars(args), "steps": args.steps if on_gpu else min(args.steps, 3)})
    rows, rates = [], {}
    for arch in ARCHS:
        seconds = alternate(args.repeats if on_gpu else min(args.repeats, 2), step=plain_loop(short, arch))["step"]
        rates[arch] = round(args.batch / seconds, 1)
        rows.append(Row(f"train {arch}", args.batch / seconds, "≥", 0, " img/s",
                        f"{seconds * 1e3:.0f} ms per step of {args.batch}"))
    if getattr(args, "record", False):
        cost.record("cuda" if on_gpu else "cpu", args.batch, rates, {
            "device": device_name(), "threads": torch.get_num_threads(), "precision": args.precision,
            "torch": torch.__version__, "python": platform.python_version(),
            "measured": datetime.date.today().isoformat(),
            "command": f"python -m harness.bench archs --record --batch B --precision {args.precision}"})
    return rows
