"""Bad input to the launcher, as a careless or a malicious user gives it: each case exits 2 with one
clear message naming the key (or path) and what was expected, no traceback, and leaves --out as it
was (nothing planned, written or started)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.launch import main as launch

SET = "--set"
CASES = [  # (id, extra arguments or a grid-file edit, what the message must contain)
    ("name-up", [SET, "name='../..'"], "name: '../..': expected a folder name"),
    ("name-absolute", [SET, "name='/tmp/x'"], "name: '/tmp/x'"),
    ("name-empty", [SET, "name=''"], "name: ''"),
    ("name-dot", [SET, "name='.'"], "name: '.'"),
    ("name-slash", [SET, "name='a/b'"], "name: 'a/b'"),
    ("name-space", [SET, "name='   '"], "expected a folder name"),
    ("name-control", [SET, 'name="a\\u0007b"'], "name: 'a\\x07b'"),
    ("set-a-table", [SET, "train=3"], "'train' is a table: set one of its keys"),
    ("set-no-equals", [SET, "train.epochs"], "expected KEY=VALUE"),
    ("lr-nan", [SET, "train.lr=nan"], "train.lr: must be a finite number"),
    ("lr-inf", [SET, "train.lr=inf"], "train.lr: must be a finite number"),
    ("lr-zero", [SET, "train.lr=0"], "train.lr: must be > 0"),
    ("momentum-inf", [SET, "train.momentum=inf"], "train.momentum: must be a finite number"),
    ("momentum-above-one", [SET, "train.momentum=1.5"], "train.momentum: must be ≤ 1"),
    ("warmup-nan", [SET, "train.warmup_epochs=nan"], "train.warmup_epochs: must be a finite number"),
    ("smoothing-above-one", [SET, "train.label_smoothing=2.0"], "train.label_smoothing: must be ≤ 1"),
    ("milestone-inf", [SET, "train.milestones=[0.5, inf]"], "train.milestones: must be a finite number"),
    ("seed-huge", [SET, "grid.seed=[9223372036854775807]"], "grid.seed: must be ≤ 2147483647"),
    ("seed-negative", [SET, "grid.seed=[-1]"], "grid.seed: must be ≥ 0"),
    ("seed-twice", [SET, "grid.seed=[1, 1]"], "grid.seed: 1 given more than once"),
    ("method-twice", [SET, "grid.method=['kd', 'kd']"], "grid.method: 'kd' given more than once"),
    ("teacher-seed-huge", [SET, "teachers.small.seed=4294967296"], "teachers.small.seed: must be ≤ 2147483647"),
    ("severity-six", [SET, "eval.severities=[6]"], "eval.severities: must be ≤ 5"),
    ("epochs-zero", [SET, "train.epochs=0"], "train.epochs: must be ≥ 1"),
    ("epochs-string", [SET, "train.epochs='ten'"], "train.epochs: expected int"),
    ("unknown-section", [SET, "trian.epochs=3"], "trian: unknown table; did you mean 'train'"),
    ("bracket-names-kept", [SET, "grid.teacher_set=[['nope']]"], "[teachers.nope] table"),
    ("slurm-bad-timeout", [SET, "cluster.executor='slurm'", SET, "cluster.timeout_min='x'"], "cluster.timeout_min: expected int"),
    ("tasks-not-gpus", [SET, "cluster.executor='slurm'", SET, "cluster.gpus_per_job=1", SET, "cluster.tasks_per_job=2"],
     "cluster.tasks_per_job: 2 tasks on 1 GPUs"),
    ("uneven-ranks", [SET, "cluster.executor='slurm'", SET, "cluster.tasks_per_job=3"], "train.batch_size: 32 does not split"),
    ("fp16-on-cpu", [SET, "train.mixed_precision='fp16'"], "train.mixed_precision: 'fp16' needs a CUDA GPU"),
    ("batch-above-data", [SET, "train.batch_size=301"], "train.batch_size: 301 exceeds the 300 training images"),
    ("milestone-past-end", [SET, "train.schedule='multistep'", SET, "train.milestones=[1, 50]"],
     "train.milestones: 50 is past the last epoch"),
    ("kd-temperature-zero", [SET, "methods.kd.temperature=0"], "methods.kd.temperature: must be > 0"),
    ("kd-alpha-above-one", [SET, "methods.kd.alpha=1.5"], "methods.kd.alpha: must be ≤ 1"),
    ("at-weight-negative", [SET, "grid.method=['at']", SET, "methods.at.weight=-1"], "methods.at.weight: must be ≥ 0"),
    ("mask-cells-zero", [SET, "grid.method=['cakd']", SET, "methods.cakd.cells=0"], "cells: must be ≥ 1"),
    ("teacher-batch-above-data", [SET, "teachers.small.batch_size=100000"], "teachers.small.batch_size: 100000 exceeds"),
]


@pytest.mark.parametrize("args, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_is_refused_cleanly(write_grid, tmp_path, capsys, args, fragment):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert launch([str(write_grid()), "--out", str(out), *args]) == 2
    text = capsys.readouterr().out
    assert fragment in " ".join(text.split()), text
    assert "Traceback" not in text
    assert sorted(p.name for p in out.rglob("*")) == ["keep.txt"]


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(), "is a folder; expected a grid file"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe"), "not a text file"),
    (lambda p: None, "no such file"),
], ids=["folder", "binary", "missing"])
def test_unreadable_grid_file_is_refused_cleanly(tmp_path, capsys, make, fragment):
    path = tmp_path / "grid.toml"
    make(path)
    assert launch([str(path), "--out", str(tmp_path / "out")]) == 2
    text = capsys.readouterr().out
    assert fragment in text and "Traceback" not in text and ": : " not in text
    assert not (tmp_path / "out").exists()


def _pickled_code(path):
    import argparse

    import torch

    torch.save({"state_dict": {}, "namespace": argparse.Namespace(x=1)}, path)


def _other_arch(path):
    import torch

    from harness.models import build_model

    torch.save({"arch": "resnet32", "state_dict": build_model("resnet32").state_dict()}, path)


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.write_text("hello, I am not a checkpoint\n"), "not a weights file"),
    (_pickled_code, "refused: it holds pickled objects besides tensors"),
    (_other_arch, "does not fit arch 'resnet20'"),
    (lambda p: p.write_bytes(b"\x00" * 64), "not a weights file"),
], ids=["text", "pickled-code", "other-arch", "zeros"])
def test_bad_teacher_checkpoint_is_refused_at_plan_time(write_grid, tmp_path, capsys, make, fragment):
    checkpoint = tmp_path / "teacher.pt"
    make(checkpoint)
    grid = write_grid().read_text().replace("seed = 7\nepochs = 3", f'checkpoint = "{checkpoint}"')
    path = tmp_path / "external.toml"
    path.write_text(grid)
    assert launch([str(path), "--out", str(tmp_path / "out")]) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert "teachers.small.checkpoint" in text and fragment in text and "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_cleanly(write_grid, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("mine")
    for extra in ([], ["--dry-run"]):
        assert launch([str(write_grid()), "--out", str(out), *extra]) == 2
        text = " ".join(capsys.readouterr().out.split())
        assert f"--out {out}: {out} is a file; expected a folder" in text and "Traceback" not in text
    assert out.read_text() == "mine"


def test_an_out_that_cannot_be_written_is_refused_cleanly(write_grid, tmp_path, capsys, monkeypatch):
    import harness.launch

    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    if os.access(out, os.W_OK):  # root writes anywhere but on a read-only file system: stand one in
        real = os.access
        monkeypatch.setattr(harness.launch.os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
    assert launch([str(write_grid()), "--out", str(out)]) == 2
    text = " ".join(capsys.readouterr().out.split())
    assert f"--out {out}: cannot write in {out}" in text and "Traceback" not in text
    assert list(out.iterdir()) == []
    assert launch([str(write_grid()), "--out", str(out), "--dry-run"]) == 0  # a dry run writes nothing


def test_a_bad_set_value_is_blamed_on_the_set_not_the_grid_file(write_grid, tmp_path, capsys):
    grid = write_grid()
    assert launch([str(grid), "--out", str(tmp_path / "out"), "--set", "train.epochs=x"]) == 2
    text = capsys.readouterr().out
    assert "--set train.epochs=x: train.epochs: expected int, got 'x'" in text and str(grid) not in text


def test_keys_the_executor_never_reads_are_said(write_grid, tmp_path, capsys):
    assert launch([str(write_grid()), "--out", str(tmp_path / "out"), "--dry-run",
                   "--set", "cluster.partition=gpu", "--set", "cluster.debug_limit_train=64"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "warning: cluster.partition is set but only the slurm executor reads it (executor = 'local')" in text
    assert "warning: cluster.debug_limit_train is set but only the debug executor reads it" in text
