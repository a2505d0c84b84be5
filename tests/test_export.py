"""A finished job's weights exported as safetensors and used as an external teacher."""
from __future__ import annotations

import pyarrow.parquet as pq
import torch

from harness.models import checkpoint
from harness.export import main as export
from harness.launch import main as launch
from harness.run.layout import GridPaths, JobPaths, State


def test_export_then_distil_from_the_exported_teacher(write_grid, tmp_path, capsys):
    one_epoch = ["--set", "train.epochs=1", "--set", "grid.seed=[0]"]
    out = tmp_path / "out"
    assert launch([str(write_grid(executor="debug")), "--out", str(out), "--set", "grid.method=['ce']", *one_epoch]) == 0
    (job,) = GridPaths(out / "tiny").jobs.iterdir()
    teacher = tmp_path / "teacher.safetensors"
    assert export([str(job), str(tmp_path / "teacher.pt")]) == 2  # the format is in the name
    assert export([str(job), str(teacher)]) == 0
    assert "arch resnet20" in capsys.readouterr().out

    from safetensors import safe_open

    with safe_open(str(teacher), "pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "resnet20" and meta["job_key"] == job.name
    ours = checkpoint.read_state(JobPaths(job).model)
    shipped = checkpoint.read_state(teacher)
    assert ours.keys() == shipped.keys() and all(torch.equal(ours[k], shipped[k]) for k in ours)

    text = write_grid(executor="debug").read_text().replace(
        "[teachers.small]\narch = \"resnet20\"\nseed = 7\nepochs = 3",
        f"[teachers.small]\narch = \"resnet20\"\ncheckpoint = \"{teacher}\"")
    grid = tmp_path / "external.toml"
    grid.write_text(text)
    out2 = tmp_path / "out2"
    assert launch([str(grid), "--out", str(out2), "--set", "grid.method=['kd']", *one_epoch]) == 0
    (run,) = pq.read_table(GridPaths(out2 / "tiny").runs_table).to_pylist()
    assert run["status"] == State.COMPLETED and run["stage"] == "student" and run["agreement_ensemble"] is not None


def test_a_folder_that_is_no_job_is_refused_cleanly(tmp_path, capsys):
    from harness.export import main

    out = tmp_path / "teacher.safetensors"
    assert main([str(tmp_path), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {tmp_path}: no job.json: expected a completed job's folder" in err and "Errno" not in err
    assert not out.exists()
