"""`python -m harness.report results/<grid>`: the grid's results with honest statistics over seeds.

Terminal: one table per stage, a row per arch × method × teacher set: seeds completed, test top-1
mean ± sample std, its 95 % Student-t interval, the best-val-selected test top-1, CIFAR-10-C mean
top-1 (where evaluated), ECE, and for students the paired difference to `ce` and to `kd` over the
seeds both have (mean, 95 % bootstrap interval, paired t-test p-value). Jobs not completed are
listed, never silently averaged over.

Also writes `results/<grid>/report/`: `report.md` (the tables, environment, cost, the grid file)
and PNG figures (harness.figures). `--format csv|md|latex` prints the tables in that format instead of rich;
`--compare OTHER` sets two grids side by side (Welch t-test of the difference of means).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from harness import stats
from harness.display import make_console

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BASELINES = ("ce", "kd")


# ---------------------------------------------------------------- loading

@dataclass
class Results:
    root: Path
    runs: list[dict]
    epochs: pa.Table | None
    confusion: pa.Table | None
    robustness: pa.Table | None
    grid_text: str = ""
    c10c_source: str = ""  # "", "official", "generated", "official+generated"
    groups: dict = field(default_factory=dict)  # (stage, arch, method, teacher_set) -> [run rows]


def _read(path: Path) -> pa.Table | None:
    return pq.read_table(path) if path.is_file() else None


def load(root: Path) -> Results:
    runs_table = pq.read_table(root / "runs.parquet")
    runs = runs_table.to_pylist()
    robustness = _read(root / "robustness.parquet")
    res = Results(root, runs, _read(root / "epochs.parquet"), _read(root / "confusion.parquet"),
                  robustness if robustness is not None and robustness.num_rows else None)
    if (root / "grid.toml").is_file():
        res.grid_text = (root / "grid.toml").read_text()
    c10c = {}
    if res.robustness is not None and res.robustness.num_rows:
        rob = res.robustness
        keys = rob.column("job_key").to_numpy(zero_copy_only=False)
        top1 = rob.column("top1").to_numpy(zero_copy_only=False).astype(float)
        uniq, inv = np.unique(keys, return_inverse=True)
        means = np.bincount(inv, weights=top1) / np.bincount(inv)
        c10c = dict(zip(uniq.tolist(), means.tolist()))
        res.c10c_source = "+".join(sorted(set(rob.column("corruption_source").to_pylist())))
    for r in runs:
        if r.get("cifar10c_mean_top1") is None:
            r["cifar10c_mean_top1"] = c10c.get(r["job_key"])
        res.groups.setdefault((r["stage"], r["arch"], r["method"], r["teacher_set"]), []).append(r)
    return res


def completed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "completed"]


def by_seed(rows: list[dict], column: str = "test_top1") -> dict[int, float]:
    return {r["seed"]: r[column] for r in completed(rows) if r.get(column) is not None}


# ---------------------------------------------------------------- tables

def baseline_rows(res: Results, key: tuple, base: str) -> list[dict] | None:
    """The `base` method's runs to pair `key`'s with: same stage and arch, same teacher set where
    the grid has it, else the teacher-less one."""
    stage, arch, method, teachers = key
    if method == base:
        return None
    for t in (teachers, "none"):
        if (stage, arch, base, t) in res.groups:
            return res.groups[(stage, arch, base, t)]
    return None


def summary_rows(res: Results, stage: str) -> list[dict]:
    """Raw numbers of the stage's table, one dict per arch × method × teacher set."""
    out = []
    for key in sorted(k for k in res.groups if k[0] == stage):
        rows = res.groups[key]
        done = completed(rows)
        s = stats.describe([r["test_top1"] for r in done])
        sel = stats.describe([r["test_top1_at_best_val"] for r in done])
        c10c = stats.describe([r.get("cifar10c_mean_top1") for r in done])
        ece = stats.describe([r.get("test_ece") for r in done])
        row = {"stage": stage, "arch": key[1], "method": key[2], "teachers": key[3], "done": len(done),
               "planned": len(rows), "top1_mean": s.mean, "top1_std": s.std, "top1_ci_low": s.ci_low,
               "top1_ci_high": s.ci_high, "best_val_sel_mean": sel.mean, "best_val_sel_std": sel.std,
               "c10c_mean": c10c.mean, "ece_mean": ece.mean}
        if stage == "student":
            for base in BASELINES:
                other = baseline_rows(res, key, base)
                p = stats.paired(by_seed(rows), by_seed(other)) if other else None
                row.update({f"d_{base}_n": p.n if p else 0, f"d_{base}_mean": p.mean_diff if p else math.nan,
                            f"d_{base}_boot_low": p.boot_low if p else math.nan,
                            f"d_{base}_boot_high": p.boot_high if p else math.nan,
                            f"d_{base}_p": p.p_value if p else math.nan})
        out.append(row)
    return out


def _f(x, fmt="{:.2f}", signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return ("{:+.2f}" if signed else fmt).format(x)


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def display_rows(rows: list[dict], stage: str) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of a stage's table (shared by rich, Markdown and LaTeX)."""
    header = ["arch", "method", "teachers", "seeds", "test top-1 (%)", "95% CI (t)", "best-val sel. (%)",
              "C10-C (%)", "ECE (%)"]
    if stage == "student":
        header += ["Δ vs ce [95% boot.]", "p vs ce", "Δ vs kd [95% boot.]", "p vs kd"]
    body = []
    for r in rows:
        top1 = _f(r["top1_mean"]) + ("" if math.isnan(r["top1_std"]) else f" ± {r['top1_std']:.2f}")
        ci = "–" if math.isnan(r["top1_ci_low"]) else f"[{r['top1_ci_low']:.2f}, {r['top1_ci_high']:.2f}]"
        sel = _f(r["best_val_sel_mean"]) + ("" if math.isnan(r["best_val_sel_std"]) else f" ± {r['best_val_sel_std']:.2f}")
        n = f"{r['done']}" if r["done"] == r["planned"] else f"{r['done']}/{r['planned']}"
        cells = [r["arch"], r["method"], r["teachers"], n, top1, ci, sel, _f(r["c10c_mean"]), _f(r["ece_mean"])]
        if stage == "student":
            for base in BASELINES:
                if r[f"d_{base}_n"] == 0:
                    cells += ["–", "–"]
                    continue
                d = _f(r[f"d_{base}_mean"], signed=True)
                if not math.isnan(r[f"d_{base}_boot_low"]):
                    d += f" [{r[f'd_{base}_boot_low']:+.2f}, {r[f'd_{base}_boot_high']:+.2f}]"
                cells += [d, f"{_p(r[f'd_{base}_p'])} (n={r[f'd_{base}_n']})"]
        body.append(cells)
    return header, body


def stages(res: Results) -> list[str]:
    present = {k[0] for k in res.groups}
    return [s for s in ("teacher", "student") if s in present] + sorted(present - {"teacher", "student"})


def rich_table(title: str, header: list[str], body: list[list[str]]) -> Table:
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i < 3 else "right")
    for cells in body:
        table.add_row(*cells)
    return table


def markdown(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(esc, cells)) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def latex(header: list[str], body: list[list[str]], caption: str) -> str:
    def tex(s: str) -> str:
        s = str(s)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
            s = s.replace(a, b)
        return s.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace("<", r"$<$")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + tex(caption) + "}",
             r"\begin{tabular}{" + "lll" + "r" * (len(header) - 3) + "}", r"\toprule",
             " & ".join(map(tex, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(tex, cells)) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def missing(res: Results) -> list[str]:
    """One line per job not completed (what a partial grid still lacks)."""
    return [f"{r['stage']} {r['arch']} {r['method']} seed {r['seed']} teachers {r['teacher_set']} "
            f"[{r['job_key']}]: {r['status']}" for r in res.runs if r["status"] != "completed"]


def compare_rows(a: Results, b: Results) -> list[dict]:
    keys = sorted(set(a.groups) | set(b.groups))
    out = []
    for key in keys:
        xa = [r["test_top1"] for r in completed(a.groups.get(key, []))]
        xb = [r["test_top1"] for r in completed(b.groups.get(key, []))]
        sa, sb = stats.describe(xa), stats.describe(xb)
        w = stats.welch(xa, xb)
        out.append({"stage": key[0], "arch": key[1], "method": key[2], "teachers": key[3],
                    "n_a": sa.n, "mean_a": sa.mean, "std_a": sa.std, "n_b": sb.n, "mean_b": sb.mean,
                    "std_b": sb.std, "diff": sa.mean - sb.mean, "diff_ci_low": w.ci_low, "diff_ci_high": w.ci_high,
                    "p_welch": w.p_value})
    return out


def compare_display(rows: list[dict], a: str, b: str) -> tuple[list[str], list[list[str]]]:
    header = ["arch", "method", "teachers", f"n {a}", f"{a} top-1 (%)", f"n {b}", f"{b} top-1 (%)",
              f"Δ {a} − {b} [95% CI]", "p (Welch)"]
    body = []
    for r in rows:
        ma = _f(r["mean_a"]) + ("" if math.isnan(r["std_a"]) else f" ± {r['std_a']:.2f}")
        mb = _f(r["mean_b"]) + ("" if math.isnan(r["std_b"]) else f" ± {r['std_b']:.2f}")
        d = _f(r["diff"], signed=True)
        if not math.isnan(r["diff_ci_low"]):
            d += f" [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]"
        body.append([r["arch"], r["method"], r["teachers"], str(r["n_a"]), ma, str(r["n_b"]), mb, d, _p(r["p_welch"])])
    return header, body


# ---------------------------------------------------------------- report.md

def environment(res: Results) -> list[str]:
    done = completed(res.runs)
    count = lambda col: ", ".join(f"`{k}` ({v})" for k, v in sorted(_counts(done, col).items())) or "–"
    return [f"- torch: {count('torch_version')}", f"- device: {count('device')}",
            f"- mixed precision: {count('mixed_precision')}", f"- executor: {count('executor')}",
            f"- git commit of the runs: {count('git_commit')}"]


def _counts(rows, col):
    out: dict = defaultdict(int)
    for r in rows:
        if r.get(col) is not None:
            out[r[col]] += 1
    return out


def cost(res: Results) -> list[str]:
    wall = sum(r["wall_time_s"] or 0 for r in res.runs)
    lines = [f"- total wall time of the jobs: {wall / 3600:.2f} h ({wall:.0f} s over {len(res.runs)} jobs)"]
    for col, what in (("cpu_hours", "CPU-hours"), ("gpu_hours", "GPU-hours")):
        vals = [r[col] for r in res.runs if r.get(col) is not None]
        if vals:
            lines.append(f"- {what} (SLURM accounting, {len(vals)} jobs): {sum(vals):.2f}")
    if len(lines) == 1:
        lines.append("- CPU/GPU-hours: not recorded (no SLURM accounting)")
    return lines


def write_markdown(res: Results, tables: list[tuple[str, list[str], list[list[str]]]], figures: list[str]) -> Path:
    out = res.root / "report"
    name = res.runs[0]["grid"] if res.runs else res.root.name
    lines = [f"# Report: {name}", "", f"Results folder: `{res.root}`.", ""]
    lines += [STATS_NOTE, ""]
    lines += [c10c_note(res), ""]
    for title, header, body in tables:
        lines += [f"## {title}", "", markdown(header, body)]
    miss = missing(res)
    lines += ["## Jobs not completed", ""]
    lines += [f"- {m}" for m in miss] if miss else ["All planned jobs completed."]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    lines += ["", "## Environment", ""] + environment(res) + ["", "## Cost", ""] + cost(res)
    if res.grid_text:
        lines += ["", "## Grid file", "", "```toml", res.grid_text.rstrip(), "```"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


STATS_NOTE = ("Statistics over seeds (completed jobs only): mean ± sample standard deviation; 95 % CI: "
              "Student-t interval of the mean; best-val sel.: test top-1 of each run's best-validation epoch; "
              "C10-C: CIFAR-10-C mean top-1; ECE: expected calibration error (15 bins). "
              "Δ: mean paired difference (this method − baseline) over the seeds both completed, with a 95 % "
              "percentile bootstrap interval (10,000 resamples, seeded) and the two-sided paired t-test p-value; "
              "n = shared seeds. With fewer than 2 seeds no interval or p-value is given, with fewer than 3 no bootstrap.")


def c10c_note(res: Results) -> str:
    if res.robustness is None and not any(r.get("cifar10c_mean_top1") is not None for r in res.runs):
        return "CIFAR-10-C: no CIFAR-10-C evaluation in this grid."
    src = res.c10c_source or "unknown source"
    extra = " — official and generated corruptions are mixed in this mean" if "+" in src else ""
    over = sorted({r["cifar10c_mean_over"] for r in res.runs if r.get("cifar10c_mean_over")})
    what = ("; the mean covers: " + " | ".join(over)) if over else " (all evaluated corruptions and severities)"
    return f"CIFAR-10-C: mean top-1 (corruption source: {src}{extra}){what}."


# ---------------------------------------------------------------- figures

def summary_table(runs: pa.Table, title: str = "test top-1 (%)") -> Table:
    """One rich table of every stage (the launcher's closing summary)."""
    res = Results(Path("."), runs.to_pylist(), None, None, None)
    for r in res.runs:
        res.groups.setdefault((r["stage"], r["arch"], r["method"], r["teacher_set"]), []).append(r)
    body, header = [], None
    for stage in stages(res):
        header, cells = display_rows(summary_rows(res, stage), "teacher")
        body += [[stage] + c for c in cells]
    return rich_table(title, ["stage"] + (header or []), body)


def report(root: Path, fmt: str = "rich", compare: Path | None = None, write: bool = True, console=None) -> int:
    console = console or make_console()
    if not console.is_terminal:  # a file or a pipe: wide enough that no cell wraps
        console = Console(width=260)
    res = load(root)
    name = res.runs[0]["grid"] if res.runs else root.name
    tables = []
    raw = {}
    for stage in stages(res):
        rows = summary_rows(res, stage)
        raw[stage] = rows
        header, body = display_rows(rows, stage)
        tables.append((f"{name}: {stage}s, test top-1 (%)", header, body))
    if compare is not None:
        other = load(compare)
        other_name = other.runs[0]["grid"] if other.runs else compare.name
        crow = compare_rows(res, other)
        raw["compare"] = crow
        header, body = compare_display(crow, name, other_name)
        tables.append((f"{name} vs {other_name}: test top-1 (%)", header, body))
    miss = missing(res)
    if fmt == "rich":
        for title, header, body in tables:
            console.print(rich_table(title, header, body))
        console.print(STATS_NOTE, style="dim")
        console.print(c10c_note(res))
    elif fmt == "md":
        for title, header, body in tables:
            print(f"### {title}\n\n{markdown(header, body)}")
    elif fmt == "latex":
        for title, header, body in tables:
            print(latex(header, body, title))
    elif fmt == "csv":
        for key, rows in raw.items():
            print(f"# {key}")
            print(csv_text(rows), end="")
    if miss:
        print(f"{len(miss)} of {len(res.runs)} jobs not completed (left out of the statistics):", file=sys.stderr)
        for line in miss[:20]:
            print(f"  {line}", file=sys.stderr)
        if len(miss) > 20:
            print(f"  … and {len(miss) - 20} more (all listed in report/report.md)", file=sys.stderr)
    if write:
        (root / "report").mkdir(exist_ok=True)
        from harness.figures import figures  # matplotlib only where figures are drawn

        made = figures(res)
        path = write_markdown(res, [t for t in tables], made)
        print(f"wrote {path} and {len(made)} figures", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the grid's results folder, e.g. results/quick")
    parser.add_argument("--format", choices=["rich", "csv", "md", "latex"], default="rich",
                        help="how the tables are printed (default: rich tables for the terminal)")
    parser.add_argument("--compare", type=Path, metavar="OTHER", help="another grid's results folder to set beside")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write report/")
    args = parser.parse_args(argv)
    for root in [args.root] + ([args.compare] if args.compare else []):
        if not (root / "runs.parquet").is_file():
            print(f"error: no {root / 'runs.parquet'}; run `python -m harness.collect {root}` first", file=sys.stderr)
            return 2
    return report(args.root, args.format, args.compare, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
