"""`python -m harness.report` on synthetic results folders: tables with the expected numbers,
report.md, the PNG figures, partial grids, formats, --compare."""
import json
import math

import pyarrow as pa
import pytest
from PIL import Image
from scipy import stats as st

from harness import collect, report
from harness.collect import write_parquet

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


def test_tables_hold_the_statistics(tmp_path):
    res = report.load(make_results(tmp_path / "syn"))
    (kd,) = [r for r in report.summary_rows(res, "student") if r["method"] == "kd"]
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
    sizes = {"accuracy.png": (1300, 600), "val_curves.png": (1300, 600), "reliability.png": (1300, 640),
             "cifar10c_severity.png": (1300, 560), "confusion.png": (975, 884)}
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


def test_missing_runs_table_is_a_clear_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "harness.collect" in capsys.readouterr().err
