"""The report's figures (matplotlib, Agg): accuracy by method with error bars, validation curves,
CIFAR-10-C heatmap and per-severity accuracy, reliability diagram, confusion matrix of the best
method. Each is drawn only when its data exists; sized for a paper's text width.

Students are drawn in one panel per teacher set (harness.analysis.results.sections), so that every method
stands beside what it is compared with: the teacher-free `ce` as a reference band and each of the
set's teachers as a line. Accuracy axes never leave 0–100 %."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from harness.analysis import stats
from harness.data import datasets
from harness.data.corruptions import EXTRA, STANDARD
from harness.run.layout import GridPaths
from harness.analysis.results import (CE, NO_TEACHERS, Results, c10c_clean_text, c10c_images_text, completed,
                                      mean_ece, sections)

FIG_DPI = 200
FIG_WIDTH = 6.5  # inches: a paper's text width
CE_COLOR = "0.45"
TEACHER_STYLE = {"linestyle": ":", "linewidth": 1.3}


def figures(res: Results) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8})
    out = GridPaths(res.root).report
    made = []
    for name, draw in (("accuracy.png", fig_accuracy), ("val_curves.png", fig_val_curves),
                       ("cifar10c_heatmap.png", fig_c10c_heatmap), ("cifar10c_severity.png", fig_c10c_severity),
                       ("reliability.png", fig_reliability), ("confusion.png", fig_confusion)):
        fig = draw(res, plt)
        if fig is None:
            continue
        fig.savefig(out / name, dpi=FIG_DPI)
        plt.close(fig)
        made.append(name)
    return made


def main_stage(res: Results) -> str:
    return "student" if any(k[0] == "student" for k in res.groups) else "teacher"


# ---------------------------------------------------------------- panels: one per teacher set

@dataclass(frozen=True)
class Panel:
    title: str
    methods: list  # group keys drawn as columns / curves
    ce: list  # ce group keys drawn as reference bands
    teachers: list  # (grid name, teacher group key) drawn as reference lines


def panels(res: Results, stage: str) -> list[Panel]:
    out = []
    for section in sections(res, stage):
        refs = [k for k in section.keys if k[2] == CE] if stage == "student" else []
        methods = [k for k in section.keys if k not in refs] or refs  # a ce-only grid: ce is the column
        title = "teachers" if section.teachers is None else f"teachers: {section.teachers}"
        out.append(Panel(title, methods, [k for k in refs if k not in methods], teacher_refs(res, section.teachers)))
    return out


def teacher_refs(res: Results, teachers: str | None) -> list[tuple[str, tuple]]:
    if teachers in (None, NO_TEACHERS):
        return []
    by_name = {k[3]: k for k in res.groups if k[0] == "teacher"}
    return [(name, by_name[name]) for name in teachers.split("+") if name in by_name]


def _mean(res: Results, key: tuple, column: str) -> float:
    return stats.describe([r.get(column) for r in completed(res.groups[key])]).mean


def _method_colors(res: Results, stage: str) -> dict:
    """One colour per method, the same in every panel and figure."""
    methods = list(dict.fromkeys(k[2] for k in res.groups if k[0] == stage and k[2] != CE))
    return {m: f"C{i % 10}" for i, m in enumerate(methods)} | {CE: CE_COLOR}


def _teacher_colors(res: Results) -> dict:
    import matplotlib

    names = list(dict.fromkeys(k[3] for k in res.groups if k[0] == "teacher"))
    return {n: matplotlib.colormaps["Dark2"](i % 8) for i, n in enumerate(names)}


def column_label(key: tuple, keys: list) -> str:
    """A column: the method, or a teacher's grid name; the arch where it is not plain."""
    if key[0] == "teacher":
        return key[3] + ("" if key[1] == key[3] else f"\n{key[1]}")
    return key[2] + (f"\n{key[1]}" if len({k[1] for k in keys}) > 1 else "")


def _clip_limits(values, pad_min: float = 0.5) -> tuple[float, float]:
    """y-limits around the drawn values, never outside what an accuracy can be."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if not len(v):
        return 0.0, 100.0
    pad = max(pad_min, 0.06 * (v.max() - v.min()))
    return max(0.0, float(v.min()) - pad), min(100.0, float(v.max()) + pad)


def _panel_axes(plt, panels_: list[Panel], height: float):
    widths = [len(p.methods) + 1 for p in panels_]  # as wide as its columns: no empty slots
    fig, axes = plt.subplots(1, len(panels_), figsize=(FIG_WIDTH, height), sharey=True, squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": widths})
    return fig, axes[0]


def _figure_legend(fig, axes) -> None:
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        longest = max(len(label) for label in handles)  # ~0.06 in a character at 8 pt, plus the marker
        ncols = max(1, min(len(handles), 4, int(FIG_WIDTH / (0.06 * longest + 0.6))))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=ncols)


def ce_label(key: tuple) -> str:
    return "ce (no teachers)" if key[3] == NO_TEACHERS else f"ce ({key[3]})"


def teacher_label(name: str, key: tuple) -> str:
    return f"teacher {name}" + ("" if key[1] == name else f" ({key[1]})")


def _wrap(label: str, width: int = 28) -> str:
    """Long "method ← teacher set" labels on two lines (a three-teacher set's names are long)."""
    return label.replace(" ← ", " ←\n", 1) if len(label) > width else label


# ---------------------------------------------------------------- accuracy

def fig_accuracy(res: Results, plt):
    stage = main_stage(res)
    panels_ = panels(res, stage)
    if not panels_:
        return None
    fig, axes = _panel_axes(plt, panels_, 3.6)
    teacher_colors = _teacher_colors(res)
    drawn = []
    for ax, panel in zip(axes, panels_):
        drawn += _accuracy_references(ax, res, panel, teacher_colors)
        for i, key in enumerate(panel.methods):
            drawn += _accuracy_column(ax, i, [r["test_top1"] for r in completed(res.groups[key])])
        ax.set_xticks(range(len(panel.methods)), [column_label(k, panel.methods) for k in panel.methods],
                      rotation=30, ha="right")
        ax.set_xlim(-0.6, len(panel.methods) - 0.4)
        ax.set_title(panel.title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(*_clip_limits(drawn))
    axes[0].set_ylabel("test top-1 (%)")
    _figure_legend(fig, axes)
    fig.suptitle(f"{stage}s: mean with 95 % t-interval (red; clipped to 0–100 %) and each seed (grey)", fontsize=9)
    return fig


def _accuracy_column(ax, i: int, values: list[float]) -> list[float]:
    """Column i: every seed, and the mean with its t-interval cut to the possible 0–100 %."""
    s = stats.describe(values)
    if s.n == 0:
        return []
    jitter = np.linspace(-0.1, 0.1, s.n) if s.n > 1 else np.zeros(1)
    ax.scatter(i - 0.15 + jitter, values, s=14 if s.n <= 10 else 5, color="0.55", zorder=2, linewidths=0,
               label="each seed")
    low, high = (s.mean, s.mean) if math.isnan(s.ci_low) else (max(0.0, s.ci_low), min(100.0, s.ci_high))
    ax.errorbar([i + 0.15], [s.mean], yerr=[[s.mean - low], [high - s.mean]], fmt="o", color="C3", capsize=3,
                markersize=4, elinewidth=1.2, zorder=4, label="mean, 95 % t-interval")
    return list(values) + [low, high]


def _accuracy_references(ax, res: Results, panel: Panel, teacher_colors: dict) -> list[float]:
    """ce as a band (its seeds' min–max) with its mean, each teacher as a line at its test top-1."""
    drawn = []
    for key in panel.ce:
        x = [r["test_top1"] for r in completed(res.groups[key])]
        if not x:
            continue
        label = ce_label(key)
        ax.axhspan(min(x), max(x), color=CE_COLOR, alpha=0.18, linewidth=0)
        ax.axhline(float(np.mean(x)), color=CE_COLOR, linestyle="--", linewidth=1.1,
                   label=f"{label}: mean, seeds' min–max")
        drawn += x
    for name, key in panel.teachers:
        top1 = _mean(res, key, "test_top1")
        if not math.isnan(top1):
            ax.axhline(top1, color=teacher_colors[name], **TEACHER_STYLE, label=teacher_label(name, key))
            drawn.append(top1)
    return drawn


# ---------------------------------------------------------------- validation curves

def _val_spread(res: Results, keys: list) -> dict:
    """Per group: epochs, mean, min and max over its completed seeds of the validation top-1."""
    index = {r["job_key"]: i for i, k in enumerate(keys) for r in completed(res.groups[k])}
    g = np.asarray([index.get(j, -1) for j in res.epochs.column("job_key").to_numpy(zero_copy_only=False)])
    epoch = res.epochs.column("epoch").to_numpy(zero_copy_only=False)
    val = res.epochs.column("val_top1").to_numpy(zero_copy_only=False).astype(float)
    ok = (g >= 0) & ~np.isnan(val)
    if not ok.any():
        return {}
    g, epoch, val = g[ok], epoch[ok], val[ok]
    shape = (len(keys), int(epoch.max()) + 1)
    sums, counts = np.zeros(shape), np.zeros(shape)
    low, high = np.full(shape, np.inf), np.full(shape, -np.inf)
    np.add.at(sums, (g, epoch), val)
    np.add.at(counts, (g, epoch), 1)
    np.minimum.at(low, (g, epoch), val)
    np.maximum.at(high, (g, epoch), val)
    out = {}
    for i, key in enumerate(keys):
        have = counts[i] > 0
        if have.any():
            out[key] = (np.flatnonzero(have), sums[i][have] / counts[i][have], low[i][have], high[i][have])
    return out


def fig_val_curves(res: Results, plt):
    if res.epochs is None or not res.epochs.num_rows:
        return None
    stage = main_stage(res)
    panels_ = panels(res, stage)
    curves = _val_spread(res, [k for p in panels_ for k in dict.fromkeys(p.ce + p.methods)])
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(panels_), figsize=(FIG_WIDTH, 3.4), sharey=True, squeeze=False,
                             layout="constrained")
    axes = axes[0]
    colors, teacher_colors = _method_colors(res, stage), _teacher_colors(res)
    drawn = []
    for ax, panel in zip(axes, panels_):
        for key in panel.ce + panel.methods:
            if key in curves:
                drawn += _val_curve(ax, curves[key], key, panel, colors)
        for name, key in panel.teachers:
            best = _mean(res, key, "best_val_top1")
            if not math.isnan(best):
                ax.axhline(best, color=teacher_colors[name], **TEACHER_STYLE,
                           label=f"{teacher_label(name, key)}: best val")
                drawn.append(best)
        ax.set_title(panel.title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(*_clip_limits(drawn))
    axes[0].set_ylabel("validation top-1 (%)")
    _figure_legend(fig, axes)
    fig.suptitle(f"{stage}s: validation accuracy, mean over seeds (line) and the seeds' min–max (band)",
                 fontsize=9)
    return fig


def _val_curve(ax, curve, key: tuple, panel: Panel, colors: dict) -> list[float]:
    x, mean, low, high = curve
    is_ref = key in panel.ce
    label = ce_label(key) if is_ref else column_label(key, panel.methods).replace("\n", " ")
    color = colors.get(key[2], "C0") if key[0] == "student" else None
    ax.fill_between(x, low, high, color=color, alpha=0.15 if is_ref else 0.2, linewidth=0)
    ax.plot(x, mean, color=color, linewidth=1.2, linestyle="--" if is_ref else "-", label=label)
    return [float(low.min()), float(high.max())]


# ---------------------------------------------------------------- CIFAR-10-C

def _c10c_order(names) -> list[str]:
    """Corruptions of the headline mean (the standard 15, in their order) first, then the others."""
    rank = {c: i for i, c in enumerate(STANDARD + EXTRA)}
    return sorted(names, key=lambda c: (rank.get(c, len(rank)), c))


def _c10c_arrays(res: Results):
    """Per group (stage's rows) × corruption × severity mean top-1 over the group's completed seeds."""
    rob = res.robustness
    if rob is None or not rob.num_rows:
        return None
    stage = main_stage(res)
    keys = list(dict.fromkeys(k for s in sections(res, stage) for k in s.keys))  # ce once, not per teacher set
    index = {r["job_key"]: i for i, k in enumerate(keys) for r in completed(res.groups[k])}
    g = np.asarray([index.get(j, -1) for j in rob.column("job_key").to_numpy(zero_copy_only=False)])
    names = rob.column("corruption").to_numpy(zero_copy_only=False)
    corr_names = _c10c_order(set(names.tolist()))
    position = {name: i for i, name in enumerate(corr_names)}
    c = np.fromiter((position[n] for n in names), dtype=np.int64, count=len(names))
    sev_values, s = np.unique(rob.column("severity").to_numpy(zero_copy_only=False), return_inverse=True)
    top1 = rob.column("top1").to_numpy(zero_copy_only=False).astype(float)
    ok = g >= 0
    if not ok.any():
        return None
    sums = np.zeros((len(keys), len(corr_names), len(sev_values)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (g[ok], c[ok], s[ok]), top1[ok])
    np.add.at(counts, (g[ok], c[ok], s[ok]), 1)
    have = counts.sum(axis=(1, 2)) > 0
    keys = [k for k, h in zip(keys, have) if h]
    return keys, corr_names, list(sev_values), sums[have], counts[have]


def _group_runs(res: Results, keys) -> list[dict]:
    return [r for k in keys for r in completed(res.groups[k])]


def c10c_subtitle(res: Results, keys) -> str:
    """What every CIFAR-10-C figure states: how many images, and the clean top-1 on those images."""
    runs = _group_runs(res, keys)
    return f"{c10c_images_text(runs)}; {c10c_clean_text(runs)}"


def _row_label(key, keys) -> str:
    many_arch = len({k[1] for k in keys}) > 1
    if key[0] == "teacher":
        return f"teacher {key[3]}" + ("" if key[1] == key[3] else f" ({key[1]})")
    teachers = "no teachers" if key[3] == NO_TEACHERS else key[3]
    return f"{key[2]} ← {teachers}" + (f" ({key[1]})" if many_arch else "")


def _series(keys: list[tuple], limit: int = 8) -> list[tuple[str, list[int]]]:
    """Lines of a figure: one per group, or one per method (pooled over teacher sets) where the
    groups are too many to tell apart."""
    if len(keys) <= limit:
        return [(_row_label(k, keys), [i]) for i, k in enumerate(keys)]
    methods = list(dict.fromkeys((k[1], k[2]) for k in keys))
    many_arch = len({a for a, _ in methods}) > 1
    out = []
    for a, m in methods:
        idx = [i for i, k in enumerate(keys) if (k[1], k[2]) == (a, m)]
        label = _row_label(keys[idx[0]], keys) if len(idx) == 1 else \
            m + (f" ({a})" if many_arch else "") + ", all teacher sets"
        out.append((label, idx))
    return out


def fig_c10c_heatmap(res: Results, plt):
    arrays = _c10c_arrays(res)
    if arrays is None:
        return None
    keys, corrs, _, sums, counts = arrays
    with np.errstate(invalid="ignore"):
        per_corruption = sums.sum(2) / counts.sum(2)
    summary = np.asarray([[_mean(res, k, "cifar10c_clean_top1"), _mean(res, k, "cifar10c_mean_top1")] for k in keys])
    grid = np.hstack([summary, per_corruption])
    outside = [c not in STANDARD for c in corrs]
    labels = [_wrap(_row_label(k, keys)) for k in keys]
    height = 2.4 + (0.4 if any("\n" in label for label in labels) else 0.28) * len(keys)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(3.2, height)), layout="constrained")
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid) if np.isfinite(grid).any() else 0,
                   vmax=np.nanmax(grid) if np.isfinite(grid).any() else 100)
    columns = ["clean, same images", "headline mean"] + [c.replace("_", " ") + (" *" if o else "")
                                                        for c, o in zip(corrs, outside)]
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    for tick, o in zip(ax.get_xticklabels()[2:], outside):
        if o:
            tick.set_color("0.45")
    ax.set_yticks(range(len(keys)), labels)
    for x in [1.5] + ([2 + outside.index(True) - 0.5] if any(outside) else []):
        ax.axvline(x, color="white", linewidth=3)
    _heatmap_numbers(ax, grid)
    note = "\n* not in the headline mean (the 15 standard corruptions)" if any(outside) else ""
    ax.set_xlabel(f"corruption ({res.c10c_source or 'unknown'} source){note}")
    ax.set_ylabel("method ← teachers")
    fig.colorbar(im, ax=ax, label="top-1 (%)")
    fig.suptitle(f"{res.c_title} top-1 per corruption, mean over severities and seeds\n" + c10c_subtitle(res, keys),
                 fontsize=9)
    return fig


def _heatmap_numbers(ax, grid) -> None:
    if grid.size > 400:
        return
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "n/a" if math.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=6,
                color="black" if math.isnan(v) or v >= middle else "white")


def fig_c10c_severity(res: Results, plt):
    arrays = _c10c_arrays(res)
    if arrays is None:
        return None
    keys, corrs, sevs, sums, counts = arrays
    standard = [i for i, c in enumerate(corrs) if c in STANDARD]
    cols = standard or list(range(len(corrs)))  # as the headline: the standard corruptions only
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.0), layout="constrained")
    any_clean = False
    for n, (label, idx) in enumerate(_series(keys)):
        with np.errstate(invalid="ignore"):
            curve = sums[idx][:, cols].sum((0, 1)) / counts[idx][:, cols].sum((0, 1))
        clean = stats.describe([r.get("cifar10c_clean_top1") for r in _group_runs(res, [keys[i] for i in idx])])
        x, y = (list(sevs), list(curve)) if clean.n == 0 else ([0] + list(sevs), [clean.mean] + list(curve))
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=_wrap(label, 40), color=f"C{n % 10}")
        any_clean |= clean.n > 0
    ticks = ([0] if any_clean else []) + list(sevs)  # severity 0: the same images, uncorrupted
    ax.set_xticks(ticks, (["clean\n(same images)"] if any_clean else []) + [str(s) for s in sevs])
    ax.set_xlim(min(ticks) - 0.3, max(sevs) + 0.3)
    ax.set_ylim(*_clip_limits([v for line in ax.get_lines() for v in line.get_ydata()]))
    ax.set_xlabel("corruption severity")
    what = f"the {len(standard)} standard corruptions" if standard else f"all {len(corrs)} corruptions (none standard)"
    ax.set_ylabel(f"top-1 (%), mean over\n{what}")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"{res.c_title} top-1 per severity ({res.c10c_source or 'unknown'} corruptions)\n"
                 + c10c_subtitle(res, keys), fontsize=9)
    return fig


# ---------------------------------------------------------------- calibration, confusion

def fig_reliability(res: Results, plt):
    stage = main_stage(res)
    keys = list(dict.fromkeys(k for s in sections(res, stage) for k in s.keys
                              if any(r.get("test_reliability") for r in completed(res.groups[k]))))
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.2), layout="constrained")
    ax.plot([0, 100], [0, 100], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for label, idx in _series(keys):
        runs = _group_runs(res, [keys[i] for i in idx])
        conf, acc = pooled_reliability(runs)
        # the ECE of the tables (mean of the seeds' ECEs), not that of the pooled curve: one number, one name
        ax.plot(conf, acc, marker="o", markersize=3, linewidth=1.1,
                label=_wrap(f"{label} (ECE {mean_ece(runs):.2f} %)", 40))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("confidence (%), 15 equal-width bins")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(f"reliability ({stage}s): curves pool the seeds' bins;\n"
                 "ECE: mean of the seeds' ECEs, as in the tables")
    return fig


def pooled_reliability(runs: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and accuracy (%) of each non-empty bin, the seeds' bins pooled."""
    count = conf = acc = 0
    for r in runs:
        if r.get("test_reliability"):
            bins = json.loads(r["test_reliability"])
            n = np.asarray([b["count"] for b in bins], float)
            count = count + n
            conf = conf + n * np.asarray([b["confidence"] for b in bins])
            acc = acc + n * np.asarray([b["accuracy"] for b in bins])
    have = np.asarray(count) > 0
    return 100 * conf[have] / count[have], 100 * acc[have] / count[have]


def class_names(rows: list[dict], seen: int) -> list[str]:
    """The class names of the data set the rows' jobs trained on (CIFAR-10's for tables from before
    runs.parquet had a dataset column), or indices where the confusion holds more classes."""
    name = next((r.get("dataset") for r in rows if r.get("dataset")), datasets.DEFAULT)
    names = list(datasets.get(name).class_names)
    return names if seen <= len(names) else [str(i) for i in range(seen)]


def fig_confusion(res: Results, plt):
    if res.confusion is None or not res.confusion.num_rows:
        return None
    stage = main_stage(res)
    ranked = [(stats.describe([r["test_top1"] for r in completed(rows)]).mean, key)
              for key, rows in res.groups.items() if key[0] == stage and completed(rows)]
    if not ranked:
        return None
    best_mean, best = max(ranked, key=lambda x: (x[0], x[1]))
    jobs = {r["job_key"] for r in completed(res.groups[best])}
    conf = res.confusion
    keys = conf.column("job_key").to_numpy(zero_copy_only=False)
    mask = np.isin(keys, list(jobs))
    if not mask.any():
        return None
    t = conf.column("true_class").to_numpy(zero_copy_only=False)[mask]
    p = conf.column("pred_class").to_numpy(zero_copy_only=False)[mask]
    c = conf.column("count").to_numpy(zero_copy_only=False)[mask].astype(float)
    names = class_names(res.groups[best], int(max(t.max(), p.max())) + 1)
    k = len(names)
    m = np.zeros((k, k))
    np.add.at(m, (t, p), c)
    pct = 100 * m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH * 0.75, FIG_WIDTH * 0.68), layout="constrained")
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    if k <= 20:  # a number in each cell, a name on each row and column
        for (i, j), v in np.ndenumerate(pct):
            if v >= 0.5:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v > 50 else "black")
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
    else:  # 100 classes: the colours alone, class indices every tenth row and column
        ax.set_xticks(range(0, k, 10))
        ax.set_yticks(range(0, k, 10))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="% of the true class (row)", shrink=0.8)
    ax.set_title(f"confusion of the best {stage}: {_row_label(best, [best])} ({best[1]})\n"
                 f"{best_mean:.2f} % mean test top-1, {len(jobs)} seeds pooled")
    return fig
