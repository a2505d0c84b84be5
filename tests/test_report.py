"""`python -m harness.report` on synthetic results folders: tables with the expected numbers,
report.md, the PNG figures, partial grids, formats, --compare."""
import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from rich.console import Console
from scipy import stats as st

from harness.analysis import collect, report, results
from harness.analysis.collect import write_parquet
from harness.data.corruptions import EXTRA, STANDARD

CE = {0: 90.0, 1: 91.0, 2: 92.0}
KD = {0: 91.0, 1: 91.5, 2: 93.5}  # kd − ce = 1, 0.5, 1.5: mean 1, sd 0.5, t = 2√3, df 2


def run(key, stage, method, seed, teachers, top1, status="completed"):
    bins = [{"count": 10 if i > 8 else 0, "confidence": (i + 0.5) / 15, "accuracy": 0.9} for i in range(15)]
    return {**{n: None for n in collect.RUNS_SCHEMA.names}, "schema_version": 1, "grid": "syn", "job_key": key,
            "stage": stage, "method": method, "seed": seed, "teacher_set": teachers, "arch": "resnet20",
            "status": status, "test_top1": top1 if status == "completed" else None,
            "test_top1_at_best_val": top1 - 0.1 if status == "completed" else None, "wall_time_s": 100.0,
            "test_ece": 2.0, "test_reliability": json.dumps(bins), "torch_version": "2.5.1", "device": "cpu",
            "git_commit": "abc"}


def make_results(root, robustness=True, kd_offset=0.0):
    runs = [run("t0", "teacher", "ce", 7, "none", 93.0)]
    runs += [run(f"c{s}", "student", "ce", s, "small", v) for s, v in CE.items()]
    runs += [run(f"k{s}", "student", "kd", s, "small", v + kd_offset) for s, v in KD.items()]
    runs.append(run("k3", "student", "kd", 3, "small", None, status="pending"))
    root.mkdir(parents=True)
    write_parquet(pa.Table.from_pylist(runs, schema=collect.RUNS_SCHEMA), root / "runs.parquet")
    done = [r for r in runs if r["status"] == "completed"]
    write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "epoch": e,
                                         "val_top1": 50.0 + 10 * e} for r in done for e in (1, 2, 3)]),
                  root / "epochs.parquet")
    write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "true_class": t,
                                         "pred_class": p, "count": 90 if t == p else 1}
                                        for r in done for t in range(10) for p in range(10)],
                                       schema=collect.CONFUSION_SCHEMA), root / "confusion.parquet")
    if robustness:
        write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "corruption": c,
                                             "severity": s, "top1": 80.0 - 10 * s + (5 if c == "fog" else 0),
                                             "n": 100, "corruption_source": "generated"}
                                            for r in done for c in ("fog", "gaussian_noise") for s in (1, 2, 3, 4, 5)]),
                      root / "robustness.parquet")
    else:  # what collect writes for a grid without [eval]: an empty table
        write_parquet(collect.ROBUSTNESS_SCHEMA.empty_table(), root / "robustness.parquet")
    (root / "grid.toml").write_text('name = "syn"\n')
    return root


TEACHERS = {"resnet56": ("tA", "resnet56", 93.0), "resnet32": ("tB", "resnet32", 92.0),
            "resnet20": ("tC", "resnet20", 91.0)}
SINGLE, MULTI = "resnet56", "resnet56+resnet32+resnet20"
STUDY = [("ce", "none", 86.0), ("kd", SINGLE, 87.0), ("kd+fa", SINGLE, 87.4), ("cakd", SINGLE, 87.6),
         ("kd_avg3", MULTI, 87.2), ("mate", MULTI, 88.0), ("mate_uniform", MULTI, 87.5)]


def study_run(key, stage, method, seed, teachers, top1, arch="resnet20", c10c=True):
    """A row as collect writes it for a grid with variants of their own teacher sets."""
    teacher_keys = [TEACHERS[t][0] for t in teachers.split("+")] if teachers != "none" else []
    r = run(key, stage, method, seed, teachers, top1)
    r.update(grid="study", arch=arch, best_val_top1=top1 + 0.5, test_ece=1.0 + seed,
             config_json=json.dumps({"arch": arch, "seed": seed, "teachers": teacher_keys}))
    if c10c:
        r.update(cifar10c_images=1000, cifar10c_clean_top1=top1 + 0.3)
    return r


def make_study_results(root, seeds=(0, 1, 2), c10c_columns=True):
    """Teachers resnet56/32/20; ce without teachers; kd, kd+fa, cakd with resnet56; kd_avg3, mate,
    mate_uniform with all three; CIFAR-10-C over the 15 standard corruptions and the 4 extra ones."""
    runs = [study_run(k, "teacher", "ce", 0, "none", top1, arch) for k, arch, top1 in TEACHERS.values()]
    runs += [study_run(f"{method}-{s}", "student", method, s, teachers, top1 + 0.4 * s + 0.1 * (len(method) * s % 3))
             for method, teachers, top1 in STUDY for s in seeds]  # seeds shift every method, not all alike
    if not c10c_columns:  # an older results folder: runs.parquet without the two columns
        for r in runs:
            r.pop("cifar10c_images"), r.pop("cifar10c_clean_top1")
    root.mkdir(parents=True)
    schema = collect.RUNS_SCHEMA if c10c_columns else pa.schema(
        [f for f in collect.RUNS_SCHEMA if f.name not in ("cifar10c_images", "cifar10c_clean_top1")])
    write_parquet(pa.Table.from_pylist(runs, schema=schema), root / "runs.parquet")
    write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "epoch": e,
                                         "val_top1": r["test_top1"] * (1 - 0.5 ** e) + r["seed"]}
                                        for r in runs for e in range(1, 9)]), root / "epochs.parquet")
    write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "true_class": t,
                                         "pred_class": p, "count": 90 if t == p else 1}
                                        for r in runs for t in range(10) for p in range(10)],
                                       schema=collect.CONFUSION_SCHEMA), root / "confusion.parquet")
    write_parquet(pa.Table.from_pylist([{"schema_version": 1, "job_key": r["job_key"], "corruption": c,
                                         "severity": s, "top1": r["test_top1"] - 6 * s - (30 if c in EXTRA else 0),
                                         "n": 1000, "corruption_source": "generated"}
                                        for r in runs for c in STANDARD + EXTRA for s in (1, 2, 3, 4, 5)],
                                       schema=collect.ROBUSTNESS_SCHEMA), root / "robustness.parquet")
    (root / "grid.toml").write_text('name = "study"\n')
    return root


def test_tables_hold_the_statistics(tmp_path):
    res = results.load(make_results(tmp_path / "syn"))
    (section,) = results.sections(res, "student")
    (kd,) = [r for r in results.summary_rows(res, section.keys) if r["method"] == "kd"]
    assert (kd["done"], kd["planned"]) == (3, 4)  # the pending seed is counted, not averaged
    assert kd["top1_mean"] == pytest.approx(92.0) and kd["top1_std"] == pytest.approx(math.sqrt(1.75))
    half = 4.302653 * math.sqrt(1.75) / math.sqrt(3)
    assert kd["top1_ci_low"] == pytest.approx(92 - half, abs=1e-4)
    assert kd["d_ce_n"] == 3 and kd["d_ce_mean"] == pytest.approx(1.0)
    assert kd["d_ce_p"] == pytest.approx(st.ttest_rel(list(KD.values()), list(CE.values())).pvalue)
    assert kd["d_ce_p"] == pytest.approx(0.0742, abs=1e-3)
    assert 0.5 <= kd["d_ce_boot_low"] <= 1.0 <= kd["d_ce_boot_high"] <= 1.5
    assert kd["c10c_mean"] == pytest.approx(80 - 30 + 2.5)  # mean over severities 1-5 and the two corruptions
    assert kd["ece_mean"] == 2.0 and kd["best_val_sel_mean"] == pytest.approx(91.9)


def test_report_writes_every_file_and_says_what_is_missing(tmp_path, capsys):
    root = make_results(tmp_path / "syn")
    assert report.main([str(root)]) == 0
    out, err = capsys.readouterr()
    assert "92.00 ± 1.32" in out and "+1.00" in out and "0.074 (n=3)" in out
    assert "1 of 8 jobs not completed" in err and "seed 3" in err
    md = (root / "report" / "report.md").read_text()
    assert "92.00 ± 1.32" in md and "Jobs not completed" in md and "[k3]: pending" in md
    assert "corruption source: generated" in md and "`2.5.1` (7)" in md and "## Grid file" in md
    sizes = {"accuracy.png": (1300, 720), "val_curves.png": (1300, 680), "reliability.png": (1300, 640),
             "cifar10c_severity.png": (1300, 600), "confusion.png": (975, 884)}
    for name, size in sizes.items():
        with Image.open(root / "report" / name) as im:
            assert im.format == "PNG" and im.size == size, name
        assert f"![{name}]({name})" in md
    with Image.open(root / "report" / "cifar10c_heatmap.png") as im:
        assert im.size[0] == 1300


def test_without_cifar10c_and_in_other_formats(tmp_path, capsys):
    root = make_results(tmp_path / "syn", robustness=False)
    assert report.main([str(root), "--format", "md", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | kd | small | 3/4 | 92.00 ± 1.32 |" in out
    assert not (root / "report").exists()
    assert report.main([str(root), "--format", "latex", "--no-write"]) == 0
    assert r"92.00 $\pm$ 1.32" in capsys.readouterr().out
    assert report.main([str(root), "--format", "csv", "--no-write"]) == 0
    assert ",kd,small,3,4,92.0," in capsys.readouterr().out
    assert report.main([str(root)]) == 0
    assert "no CIFAR-10-C evaluation" in (root / "report" / "report.md").read_text()
    assert not (root / "report" / "cifar10c_heatmap.png").exists()


def test_compare_two_grids(tmp_path, capsys):
    a, b = make_results(tmp_path / "a"), make_results(tmp_path / "b", kd_offset=-1.0)
    assert report.main([str(a), "--compare", str(b), "--format", "md", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | kd | small | 3 | 92.00 ± 1.32 | 3 | 91.00 ± 1.32 | +1.00" in out
    assert "p (Welch, Holm)" in out and "Holm-adjusted over the 2 comparisons of this table" in out


def test_missing_runs_table_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "jobs").mkdir()  # jobs ran, nothing collected yet
    assert report.main([str(tmp_path)]) == 2
    assert f"python -m harness.collect {tmp_path}" in capsys.readouterr().err


def test_a_folder_that_is_no_grid_is_not_sent_to_collect(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such results folder" in err and "harness.launch" in err and "harness.collect" not in err
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a grid's results folder" in err and "harness.collect" not in err


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _texts(fig) -> list[str]:
    from matplotlib.text import Text
    return [t.get_text() for t in fig.findobj(Text)]


def test_accuracy_panels_per_teacher_set_with_ce_and_teachers_beside_the_methods(tmp_path):
    from harness.analysis import figures
    res = results.load(make_study_results(tmp_path / "study", seeds=(0, 1)))
    for r in res.groups[("student", "resnet20", "mate", MULTI)]:  # 2 seeds far apart: t-interval [-117, 157]
        r["test_top1"] = 10.0 if r["seed"] == 0 else 30.0
    fig = figures.fig_accuracy(res, _plt())
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [f"teachers: {SINGLE}", f"teachers: {MULTI}"]  # no "none" panel
    ticks = [[t.get_text() for t in ax.get_xticklabels()] for ax in axes]
    assert ticks == [["kd", "kd+fa", "cakd"], ["kd_avg3", "mate", "mate_uniform"]]  # no empty slots
    for ax, teachers in zip(axes, (SINGLE, MULTI)):
        labels = ax.get_legend_handles_labels()[1]
        assert any(label.startswith("ce (no teachers)") for label in labels)
        assert [label for label in labels if label.startswith("teacher ")] == \
               [f"teacher {t}" for t in teachers.split("+")]
        low, high = ax.get_ylim()
        assert 0 <= low < high <= 100
        for line in ax.get_lines():  # the error bars too are cut at what an accuracy can be
            assert all(0 <= y <= 100 for y in line.get_ydata())


def test_val_curves_show_ce_teachers_and_the_seed_spread_in_every_panel(tmp_path):
    from matplotlib.collections import PolyCollection

    from harness.analysis import figures
    res = results.load(make_study_results(tmp_path / "study"))
    fig = figures.fig_val_curves(res, _plt())
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [f"teachers: {SINGLE}", f"teachers: {MULTI}"]
    for ax, methods in zip(axes, (["kd", "kd+fa", "cakd"], ["kd_avg3", "mate", "mate_uniform"])):
        labels = ax.get_legend_handles_labels()[1]
        assert labels[:4] == ["ce (no teachers)"] + methods
        assert any(label.startswith("teacher resnet56") for label in labels)
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 4  # the seeds' min–max of ce and of each method
        low, high = ax.get_ylim()
        assert 0 <= low < high <= 100


def test_reliability_ece_is_the_tables_ece(tmp_path):
    import re

    from harness.analysis import figures
    res = results.load(make_study_results(tmp_path / "study"))  # test_ece 1, 2, 3 by seed; bins pool to another
    fig = figures.fig_reliability(res, _plt())
    shown = {}
    for label in fig.axes[0].get_legend_handles_labels()[1][1:]:
        method = label.split(" ←")[0]
        shown[method] = float(re.search(r"ECE ([\d.]+) %", label).group(1))
    table = {r["method"]: r["ece_mean"] for s in results.sections(res, "student")
             for r in results.summary_rows(res, s.keys)}
    assert set(shown) == set(table) and all(shown[m] == pytest.approx(table[m], abs=0.005) for m in shown)
    assert table["kd"] == pytest.approx(2.0)


def test_cifar10c_figures_give_images_clean_top1_and_mark_corruptions_outside_the_mean(tmp_path):
    from harness.analysis import figures
    plt = _plt()
    res = results.load(make_study_results(tmp_path / "study"))
    heatmap, severity = figures.fig_c10c_heatmap(res, plt), figures.fig_c10c_severity(res, plt)
    clean = sum(r["test_top1"] + 0.3 for r in res.runs if r["stage"] == "student") / 21
    for fig in (heatmap, severity):
        assert any(f"1,000 test images per corruption × severity; clean on same images: {clean:.2f} %" in t
                   for t in _texts(fig))
    ticks = [t.get_text() for t in heatmap.axes[0].get_xticklabels()]
    assert ticks[:2] == ["clean, same images", "headline mean"]
    assert [t for t in ticks if t.endswith(" *")] == [c.replace("_", " ") + " *" for c in EXTRA]
    assert len(ticks) == 2 + len(STANDARD) + len(EXTRA)
    assert "clean\n(same images)" in [t.get_text() for t in severity.axes[0].get_xticklabels()]


def test_cifar10c_without_clean_columns_says_n_a(tmp_path, capsys):
    from harness.analysis import figures
    root = make_study_results(tmp_path / "old", c10c_columns=False)
    res = results.load(root)
    (kd,) = [r for r in results.summary_rows(res, results.sections(res, "student")[0].keys) if r["method"] == "kd"]
    assert kd["c10c_mean"] == pytest.approx(kd["top1_mean"] - 18)  # the 15 standard ones only, as the headline
    for fig in (figures.fig_c10c_heatmap(res, _plt()), figures.fig_c10c_severity(res, _plt())):
        assert any("1,000 test images per corruption × severity; clean on same images: n/a" in t for t in _texts(fig))
    assert report.main([str(root), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | kd | resnet56 | 3 | 87.50 ± 0.46 |" in out and " | 69.50 | n/a | " in out
    md = (root / "report" / "report.md").read_text()
    assert "1,000 test images per corruption × severity" in md and "speckle_noise" in md


def test_p_values_are_holm_adjusted_over_each_table(tmp_path, capsys):
    from harness.analysis import stats
    root = make_study_results(tmp_path / "study")
    res = results.load(root)
    single = results.sections(res, "student")[0]
    rows = results.summary_rows(res, single.keys)
    raw = [r.get(f"d_{ref}_p", math.nan) for r in rows for ref in ("ce", "base")]
    adjusted = [r.get(f"d_{ref}_p_holm", math.nan) for r in rows for ref in ("ce", "base")]
    assert sum(not math.isnan(p) for p in raw) == 5  # kd, kd+fa, cakd vs ce; kd+fa, cakd vs kd
    assert adjusted == pytest.approx(stats.holm(raw), nan_ok=True) and adjusted != pytest.approx(raw, nan_ok=True)
    assert report.main([str(root), "--format", "md", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "p vs ce (Holm)" in out and "Holm-adjusted over the 5 comparisons of this table" in out


def test_teachers_by_grid_name_and_comparisons_within_each_teacher_set(tmp_path, capsys):
    import pyarrow.parquet as pq
    root = make_study_results(tmp_path / "study")
    res = results.load(root)
    (teachers,) = results.sections(res, "teacher")
    assert [k[3] for k in teachers.keys] == ["resnet56", "resnet32", "resnet20"]
    single, multi = results.sections(res, "student")
    assert (single.teachers, multi.teachers) == (SINGLE, MULTI)
    assert [k[2] for k in single.keys] == ["ce", "kd", "kd+fa", "cakd"]  # ce leads every teacher set's table
    assert [k[2] for k in multi.keys] == ["ce", "kd_avg3", "mate", "mate_uniform"]
    by = {r["method"]: r for r in results.summary_rows(res, single.keys)}
    assert (by["kd+fa"]["d_ce_vs"], by["kd+fa"]["d_base_vs"], by["kd"]["d_base_vs"]) == ("ce", "kd", "")
    assert by["kd"]["d_ce_mean"] == pytest.approx(1.0)  # paired with the teacher-free ce
    assert not any(r.get("d_base_vs") for r in results.summary_rows(res, multi.keys))  # no kd among the three
    res = results.load(root, baselines=("kd", "kd_avg3"))
    by = {r["method"]: r for r in results.summary_rows(res, results.sections(res, "student")[1].keys)}
    assert (by["mate"]["d_base_vs"], by["kd_avg3"]["d_base_vs"]) == ("kd_avg3", "")
    assert report.main([str(root), "--baseline", "kd", "--baseline", "kd_avg3", "--format", "md", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "### study: teachers, test top-1 (%)" in out and "| resnet56 | ce | resnet56 | 1 | 93.00 |" in out
    assert f"### study: students, teachers {MULTI}, test top-1 (%)" in out and "Δ vs kd_avg3 [95% boot.]" in out
    summary = Console(width=300, record=True)
    summary.print(report.summary_table(pq.read_table(root / "runs.parquet")))
    text = summary.export_text()
    assert "resnet32" in text and "mate_uniform" in text


REFERENCE_RESULTS = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "results" / "reference").glob("*/runs.parquet"))


@pytest.mark.parametrize("folder", REFERENCE_RESULTS, ids=[p.name for p in REFERENCE_RESULTS])
def test_the_report_reads_every_committed_reference_result(folder, capsys):
    assert report.main([str(folder), "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "test top-1" in out and "Traceback" not in out


def test_the_cost_says_where_each_jobs_hours_come_from(tmp_path):
    runs = [{**run("c0", "student", "ce", 0, "none", 90.0), "cpu_hours": 1.5},
            {**run("c1", "student", "ce", 1, "none", 91.0), "cpu_hours": 0.5, "gpu_hours": 0.25, "slurm_job_id": "42_1"},
            run("c2", "student", "ce", 2, "none", 92.0)]
    res = results.Results(root=tmp_path, runs=runs, epochs=None, confusion=None, robustness=None)
    assert report.cost(res) == [
        "- total wall time of the jobs: 0.08 h (300 s over 3 jobs)",
        "- CPU-hours: 2.00 (1 job from SLURM accounting, 1 job from their own processes' CPU time)",
        "- GPU-hours: 0.25 (1 job from SLURM accounting)"]
    assert report.cost(results.Results(root=tmp_path, runs=runs[2:], epochs=None, confusion=None, robustness=None))[1] == \
        "- CPU/GPU-hours: not recorded"


def test_the_readme_results_table_quotes_the_committed_study():
    """The README's Results table is the committed study's, number for number (mean ± std of test top-1)."""
    root = Path(__file__).resolve().parents[1]
    section = (root / "README.md").read_text().split("## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w+]+)` \| [^|]+ \| ([\d.]+) ± ([\d.]+) \|", section, flags=re.M)
    quoted = {method: (float(mean), float(sd)) for method, mean, sd in rows}
    runs = [r for r in results.load(root / "results" / "reference" / "study").runs
            if r["stage"] == "student" and r["status"] == "completed"]
    top1 = {}
    for r in runs:
        top1.setdefault(r["method"], []).append(r["test_top1"])
    assert sorted(quoted) == sorted(top1)
    for method, (mean, sd) in quoted.items():
        assert (mean, sd) == (round(st.tmean(top1[method]), 2), round(st.tstd(top1[method]), 2)), method
