"""The report's figures (matplotlib, Agg): accuracy by method with error bars, validation curves,
CIFAR-10-C heatmap and per-severity accuracy, reliability diagram, confusion matrix of the best
method. Each is drawn only when its data exists; sized for a paper's text width."""
from __future__ import annotations

import json
import math

import numpy as np

from harness import stats
from harness.report import CLASSES, Results, completed

FIG_DPI = 200
FIG_WIDTH = 6.5  # inches: a paper's text width


def figures(res: Results) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8})
    out = res.root / "report"
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


def _panels(res: Results, stage: str) -> list[str]:
    return sorted({k[3] for k in res.groups if k[0] == stage})


def fig_accuracy(res: Results, plt):
    stage = main_stage(res)
    panels = _panels(res, stage)
    if not panels:
        return None
    methods = sorted({(k[1], k[2]) for k in res.groups if k[0] == stage})
    fig, axes = plt.subplots(1, len(panels), figsize=(FIG_WIDTH, 3.0), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels):
        for i, (arch, method) in enumerate(methods):
            done = completed(res.groups.get((stage, arch, method, panel), []))
            if not done:
                continue
            x = [r["test_top1"] for r in done]
            s = stats.describe(x)
            err = 0 if math.isnan(s.ci_low) else s.mean - s.ci_low
            jitter = np.linspace(-0.1, 0.1, len(x)) if len(x) > 1 else [0]
            ax.scatter(i - 0.15 + np.asarray(jitter), x, s=14 if len(x) <= 10 else 5, color="0.55", zorder=2,
                       linewidths=0)
            ax.errorbar([i + 0.15], [s.mean], yerr=[err], fmt="o", color="C3", capsize=3, markersize=4,
                        elinewidth=1.2, zorder=4)
        ax.set_xticks(range(len(methods)), [m if len({a for a, _ in methods}) == 1 else f"{m}\n{a}"
                                            for a, m in methods], rotation=30, ha="right")
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(f"teachers: {panel}")
        ax.set_xlabel("method")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test top-1 (%)")
    fig.suptitle(f"{stage}s: mean with 95 % t-interval (red) and each seed (grey)", fontsize=9)
    return fig


def fig_val_curves(res: Results, plt):
    if res.epochs is None or not res.epochs.num_rows:
        return None
    stage = main_stage(res)
    panels = _panels(res, stage)
    keys = sorted(k for k in res.groups if k[0] == stage)
    index = {r["job_key"]: keys.index(k) for k in keys for r in completed(res.groups[k])}
    job = res.epochs.column("job_key").to_numpy(zero_copy_only=False)
    g = np.asarray([index.get(j, -1) for j in job])
    epoch = res.epochs.column("epoch").to_numpy(zero_copy_only=False)
    val = res.epochs.column("val_top1").to_numpy(zero_copy_only=False).astype(float)
    ok = (g >= 0) & ~np.isnan(val)
    if not ok.any():
        return None
    g, epoch, val = g[ok], epoch[ok], val[ok]
    n_epochs = int(epoch.max())
    sums = np.zeros((len(keys), n_epochs + 1))
    counts = np.zeros_like(sums)
    np.add.at(sums, (g, epoch), val)
    np.add.at(counts, (g, epoch), 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(FIG_WIDTH, 3.0), sharey=True, squeeze=False,
                             layout="constrained")
    methods = sorted({(k[1], k[2]) for k in keys})
    for ax, panel in zip(axes[0], panels):
        for i, key in enumerate(keys):
            if key[3] != panel or not counts[i].any():
                continue
            have = counts[i] > 0
            x = np.arange(n_epochs + 1)[have]
            label = key[2] if len({a for a, _ in methods}) == 1 else f"{key[2]} ({key[1]})"
            ax.plot(x, sums[i][have] / counts[i][have], label=label,
                    color=f"C{methods.index((key[1], key[2])) % 10}", linewidth=1.2)
        ax.set_title(f"teachers: {panel}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0][0].set_ylabel("validation top-1 (%)")
    fig.suptitle(f"{stage}s: validation accuracy, mean over seeds", fontsize=9)
    return fig


def _c10c_arrays(res: Results):
    """Per group (stage's rows) × corruption × severity mean top-1 over the group's completed seeds."""
    rob = res.robustness
    if rob is None or not rob.num_rows:
        return None
    stage = main_stage(res)
    keys = sorted(k for k in res.groups if k[0] == stage)
    index = {r["job_key"]: i for i, k in enumerate(keys) for r in completed(res.groups[k])}
    g = np.asarray([index.get(j, -1) for j in rob.column("job_key").to_numpy(zero_copy_only=False)])
    corr_names, c = np.unique(rob.column("corruption").to_numpy(zero_copy_only=False), return_inverse=True)
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
    return keys, list(corr_names), list(sev_values), sums[have], counts[have]


def _row_label(key, keys) -> str:
    many_arch = len({k[1] for k in keys}) > 1
    return f"{key[2]} ← {key[3]}" + (f" ({key[1]})" if many_arch else "")


def _series(keys: list[tuple], limit: int = 8) -> list[tuple[str, list[int]]]:
    """Lines of a figure: one per group, or one per method (pooled over teacher sets) where the
    groups are too many to tell apart."""
    if len(keys) <= limit:
        return [(_row_label(k, keys), [i]) for i, k in enumerate(keys)]
    methods = sorted({(k[1], k[2]) for k in keys})
    many_arch = len({a for a, _ in methods}) > 1
    return [(m + (f" ({a})" if many_arch else "") + ", all teacher sets",
             [i for i, k in enumerate(keys) if (k[1], k[2]) == (a, m)]) for a, m in methods]


def fig_c10c_heatmap(res: Results, plt):
    arrays = _c10c_arrays(res)
    if arrays is None:
        return None
    keys, corrs, _, sums, counts = arrays
    with np.errstate(invalid="ignore"):
        grid = sums.sum(2) / counts.sum(2)
    height = 1.2 + 0.28 * len(keys)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(3.0, height)), layout="constrained")
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(corrs)), [c.replace("_", " ") for c in corrs], rotation=45, ha="right")
    ax.set_yticks(range(len(keys)), [_row_label(k, keys) for k in keys])
    if grid.size <= 300:
        for (i, j), v in np.ndenumerate(grid):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < np.nanmean(grid) else "black")
    ax.set_xlabel(f"corruption ({res.c10c_source or 'unknown'} source)")
    ax.set_ylabel("method ← teachers")
    fig.colorbar(im, ax=ax, label="top-1 (%)")
    ax.set_title("CIFAR-10-C accuracy per corruption (mean over severities and seeds)")
    return fig


def fig_c10c_severity(res: Results, plt):
    arrays = _c10c_arrays(res)
    if arrays is None:
        return None
    keys, _, sevs, sums, counts = arrays
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 2.8), layout="constrained")
    for label, idx in _series(keys):
        with np.errstate(invalid="ignore"):
            curve = sums[idx].sum((0, 1)) / counts[idx].sum((0, 1))
        ax.plot(sevs, curve, marker="o", markersize=3, linewidth=1.2, label=label)
    ax.set_xticks(sevs)
    ax.set_xlabel("corruption severity")
    ax.set_ylabel("top-1 (%), mean over corruptions")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(f"CIFAR-10-C accuracy per severity ({res.c10c_source or 'unknown'} corruptions)")
    return fig


def fig_reliability(res: Results, plt):
    stage = main_stage(res)
    keys = [k for k in sorted(res.groups) if k[0] == stage
            and any(r.get("test_reliability") for r in completed(res.groups[k]))]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.2), layout="constrained")
    ax.plot([0, 100], [0, 100], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    for label, idx in _series(keys):
        count = conf = acc = 0
        for r in (r for i in idx for r in completed(res.groups[keys[i]])):
            if r.get("test_reliability"):
                bins = json.loads(r["test_reliability"])
                n = np.asarray([b["count"] for b in bins], float)
                count = count + n
                conf = conf + n * np.asarray([b["confidence"] for b in bins])
                acc = acc + n * np.asarray([b["accuracy"] for b in bins])
        have = count > 0
        ece = 100 * np.sum(np.abs(acc[have] - conf[have])) / count.sum()
        ax.plot(100 * conf[have] / count[have], 100 * acc[have] / count[have], marker="o", markersize=3,
                linewidth=1.1, label=f"{label} (ECE {ece:.1f} %)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.set_xlabel("confidence (%), 15 equal-width bins")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(f"reliability ({stage}s, pooled over seeds)")
    return fig


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
    k = int(max(t.max(), p.max())) + 1
    k = max(k, 10) if k <= 10 else k
    m = np.zeros((k, k))
    np.add.at(m, (t, p), c)
    pct = 100 * m / np.maximum(m.sum(1, keepdims=True), 1)
    names = CLASSES if k == 10 else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(FIG_WIDTH * 0.75, FIG_WIDTH * 0.68), layout="constrained")
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(pct):
        if v >= 0.5:
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white" if v > 50 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="% of the true class (row)", shrink=0.8)
    ax.set_title(f"confusion of the best {stage}: {_row_label(best, [best])} ({best[1]})\n"
                 f"{best_mean:.2f} % mean test top-1, {len(jobs)} seeds pooled")
    return fig


# ---------------------------------------------------------------- entry points
