"""`python -m harness.bench`: the speed goals of the harness, measured as ratios in one process.

    python -m harness.bench                  # every benchmark
    python -m harness.bench step kd          # some of them
    python -m harness.bench --steps 20 --repeats 5 --precision bf16

- step:    harness training step (augmentation included) vs a plain hand-written PyTorch loop,
           ResNet20, images/s (goal ≥ 0.95×)
- kd:      KD step with a ResNet110 teacher vs (student step + teacher inference forward), each
           measured alone (goal ≤ 1.05×)
- augment: augmenting one batch vs one ResNet20 training step (goal < 3 %)
- plan:    planning a 10,000-job grid: read, validate, expand, key (goal < 1 s)
- report:  `python -m harness.report` on a synthetic 1,000-job results folder (goal < 5 s)
- robustness: CIFAR-10-C evaluation (cache on disk → device → model) vs the clean test set
           already on the device, ResNet20, images/s (goal ≥ 0.9×)
- slurm:   (only when named; needs a running SLURM) sbatch calls and time to queue a 1,000-job
           grid (goals: one per stage array chunk, < 10 s), and the job wrapper's overhead from
           task start to first training step (goal < 5 s)
- cakd:    kd+at, kd+fa+at and CAKD with each mask, step time vs a kd step with the same
           ResNet110 teacher (goals: kd+fa+at ≤ 1.15×, intervention ≤ 2×, gradient ≤ 1.6×)
- archs:   (only when named) training images/s of every architecture of the zoo, plain loop;
           `--record` stores them as this device kind's (cpu or cuda) entry of the throughput
           table that `launch --dry-run` estimates a grid's cost from
- mate:    MATE-KD with three teachers (ResNet110, DenseNet121, VGG19-BN). Cache on vs a ce step
           (goal ≤ 1.4×); cache off vs (student step + the teachers' forward and backward to
           their last feature map) (goal ≤ 1.25×); both also vs a kd step with the same teachers;
           and the time to build the cache. Minutes on a CPU: bound it with e.g.
           `python -m harness.bench mate --steps 3 --repeats 3`.

Measurements alternate between the compared sides and report medians, so a noisy machine
shifts both alike. Random images stand in for CIFAR-10 (speed does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import sys

import torch
from rich.table import Table

from harness.bench.archs import bench_archs
from harness.bench.pipeline import bench_augment, bench_plan, bench_report, bench_robustness
from harness.bench.slurm import bench_slurm
from harness.bench.step import bench_cakd, bench_kd, bench_mate, bench_step
from harness.bench.timing import Row, device_name
from harness.cli import positive_int
from harness.config import precision
from harness.display import make_console

BENCHES = {"step": bench_step, "kd": bench_kd, "augment": bench_augment, "plan": bench_plan, "cakd": bench_cakd,
           "mate": bench_mate, "slurm": bench_slurm, "robustness": bench_robustness, "report": bench_report,
           "archs": bench_archs}
ONLY_WHEN_NAMED = {"slurm", "archs"}  # need a cluster, or take long: not part of the default run


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=[*BENCHES, []], default=[], metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--steps", type=positive_int, default=20, help="training steps per timed repeat (default 20)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per side (default 5)")
    parser.add_argument("--batch", type=positive_int, default=128, help="batch size (default 128)")
    parser.add_argument("--precision", choices=precision.CHOICES, default="auto",
                        help="autocast precision (default auto: bf16 where the hardware has it natively, else no)")
    parser.add_argument("--record", action="store_true",
                        help="archs: store the figures in harness/config/throughput.json (the dry run's cost table)")
    args = parser.parse_args(argv)
    args.precision = precision.resolve(args.precision, torch.cuda.is_available())
    return args


def add_row(table: Table, console, row: Row) -> None:
    """One figure into the summary table, and printed as soon as it is measured."""
    goal = "–" if row.goal == float("inf") else f"{row.op} {row.goal}{row.unit}"
    table.add_row(row.name, f"{row.value:.3f}{row.unit}", goal, "yes" if row.met else "[red]no[/]", row.detail)
    console.print(f"{row.name}: {row.value:.3f}{row.unit} ({row.detail})")


def main(argv=None) -> int:
    args = parse(argv)
    console = make_console()
    console.print(f"device: {device_name()}")
    table = Table(title=f"kd-harness speed (batch {args.batch}, {args.precision}, {device_name()}, "
                        f"{torch.get_num_threads()} threads)")
    for column in ("benchmark", "measured", "goal", "met", "detail"):
        table.add_column(column)
    missed = 0
    for name in args.which or [b for b in BENCHES if b not in ONLY_WHEN_NAMED]:
        for row in BENCHES[name](args):
            missed += not row.met
            add_row(table, console, row)
    console.print(table)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
