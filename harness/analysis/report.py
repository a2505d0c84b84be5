"""`python -m harness.report results/<grid>`: the grid's results with honest statistics over seeds.

Terminal: one table for the teachers (named as in the grid), and for the students one table per
teacher set, each with `ce` (the teacher-free baseline) as its first row; a row per arch × method:
seeds completed, test top-1 mean ± sample std, its 95 % Student-t interval, the best-val-selected
test top-1, CIFAR-10-C mean top-1 and the clean top-1 on the same images (where evaluated), ECE,
and the paired difference to `ce` and to the teacher set's `kd` (see --baseline) over the seeds
both have: mean, 95 % bootstrap interval, paired t-test p-value Holm-adjusted over the table's
comparisons. Jobs not completed are listed, never silently averaged over.

Also writes `results/<grid>/report/`: `report.md` (the tables, environment, cost, the grid file)
and PNG figures (harness.analysis.figures). `--format csv|md|latex` prints the tables in that format instead of rich;
`--compare OTHER` sets two grids side by side (Welch t-test of the difference of means, Holm-adjusted).
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

import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analysis import stats
from harness.analysis.results import (DEFAULT_BASELINES, NO_TEACHERS, REFS, Results, Section, adjust, c10c_images_text, completed, comparisons_text, group, load, methods_of, sections, summary_rows, teacher_baseline, tests_in)
from harness.cli import refusing_unreadable
from harness.data.corruptions import STANDARD
from harness.display import make_console
from harness.run.layout import GridPaths, State

# ---------------------------------------------------------------- tables: text

@dataclass
class TableText:
    """A table as printed: title, header, formatted cells, and the legend under it."""
    title: str
    header: list[str]
    body: list[list[str]]
    legend: str = ""
    rows: list[dict] = field(default_factory=list)  # the raw numbers (--format csv)


def _f(x, fmt="{:.2f}", signed=False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return ("{:+.2f}" if signed else fmt).format(x)


def _p(x) -> str:
    if x is None or math.isnan(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _pm(mean: float, std: float) -> str:
    return _f(mean) + ("" if math.isnan(std) else f" ± {std:.2f}")


def has_c10c(res: Results) -> bool:
    return res.robustness is not None or any(r.get("cifar10c_mean_top1") is not None for r in res.runs)


def display_rows(rows: list[dict], stage: str, c10c: bool = False, c: str = "C10-C") -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of a table (shared by rich, Markdown and LaTeX); `c10c` adds the
    clean top-1 on the corrupted set's images; `c` names that set (C10-C, C100-C)."""
    header = ["arch", "method", "teacher" if stage == "teacher" else "teachers", "seeds", "test top-1 (%)",
              "95% CI (t)", "best-val sel. (%)", f"{c} (%)"] + ([f"{c} clean, same imgs (%)"] if c10c else [])
    header += ["ECE (%)"]
    refs = [ref for ref in REFS if any(r.get(f"d_{ref}_vs") for r in rows)]  # no column of dashes only
    for ref in refs:
        name = " / ".join(dict.fromkeys(r[f"d_{ref}_vs"] for r in rows if r.get(f"d_{ref}_vs")))
        header += [f"Δ vs {name} [95% boot.]", f"p vs {name} (Holm)"]
    return header, [_cells(r, refs, c10c) for r in rows]


def _cells(r: dict, refs: list[str], c10c: bool) -> list[str]:
    ci = "–" if math.isnan(r["top1_ci_low"]) else f"[{r['top1_ci_low']:.2f}, {r['top1_ci_high']:.2f}]"
    n = f"{r['done']}" if r["done"] == r["planned"] else f"{r['done']}/{r['planned']}"
    cells = [r["arch"], r["method"], r["teachers"], n, _pm(r["top1_mean"], r["top1_std"]), ci,
             _pm(r["best_val_sel_mean"], r["best_val_sel_std"]), _f(r["c10c_mean"])]
    if c10c:  # results collected before the clean top-1 was recorded: say so, not "–"
        cells.append("–" if math.isnan(r["c10c_mean"]) else _f(r["c10c_clean_mean"]).replace("–", "n/a"))
    cells.append(_f(r["ece_mean"]))
    for ref in refs:
        cells += _difference_cells(r, ref)
    return cells


def _difference_cells(r: dict, ref: str) -> list[str]:
    if not r.get(f"d_{ref}_n"):
        return ["–", "–"]
    d = _f(r[f"d_{ref}_mean"], signed=True)
    if not math.isnan(r[f"d_{ref}_boot_low"]):
        d += f" [{r[f'd_{ref}_boot_low']:+.2f}, {r[f'd_{ref}_boot_high']:+.2f}]"
    return [d, f"{_p(r[f'd_{ref}_p_holm'])} (n={r[f'd_{ref}_n']})"]


def stages(res: Results) -> list[str]:
    present = {k[0] for k in res.groups}
    return [s for s in ("teacher", "student") if s in present] + sorted(present - {"teacher", "student"})


def section_title(name: str, section: Section) -> str:
    if section.teachers is None:
        return f"{name}: {section.stage}s, test top-1 (%)"
    return f"{name}: {section.stage}s, teachers {section.teachers}, test top-1 (%)"


def section_table(res: Results, name: str, section: Section) -> TableText:
    rows = summary_rows(res, section.keys)
    header, body = display_rows(rows, section.stage, has_c10c(res), res.c_short)
    return TableText(section_title(name, section), header, body, section_legend(res, section, rows), rows)


def section_legend(res: Results, section: Section, rows: list[dict]) -> str:
    parts = []
    if section.stage == "teacher":
        parts.append("Teachers by their grid names ([teachers.<name>]).")
    if section.stage == "student":
        tests = tests_in(rows, [f"d_{ref}_p" for ref in REFS])
        if tests:
            parts.append(f"p: two-sided paired t-test, Holm-adjusted over the {comparisons_text(tests)} of this "
                         "table (unadjusted in --format csv).")
        elif any(r.get(f"d_{ref}_vs") for r in rows for ref in REFS):
            parts.append("No comparison has 2 shared seeds: no p-value.")
        if section.teachers not in (None, NO_TEACHERS) and not any(
                teacher_baseline(res, k[0], k[1], section.teachers) for k in section.keys):
            parts.append(f"No {' / '.join(res.baselines)} with teachers {section.teachers}: compared with ce only "
                         "(--baseline NAME names the method to compare with).")
    if has_c10c(res):
        unrecorded = any(math.isnan(r["c10c_clean_mean"]) and not math.isnan(r["c10c_mean"]) for r in rows)
        parts.append(f"{res.c_short}: {c10c_images_text([r for k in section.keys for r in res.groups[k]])}; clean, "
                     "same imgs: top-1 of the same weights on those clean images"
                     + (" (n/a: not recorded in these results)." if unrecorded else "."))
    return " ".join(parts)


TEXT_COLUMNS = ("stage", "arch", "method", "teacher", "teachers")


def rich_table(table: TableText) -> Table:
    out = Table(title=escape(table.title), caption=escape(table.legend) or None)
    for column in table.header:
        out.add_column(escape(column), justify="left" if column in TEXT_COLUMNS else "right")
    for cells in table.body:  # "[teachers.<name>]", "[+0.5, +1.0]": text, not rich markup
        out.add_row(*map(escape, cells))
    return out


def markdown(header: list[str], body: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(map(esc, cells)) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def markdown_table(table: TableText, level: str = "##") -> list[str]:
    return [f"{level} {table.title}", "", markdown(table.header, table.body)] + (
        [table.legend, ""] if table.legend else [])


def latex(header: list[str], body: list[list[str]], caption: str) -> str:
    def tex(s: str) -> str:
        s = str(s)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
            s = s.replace(a, b)
        return s.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("–", "--").replace("<", r"$<$") \
            .replace("×", r"$\times$")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\caption{" + tex(caption) + "}",
             r"\begin{tabular}{" + "lll" + "r" * (len(header) - 3) + "}", r"\toprule",
             " & ".join(map(tex, header)) + r" \\", r"\midrule"]
    lines += [" & ".join(map(tex, cells)) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(c for r in rows for c in r))  # the ce row has no comparison columns
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def missing(res: Results) -> list[str]:
    """One line per job not completed (what a partial grid still lacks)."""
    def who(r):
        if r["stage"] == "teacher":
            return f"teacher {res.teacher_names.get(r['job_key'], r['arch'])}"
        return f"teachers {r['teacher_set']}"
    return [f"{r['stage']} {r['arch']} {r['method']} seed {r['seed']} {who(r)} [{r['job_key']}]: {r['status']}"
            for r in res.runs if r["status"] != State.COMPLETED]


def compare_rows(a: Results, b: Results) -> list[dict]:
    out = []
    for key in list(dict.fromkeys([*a.groups, *b.groups])):
        xa = [r["test_top1"] for r in completed(a.groups.get(key, []))]
        xb = [r["test_top1"] for r in completed(b.groups.get(key, []))]
        sa, sb = stats.describe(xa), stats.describe(xb)
        w = stats.welch(xa, xb)
        out.append({"stage": key[0], "arch": key[1], "method": key[2], "teachers": key[3],
                    "n_a": sa.n, "mean_a": sa.mean, "std_a": sa.std, "n_b": sb.n, "mean_b": sb.mean,
                    "std_b": sb.std, "diff": sa.mean - sb.mean, "diff_ci_low": w.ci_low, "diff_ci_high": w.ci_high,
                    "p_welch": w.p_value})
    adjust(out, ["p_welch"])
    return out


def compare_display(rows: list[dict], a: str, b: str) -> tuple[list[str], list[list[str]]]:
    header = ["arch", "method", "teachers", f"n {a}", f"{a} top-1 (%)", f"n {b}", f"{b} top-1 (%)",
              f"Δ {a} − {b} [95% CI]", "p (Welch, Holm)"]
    body = []
    for r in rows:
        d = _f(r["diff"], signed=True)
        if not math.isnan(r["diff_ci_low"]):
            d += f" [{r['diff_ci_low']:+.2f}, {r['diff_ci_high']:+.2f}]"
        body.append([r["arch"], r["method"], r["teachers"], str(r["n_a"]), _pm(r["mean_a"], r["std_a"]),
                     str(r["n_b"]), _pm(r["mean_b"], r["std_b"]), d, _p(r["p_welch_holm"])])
    return header, body


def compare_table(a: Results, b: Results, name_a: str, name_b: str) -> TableText:
    rows = compare_rows(a, b)
    header, body = compare_display(rows, name_a, name_b)
    tests = tests_in(rows, ["p_welch"])
    legend = (f"Δ: difference of the means with its Welch–Satterthwaite 95 % t-interval; p: Welch's t-test, "
              f"Holm-adjusted over the {comparisons_text(tests)} of this table.")
    return TableText(f"{name_a} vs {name_b}: test top-1 (%)", header, body, legend, rows)


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
        rows = [r for r in res.runs if r.get(col) is not None]
        if rows:
            lines.append(f"- {what}: {sum(r[col] for r in rows):.2f} ({_cost_sources(rows)})")
    if len(lines) == 1:
        lines.append("- CPU/GPU-hours: not recorded")
    return lines


def _cost_sources(rows: list[dict]) -> str:
    """Where a job's hours come from: SLURM's accounting for a SLURM job, else the job's own processes."""
    slurm = sum(1 for r in rows if r.get("slurm_job_id"))
    own = len(rows) - slurm
    parts = [f"{slurm} job{'s' * (slurm != 1)} from SLURM accounting" if slurm else "",
             f"{own} job{'s' * (own != 1)} from their own processes' CPU time" if own else ""]
    return ", ".join(p for p in parts if p)


def write_markdown(res: Results, tables: list[TableText], figures: list[str]) -> Path:
    out = GridPaths(res.root).report
    name = res.runs[0]["grid"] if res.runs else res.root.name
    lines = [f"# Report: {name}", "", f"Results folder: `{res.root}`.", ""]
    lines += [stats_note(res), ""]
    lines += [c10c_note(res), ""]
    for table in tables:
        lines += markdown_table(table)
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


def stats_note(res: Results) -> str:
    return STATS_NOTE.replace("C10-C: CIFAR-10-C", f"{res.c_short}: {res.c_title}")


STATS_NOTE = ("Statistics over seeds (completed jobs only): mean ± sample standard deviation; 95 % CI: "
              "Student-t interval of the mean; best-val sel.: test top-1 of each run's best-validation epoch; "
              "C10-C: CIFAR-10-C mean top-1 over the standard 15 corruptions evaluated; clean, same imgs: "
              "top-1 of the same weights on the clean test images the corruptions were made from; "
              "ECE: expected calibration error (15 bins), mean of the seeds' ECEs (as in reliability.png). "
              "Students: one table per teacher set, led by the teacher-free `ce` they are compared with. "
              "Δ: mean paired difference (this method − baseline) over the seeds both completed, with a 95 % "
              "percentile bootstrap interval (scipy.stats.bootstrap, 10,000 resamples, seeded) and the two-sided "
              "paired t-test p-value (scipy.stats.ttest_rel), Holm-adjusted over all the comparisons of its "
              "table (with `ce` and with the teacher set's `kd` or --baseline); n = shared seeds. With fewer "
              "than 2 seeds no interval or p-value is given, with fewer than 3 no bootstrap.")


def c10c_note(res: Results) -> str:
    if not has_c10c(res):
        return f"{res.c_title}: no {res.c_title} evaluation in this grid."
    src = res.c10c_source or "unknown source"
    extra = " — official and generated corruptions are mixed in this mean" if "+" in src else ""
    over = sorted({r["cifar10c_mean_over"] for r in res.runs if r.get("cifar10c_mean_over")})
    what = ("; the mean covers: " + " | ".join(over)) if over else " over the standard corruptions evaluated"
    outside = sorted(set(c10c_corruptions(res)) - set(STANDARD))
    also = (f" Outside that mean, in the figures only: {', '.join(outside)}." if outside else "")
    return (f"{res.c_title}: mean top-1 (corruption source: {src}{extra}){what}; {c10c_images_text(res.runs)}; "
            f"the tables' clean column is the top-1 on those same clean images.{also}")


def c10c_corruptions(res: Results) -> list[str]:
    if res.robustness is None:
        return []
    return sorted(set(res.robustness.column("corruption").to_pylist()))


def summary_table(runs: pa.Table, title: str = "test top-1 (%)") -> Table:
    """One rich table of every stage (the launcher's closing summary)."""
    res = group(Results(Path("."), runs.to_pylist(), None, None, None))
    body, header = [], None
    for stage in stages(res):
        header, cells = display_rows(summary_rows(res, [k for k in res.groups if k[0] == stage], compare=False),
                                     stage, c=res.c_short)
        body += [[stage] + c for c in cells]
    return rich_table(TableText(title, ["stage"] + (header or []), body))


# ---------------------------------------------------------------- entry points

def tables_of(res: Results, name: str) -> list[TableText]:
    return [section_table(res, name, s) for stage in stages(res) for s in sections(res, stage)]


def print_tables(tables: list[TableText], fmt: str, console: Console) -> None:
    for table in tables:
        if fmt == "rich":
            console.print(rich_table(table))
        elif fmt == "md":
            print("\n".join(markdown_table(table, "###")))
        elif fmt == "latex":
            print(latex(table.header, table.body, f"{table.title}. {table.legend}".rstrip(". ")))
        elif fmt == "csv":
            print(f"# {table.title}")
            print(csv_text(table.rows), end="")


def report(root: Path, fmt: str = "rich", compare: Path | None = None, write: bool = True, console=None,
           baselines: tuple = DEFAULT_BASELINES) -> int:
    console = console or make_console()
    if not console.is_terminal:  # a file or a pipe: wide enough that no cell wraps
        console = Console(width=300)
    res = load(root, baselines)
    name = res.runs[0]["grid"] if res.runs else root.name
    tables = tables_of(res, name)
    if compare is not None:
        other = load(compare, baselines)
        tables.append(compare_table(res, other, name, other.runs[0]["grid"] if other.runs else compare.name))
    print_tables(tables, fmt, console)
    if fmt == "rich":
        console.print(stats_note(res), style="dim")
        console.print(c10c_note(res))
    miss = missing(res)
    if miss:
        print(f"{len(miss)} of {len(res.runs)} jobs not completed (left out of the statistics):", file=sys.stderr)
        for line in miss[:20]:
            print(f"  {line}", file=sys.stderr)
        if len(miss) > 20:
            print(f"  … and {len(miss) - 20} more (all listed in report/report.md)", file=sys.stderr)
    if write:
        GridPaths(root).report.mkdir(exist_ok=True)
        from harness.analysis.figures import figures  # matplotlib only where figures are drawn

        made = figures(res)
        path = write_markdown(res, tables, made)
        print(f"wrote {path} and {len(made)} figures", file=sys.stderr)
    return 0


def unreportable(root: Path) -> str | None:
    """Why `root` cannot be reported on, with what to do about it; None when it can."""
    grid = GridPaths(root)
    if grid.runs_table.is_file():
        return None
    if grid.jobs.is_dir():
        return f"no {grid.runs_table} yet; run `python -m harness.collect {root}` first"
    if root.is_dir():
        return f"{root} is not a grid's results folder (no runs.parquet, no jobs/): give results/<grid>"
    return f"no such results folder {root}: launch the grid first (`python -m harness.launch GRID.toml`)"


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the grid's results folder, e.g. results/quick")
    parser.add_argument("--format", choices=["rich", "csv", "md", "latex"], default="rich",
                        help="how the tables are printed (default: rich tables for the terminal)")
    parser.add_argument("--compare", type=Path, metavar="OTHER", help="another grid's results folder to set beside")
    parser.add_argument("--baseline", action="append", metavar="NAME",
                        help="the method each teacher set's methods are compared with besides ce: the first "
                             "NAME trained with that teacher set (repeatable; default: kd), e.g. "
                             "--baseline kd --baseline kd_avg3 for a grid whose multi-teacher set has an "
                             "averaged-teacher kd of another name")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write report/")
    args = parser.parse_args(argv)
    for root in [args.root] + ([args.compare] if args.compare else []):
        problem = unreportable(root)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    methods = methods_of(args.root)
    for name in args.baseline or ():
        if name not in methods:
            print(f"error: --baseline {name}: no method of that name in {args.root} (its methods: "
                  f"{', '.join(methods)})", file=sys.stderr)
            return 2
    return report(args.root, args.format, args.compare, write=not args.no_write,
                  baselines=tuple(args.baseline or DEFAULT_BASELINES))


if __name__ == "__main__":
    sys.exit(main())
