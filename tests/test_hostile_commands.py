"""Bad input to every command but the launcher (job, collect, status, report, explain, export, data,
bench): damaged files in a results folder, wrong folders, bad arguments. Each case exits 2 with one
line naming the file or argument and what was expected, no traceback, and leaves the folder as it was."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from harness.analysis.collect import main as collect
from harness.analysis.report import main as report
from harness.analysis.status import main as status
from harness.bench.__main__ import parse as bench_args
from harness.data.__main__ import main as data
from harness.explain import main as explain
from harness.export import main as export
from harness.launch import main as launch
from harness.run.job import main as job
from tests.conftest import TINY_GRID


@pytest.fixture(scope="module")
def finished(cifar_root, tmp_path_factory) -> Path:
    """A tiny grid, trained: one teacher and one kd student, one epoch each."""
    tmp = tmp_path_factory.mktemp("finished")
    grid = tmp / "g.toml"
    grid.write_text(TINY_GRID.format(root=cifar_root, executor="debug").replace("epochs = 3", "epochs = 1"))
    assert launch([str(grid), "--out", str(tmp / "out"), "--set", "grid.method=['kd']", "--set", "grid.seed=[0]"]) == 0
    return tmp / "out" / "tiny"


def student(root: Path) -> Path:
    """The kd student's job folder (read before any damage)."""
    import json

    return next(p for p in (root / "jobs").iterdir() if json.loads((p / "job.json").read_text())["stage"] == "student")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def pickled_code(path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    torch.save({"state_dict": Payload()}, path)


# (id, the damage done to a copy of the finished grid, the command on it, what the one line must say)
CASES = [
    ("job-spec-not-json", lambda g, s: (s / "job.json").write_text("{bad"),
     lambda g, s: job([str(s)]), "job.json: not a JSON file"),
    ("job-spec-a-list", lambda g, s: (s / "job.json").write_text("[1, 2]"),
     lambda g, s: job([str(s)]), "job.json: expected a JSON object with key, stage"),
    ("job-not-a-folder", lambda g, s: None, lambda g, s: job([str(g / "plan.json")]), "no job.json in"),
    ("explain-spec-binary", lambda g, s: (s / "job.json").write_bytes(b"\xff\xfe"),
     lambda g, s: explain([str(s)]), "job.json: not a JSON file"),
    ("explain-model-truncated", lambda g, s: truncate(s / "model.pt"),
     lambda g, s: explain([str(s)]), "model.pt: not a weights file"),
    ("explain-checkpoint-truncated", lambda g, s: ((s / "model.pt").unlink(), truncate(s / "checkpoint.pt")),
     lambda g, s: explain([str(s)]), "checkpoint.pt: unreadable"),
    ("export-model-truncated", lambda g, s: truncate(s / "model.pt"),
     lambda g, s: export([str(s), str(g.parent / "w.safetensors")]), "model.pt: not a weights file"),
    ("export-model-pickled-code", lambda g, s: pickled_code(s / "model.pt"),
     lambda g, s: export([str(s), str(g.parent / "w.safetensors")]), "refused: it holds pickled objects"),
    ("export-spec-wrong-shape", lambda g, s: (s / "job.json").write_text('{"key": 1}'),
     lambda g, s: export([str(s), str(g.parent / "w.safetensors")]), "expected a JSON object with key"),
    ("export-out-nowhere", lambda g, s: None,
     lambda g, s: export([str(s), str(g / "plan.json" / "w.safetensors")]), "w.safetensors: cannot write there"),
    ("explain-images-negative", lambda g, s: None, lambda g, s: explain([str(s), "--images", "-3"]),
     "argument --images: '-3': expected a whole number ≥ 1"),
    ("collect-plan-not-json", lambda g, s: (g / "plan.json").write_text("{bad"),
     lambda g, s: collect([str(g)]), "plan.json: not a JSON file"),
    ("status-plan-wrong-shape", lambda g, s: (g / "plan.json").write_text('{"name": "tiny"}'),
     lambda g, s: status([str(g)]), "plan.json: expected a JSON object with name, jobs"),
    ("status-plan-a-folder", lambda g, s: ((g / "plan.json").unlink(), (g / "plan.json").mkdir()),
     lambda g, s: status([str(g)]), "holds no plan.json: is it a grid's results folder"),
    ("report-runs-garbage", lambda g, s: (g / "runs.parquet").write_text("garbage"),
     lambda g, s: report([str(g), "--no-write"]), "runs.parquet: not a Parquet table"),
    ("report-epochs-truncated", lambda g, s: truncate(g / "epochs.parquet"),
     lambda g, s: report([str(g), "--no-write"]), "epochs.parquet: not a Parquet table"),
    ("report-baseline-unknown", lambda g, s: None, lambda g, s: report([str(g), "--baseline", "kdd", "--no-write"]),
     "--baseline kdd: no method of that name in"),
    ("report-not-a-grid", lambda g, s: None, lambda g, s: report([str(g / "jobs")]), "is not a grid's results folder"),
    ("collect-missing", lambda g, s: None, lambda g, s: collect([str(g / "nope")]), "holds no plan.json"),
]


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("damage, command, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_damaged_results_are_refused_cleanly(finished, tmp_path, capfd, damage, command, fragment):
    grid = tmp_path / "tiny"
    shutil.copytree(finished, grid)
    folder = student(grid)
    damage(grid, folder)
    before = tree(grid)
    try:
        code = command(grid, folder)
    except SystemExit as stop:  # argparse's refusal of an argument
        code = stop.code
    assert code == 2
    captured = capfd.readouterr()
    text = " ".join((captured.out + captured.err).split())
    assert fragment in text and "Traceback" not in text and "pickled code ran" not in text, text
    assert tree(grid) == before  # nothing written, nothing set aside


def test_collect_says_which_job_files_it_could_not_read(finished, tmp_path, capsys):
    import pyarrow.parquet as pq

    grid = tmp_path / "tiny"
    shutil.copytree(finished, grid)
    folder = student(grid)
    (folder / "epochs.json").write_text("{bad")
    assert collect([str(grid)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {folder / 'epochs.json'}: not JSON (edited or damaged): left out of the tables" in err
    epochs = pq.read_table(grid / "epochs.parquet").to_pylist()
    assert {e["job_key"] for e in epochs} == {p.name for p in (grid / "jobs").iterdir()} - {folder.name}


@pytest.mark.parametrize("argv, fragment", [
    (["prepare", "--root", "{file}"], "argument --root: {file}: exists and is not a folder"),
    (["verify", "--root", "{file}"], "argument --root: {file}: exists and is not a folder"),
    (["prepare", "--root", "{file}/below"], "argument --root: {file}/below: cannot write there"),
    (["prepare", "--cifar10-c", "generate", "--cifar10-c-limit", "0"], "'0': expected a whole number ≥ 1"),
    (["prepare", "--source", "dir:{tmp}/nope"], "no such directory"),
    (["prepare", "--dataset", "cifar1000"], "invalid choice: 'cifar1000'"),
], ids=["root-a-file", "verify-root-a-file", "root-below-a-file", "c-limit-zero", "source-missing", "dataset-unknown"])
def test_bad_data_arguments_exit_2(tmp_path, capsys, argv, fragment):
    file = tmp_path / "afile"
    file.write_text("mine")
    argv = [a.format(file=file, tmp=tmp_path) for a in argv]
    if "--root" not in argv:
        argv += ["--root", str(tmp_path / "data")]
    with pytest.raises(SystemExit) as stop:
        data(argv)
    assert stop.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert fragment.format(file=file, tmp=tmp_path) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and file.read_text() == "mine"


@pytest.mark.parametrize("argv, fragment", [
    (["--steps", "-1"], "argument --steps: '-1': expected a whole number ≥ 1"),
    (["--repeats", "0"], "argument --repeats: '0'"),
    (["--batch", "x"], "argument --batch: 'x'"),
    (["nope"], "invalid choice: 'nope'"),
])
def test_bad_bench_arguments_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as stop:
        bench_args(argv)
    assert stop.value.code == 2 and fragment in capsys.readouterr().err
