"""A grid's results as the report and the figures read them: the Parquet tables loaded and grouped
by stage × arch × method × teacher set, with statistics over seeds and the comparisons of each row
with `ce` and with the teacher set's baseline (paired differences, Holm-adjusted p-values)."""
from __future__ import annotations

import math
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.analysis import stats
from harness.atomic import UnreadableFile
from harness.data import datasets
from harness.data.corruptions import STANDARD
from harness.run.layout import GridPaths, State

CE = "ce"  # the teacher-free baseline every student table compares with
NO_TEACHERS = "none"  # teacher_set of a job without teachers
DEFAULT_BASELINES = ("kd",)
REFS = ("ce", "base")  # the two comparisons of a student row: with ce, with the teacher set's baseline


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
    # (stage, arch, method, teacher_set) -> [run rows], in the runs' order (the grid's method order);
    # a teacher's own group has its grid name (e.g. "resnet56") in the teacher_set place
    groups: dict = field(default_factory=dict)
    teacher_names: dict = field(default_factory=dict)  # a teacher job's key -> its grid name
    baselines: tuple = DEFAULT_BASELINES  # --baseline: each teacher set's baseline, the first it has

    @property
    def c_title(self) -> str:
        """The corrupted test set of the runs' data set: CIFAR-10-C (also for tables from before
        runs.parquet had a dataset column) or CIFAR-100-C."""
        return datasets.get(next((r["dataset"] for r in self.runs if r.get("dataset")), datasets.DEFAULT)).c_title

    @property
    def c_short(self) -> str:
        """C10-C or C100-C: the tables' column name."""
        return self.c_title.replace("CIFAR-", "C")


def _read(path: Path) -> pa.Table | None:
    if not path.is_file():
        return None
    try:
        return pq.read_table(path)
    except pa.ArrowException as e:
        raise UnreadableFile(f"{path}: not a Parquet table ({str(e).splitlines()[0]}); "
                             f"`python -m harness.collect {path.parent}` rebuilds it") from None


def teacher_names(runs: list[dict]) -> dict[str, str]:
    """A teacher job's key -> its grid name ([teachers.<name>]). Teacher jobs carry no name of their
    own; a student's teacher_set lists the names in the order of its config's teacher keys."""
    names, seen = {}, set()
    for r in runs:
        tset = r.get("teacher_set")
        if r["stage"] != "student" or tset in (None, NO_TEACHERS) or tset in seen or not r.get("config_json"):
            continue
        seen.add(tset)
        names.update(zip(json.loads(r["config_json"]).get("teachers") or [], tset.split("+")))
    return names


def group_key(r: dict, names: dict) -> tuple:
    if r["stage"] == "teacher":  # a teacher by its grid name (by arch only where no student names it)
        return r["stage"], r["arch"], r["method"], names.get(r["job_key"], r["arch"])
    return r["stage"], r["arch"], r["method"], r["teacher_set"]


def group(res: Results) -> Results:
    res.teacher_names = teacher_names(res.runs)
    res.groups = {}
    for r in res.runs:
        res.groups.setdefault(group_key(r, res.teacher_names), []).append(r)
    return res


def _c10c_by_job(rob: pa.Table) -> tuple[dict, dict]:
    """Per job: the mean top-1 over the standard corruptions (the headline's definition, for
    results that predate the runs' own column) and the images per corruption × severity."""
    keys = rob.column("job_key").to_numpy(zero_copy_only=False)
    top1 = rob.column("top1").to_numpy(zero_copy_only=False).astype(float)
    n = rob.column("n").to_numpy(zero_copy_only=False).astype(float)
    standard = np.isin(rob.column("corruption").to_numpy(zero_copy_only=False), STANDARD)
    uniq, inv = np.unique(keys, return_inverse=True)
    count = np.bincount(inv, weights=standard)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(inv, weights=top1 * standard) / count
    images = np.zeros(len(uniq))
    np.maximum.at(images, inv, n)
    return ({k: m for k, m, c in zip(uniq.tolist(), means.tolist(), count) if c},
            dict(zip(uniq.tolist(), images.astype(int).tolist())))


def methods_of(root: Path) -> list[str]:
    """The methods of a grid's runs table, sorted."""
    return sorted(set(_read(GridPaths(root).runs_table).column("method").to_pylist()))


def load(root: Path, baselines: tuple = DEFAULT_BASELINES) -> Results:
    grid = GridPaths(root)
    runs = _read(grid.runs_table).to_pylist()
    robustness = _read(grid.robustness_table)
    res = Results(root, runs, _read(grid.epochs_table), _read(grid.confusion_table),
                  robustness if robustness is not None and robustness.num_rows else None,
                  baselines=tuple(baselines))
    if grid.grid_file.is_file():
        res.grid_text = grid.grid_file.read_text()
    means, images = {}, {}
    if res.robustness is not None:
        means, images = _c10c_by_job(res.robustness)
        res.c10c_source = "+".join(sorted(set(res.robustness.column("corruption_source").to_pylist())))
    for r in runs:  # older results folders lack these columns, or have them null
        if r.get("cifar10c_mean_top1") is None:
            r["cifar10c_mean_top1"] = means.get(r["job_key"])
        if r.get("cifar10c_images") is None:
            r["cifar10c_images"] = images.get(r["job_key"])
        r.setdefault("cifar10c_clean_top1", None)
    return group(res)


def completed(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == State.COMPLETED]


def by_seed(rows: list[dict], column: str = "test_top1") -> dict[int, float]:
    return {r["seed"]: r[column] for r in completed(rows) if r.get(column) is not None}


# ---------------------------------------------------------------- tables: which rows, compared with what

@dataclass(frozen=True)
class Section:
    """One table (and one figure panel): a stage's groups; for students those of one teacher set,
    the ce they are compared with first."""
    stage: str
    teachers: str | None  # the students' teacher set; None for another stage (all its groups)
    keys: tuple


def ce_key(res: Results, stage: str, arch: str, teachers: str) -> tuple | None:
    """The ce runs that `teachers`' methods are compared with: a ce of that teacher set where the
    grid has one, else the teacher-free ce."""
    for t in (teachers, NO_TEACHERS):
        if (stage, arch, CE, t) in res.groups:
            return stage, arch, CE, t
    return None


def teacher_baseline(res: Results, stage: str, arch: str, teachers: str) -> str | None:
    """The method the teacher set's methods are compared with besides ce: the first of
    `res.baselines` (--baseline, default kd) trained with this teacher set."""
    return next((m for m in res.baselines if (stage, arch, m, teachers) in res.groups), None)


def sections(res: Results, stage: str) -> list[Section]:
    keys = [k for k in res.groups if k[0] == stage]
    if stage != "student":
        return [Section(stage, None, tuple(keys))] if keys else []
    sets = list(dict.fromkeys(k[3] for k in keys if k[3] != NO_TEACHERS))
    out = [Section(stage, t, tuple(_with_references(res, [k for k in keys if k[3] == t]))) for t in sets]
    free = [k for k in keys if k[3] == NO_TEACHERS]
    if free and (not sets or any(k[2] != CE for k in free)):  # teacher-free methods other than ce
        out.append(Section(stage, NO_TEACHERS, tuple(_with_references(res, free))))
    return out


def _with_references(res: Results, own: list[tuple]) -> list[tuple]:
    """A teacher set's groups led by the ce each is compared with, then its teacher baseline."""
    refs = [ce_key(res, *k[:2], k[3]) for k in own]
    bases = [(k[0], k[1], teacher_baseline(res, *k[:2], k[3]), k[3]) for k in own]
    first = list(dict.fromkeys(r for r in refs + bases if r is not None and r in res.groups))
    return first + [k for k in own if k not in first]


def comparison_keys(res: Results, key: tuple) -> dict[str, tuple | None]:
    """The groups `key` is compared with: "ce" and "base" (its teacher set's baseline); None where
    there is none, or where it is the baseline itself (a comparison is made once, not twice)."""
    stage, arch, method, teachers = key
    base = teacher_baseline(res, stage, arch, teachers)
    return {"ce": ce_key(res, stage, arch, teachers) if method != CE else None,
            "base": (stage, arch, base, teachers) if base and method not in (CE, base) else None}


# ---------------------------------------------------------------- tables: numbers

def summary_rows(res: Results, keys, compare: bool = True) -> list[dict]:
    """Raw numbers of one table, a dict per group; with `compare`, each student group's paired
    differences to its references, p-values Holm-adjusted over the table."""
    out = [group_numbers(res, key) for key in keys]
    if compare:
        for row, key in zip(out, keys):
            if key[0] == "student":
                row.update(comparisons(res, key))
        adjust(out, [f"d_{ref}_p" for ref in REFS])
    return out


def group_numbers(res: Results, key: tuple) -> dict:
    done = completed(res.groups[key])
    s = stats.describe([r["test_top1"] for r in done])
    sel = stats.describe([r["test_top1_at_best_val"] for r in done])
    mean = lambda col: stats.describe([r.get(col) for r in done]).mean
    images = sorted({r["cifar10c_images"] for r in done if r.get("cifar10c_images")})
    return {"stage": key[0], "arch": key[1], "method": key[2], "teachers": key[3], "done": len(done),
            "planned": len(res.groups[key]), "top1_mean": s.mean, "top1_std": s.std, "top1_ci_low": s.ci_low,
            "top1_ci_high": s.ci_high, "best_val_sel_mean": sel.mean, "best_val_sel_std": sel.std,
            "c10c_mean": mean("cifar10c_mean_top1"), "c10c_clean_mean": mean("cifar10c_clean_top1"),
            "c10c_images": "/".join(map(str, images)), "ece_mean": mean_ece(done)}


def run_ece(r: dict) -> float | None:
    """A run's ECE (%): its recorded test_ece, else from its own reliability bins (older results)."""
    if r.get("test_ece") is not None:
        return r["test_ece"]
    if not r.get("test_reliability"):
        return None
    bins = json.loads(r["test_reliability"])
    n = sum(b["count"] for b in bins)
    return 100 * sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n if n else None


def mean_ece(runs: list[dict]) -> float:
    """The one ECE of a group, in the tables and the reliability figure: mean of its runs' ECEs."""
    return stats.describe([run_ece(r) for r in runs]).mean


def comparisons(res: Results, key: tuple) -> dict:
    row = {}
    for ref, other in comparison_keys(res, key).items():
        p = stats.paired(by_seed(res.groups[key]), by_seed(res.groups[other])) if other else None
        row.update({f"d_{ref}_vs": other[2] if other else "", f"d_{ref}_n": p.n if p else 0,
                    f"d_{ref}_mean": p.mean_diff if p else math.nan,
                    f"d_{ref}_boot_low": p.boot_low if p else math.nan,
                    f"d_{ref}_boot_high": p.boot_high if p else math.nan,
                    f"d_{ref}_p": p.p_value if p else math.nan})
    return row


def adjust(rows: list[dict], columns: list[str]) -> None:
    """Holm-adjust every p-value of a table together (one family: the table's comparisons, so that
    a table of many methods does not find differences by chance); adds `<column>_holm`."""
    cells = [(r, c) for r in rows for c in columns if c in r]
    for (r, c), p in zip(cells, stats.holm([r[c] for r, c in cells])):
        r[f"{c}_holm"] = p


def comparisons_text(n: int) -> str:
    return f"{n} comparison" + ("" if n == 1 else "s")


def tests_in(rows: list[dict], columns: list[str]) -> int:
    """How many p-values a table has: the m of its Holm adjustment."""
    return sum(not math.isnan(r.get(c, math.nan)) for r in rows for c in columns)


def c10c_images_text(runs: list[dict]) -> str:
    images = sorted({r["cifar10c_images"] for r in completed(runs) if r.get("cifar10c_images")})
    if not images:
        return "images per corruption × severity: not recorded"
    return f"{' / '.join(f'{i:,}' for i in images)} test images per corruption × severity"


def c10c_clean_text(runs: list[dict]) -> str:
    clean = stats.describe([r.get("cifar10c_clean_top1") for r in completed(runs)])
    return "clean on same images: n/a" if clean.n == 0 else f"clean on same images: {clean.mean:.2f} %"
