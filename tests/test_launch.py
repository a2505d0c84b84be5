"""End to end: real tiny grids through the local and debug executors, Parquet read back, relaunch,
failure, and resume after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from harness.launch import main as launch
from harness.config.precision import cpu_has_native_bf16
from harness.run.layout import GridPaths, JobPaths, State

ROOT = Path(__file__).resolve().parents[1]


def tables(out: Path, name: str = "tiny"):
    grid = GridPaths(out / name)
    return pq.read_table(grid.runs_table).to_pylist(), pq.read_table(grid.epochs_table).to_pylist()


NATIVE = "bf16" if cpu_has_native_bf16() else "no"  # what the default "auto" resolves to on this CPU


def test_local_grid_end_to_end_then_relaunch_skips(write_grid, tmp_path, capsys):
    grid, out = write_grid(), tmp_path / "out"
    assert launch([str(grid), "--out", str(out)]) == 0
    runs, epochs = tables(out)
    assert len(runs) == 5 and {r["status"] for r in runs} == {State.COMPLETED}
    teacher = next(r for r in runs if r["stage"] == "teacher")
    assert teacher["method"] == "ce" and teacher["seed"] == 7
    students = [r for r in runs if r["stage"] == "student"]
    assert sorted((r["method"], r["seed"], r["teacher_set"]) for r in students) == [
        ("ce", 0, "none"), ("ce", 1, "none"), ("kd", 0, "small"), ("kd", 1, "small")]
    for r in runs:  # the fake classes are easy: a plain model beats chance (10 %) by far in 3 epochs
        if r["method"] == "ce":
            assert r["test_top1"] > 50 and r["best_val_top1"] > 50, r
        rows = sorted((e for e in epochs if e["job_key"] == r["job_key"]), key=lambda e: e["epoch"])
        assert rows[-1]["train_loss"] < rows[0]["train_loss"], rows
        assert r["test_top1_at_best_val"] is not None and r["epochs"] == 3 and r["attempts"] == 1
        assert r["train_images_per_s"] > 0 and r["device"] == "cpu" and r["mixed_precision"] == NATIVE
        assert json.loads(r["config_json"])["seed"] == r["seed"]
    assert len(epochs) == 15 and {e["epoch"] for e in epochs} == {1, 2, 3}
    kd_rows = [e for e in epochs if e["job_key"] in {r["job_key"] for r in students if r["method"] == "kd"}]
    assert all(e["loss_kd"] > 0 and e["loss_ce"] > 0 for e in kd_rows)
    assert all(e["loss_kd"] is None for e in epochs if e not in kd_rows)
    job = GridPaths(out / "tiny").job(teacher["job_key"])
    assert {job.model, job.checkpoint, job.log, job.result, job.spec} <= set(job.folder.iterdir())
    assert "epoch 3/3" in job.log.read_text()
    assert "test top-1" in capsys.readouterr().out

    assert launch([str(grid), "--out", str(out)]) == 0
    assert "5 completed (skipped)" in capsys.readouterr().out.replace("\n", " ")
    assert {r["attempts"] for r in tables(out)[0]} == {1}


def test_debug_executor_runs_in_process(write_grid, tmp_path):
    out = tmp_path / "out"
    grid = write_grid(executor="debug")
    assert launch([str(grid), "--out", str(out), "--set", "grid.method=['kd']", "--set", "grid.seed=[3]"]) == 0
    runs, epochs = tables(out)
    assert [(r["stage"], r["executor"], r["status"]) for r in runs] == [
        ("teacher", "debug", State.COMPLETED), ("student", "debug", State.COMPLETED)]
    assert len(epochs) == 6


def test_debug_executor_uses_tiny_data_unless_the_grid_says(write_grid, tmp_path, capsys):
    grid = write_grid(executor="debug").read_text().replace("limit_train = 300\n", "")
    path = tmp_path / "nolimit.toml"
    path.write_text(grid)
    from harness.launch import load_plan, parse_args

    said = []
    plan = load_plan(parse_args([str(path)]), said.append)
    assert {j.config["data"]["limit_train"] for j in plan.jobs} == {512}
    assert {j.config["data"]["limit_test"] for j in plan.jobs} == {100}
    assert said == ["debug executor: data.limit_train = 512 (set data.limit_train to choose)"]  # never silently


def test_failed_teacher_is_recorded_and_the_grid_goes_on(write_grid, tmp_path, capsys):
    out = tmp_path / "out"
    diverges = ["--set", "teachers.small.schedule='multistep'", "--set", "teachers.small.milestones=[1]",
                "--set", "teachers.small.gamma=1e30"]  # a failure only the job can find: its loss becomes NaN
    code = launch([str(write_grid()), "--out", str(out), *diverges])
    assert code == 1
    runs, _ = tables(out)
    status = {(r["stage"], r["method"], r["seed"]): r["status"] for r in runs}
    assert status == {("teacher", "ce", 7): State.FAILED, ("student", "ce", 0): State.COMPLETED,
                      ("student", "ce", 1): State.COMPLETED, ("student", "kd", 0): State.PENDING,
                      ("student", "kd", 1): State.PENDING}
    teacher = next(r for r in runs if r["stage"] == "teacher")
    assert "became non-finite" in teacher["error"]
    assert "skipped: teacher" in capsys.readouterr().out


def test_data_cache_missing_is_a_clear_error(write_grid, tmp_path, capsys):
    code = launch([str(write_grid()), "--out", str(tmp_path / "o"), "--set", f"data.root='{tmp_path}/none'"])
    assert code == 2
    assert "harness.data prepare" in capsys.readouterr().out


def test_killed_job_resumes_and_matches_an_uninterrupted_run(write_grid, tmp_path):
    grid = write_grid()
    args = ["--set", "grid.method=['ce']", "--set", "grid.seed=[0]", "--set", "train.epochs=4",
            "--set", "data.limit_train=500"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "harness.launch", str(grid), "--out", str(killed), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    jobs = GridPaths(killed / "tiny").jobs
    deadline = time.time() + 120
    while time.time() < deadline and not any(JobPaths(f).epochs.exists() for f in jobs.glob("*")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its job, mid-epoch 2
    proc.wait()
    (job,) = map(JobPaths, jobs.iterdir())
    assert not job.result.exists(), "the job finished before it could be killed"
    assert job.checkpoint.exists()

    assert launch([str(grid), "--out", str(killed), *args]) == 0
    assert "resuming after epoch" in job.log.read_text()
    clean = tmp_path / "clean"
    assert launch([str(grid), "--out", str(clean), *args]) == 0
    (run_k,), epochs_k = tables(killed)
    (run_c,), epochs_c = tables(clean)
    assert run_k["attempts"] == 2 and run_c["attempts"] == 1
    assert [e["epoch"] for e in epochs_k] == [1, 2, 3, 4]
    assert run_k["job_key"] == run_c["job_key"]
    for column in ("test_top1", "best_val_top1", "test_top1_at_best_val"):
        assert run_k[column] == run_c[column], column
    for e_k, e_c in zip(epochs_k, epochs_c):
        assert (e_k["train_loss"], e_k["val_top1"]) == (e_c["train_loss"], e_c["val_top1"])


def test_a_job_killed_after_its_last_checkpoint_ends_on_its_last_weights(write_grid, tmp_path):
    """Killed during the end-of-job evaluation: the relaunch resumes after the last epoch and must
    report and save the last epoch's weights, not the best-val ones it loads on the way."""
    import torch

    from harness.models import checkpoint

    args = ["--set", "grid.method=['ce']", "--set", "grid.seed=[0]", "--set", "train.epochs=2"]
    out = tmp_path / "out"
    assert launch([str(write_grid(executor="debug")), "--out", str(out), *args]) == 0
    (job,) = map(JobPaths, GridPaths(out / "tiny").jobs.iterdir())
    (first,), _ = tables(out)
    saved = checkpoint.load(job.model, torch.device("cpu"))
    ckpt = checkpoint.load(job.checkpoint, torch.device("cpu"))
    assert ckpt["epoch"] == 2
    # as if an earlier epoch had been the best: other weights under best_weights
    ckpt["best_weights"] = {k: v * 0.5 if v.is_floating_point() else v for k, v in ckpt["best_weights"].items()}
    ckpt["best_val"], ckpt["best_epoch"] = 101.0, 1
    checkpoint.save(job.checkpoint, ckpt)
    for path in (job.result, job.model):  # killed before these were written
        path.unlink()
    assert launch([str(write_grid(executor="debug")), "--out", str(out), *args]) == 0
    (again,), _ = tables(out)
    assert again["test_top1"] == first["test_top1"] and again["epochs"] == 2
    resaved = checkpoint.load(job.model, torch.device("cpu"))
    key = next(k for k, v in saved["state_dict"].items() if v.is_floating_point())
    assert torch.equal(resaved["state_dict"][key], saved["state_dict"][key])


def test_every_cakd_table_row_runs_end_to_end(write_grid, tmp_path):
    """The CAKD write-up's rows (ce, kd, kd+fa, kd+at, kd+fa+at) and cakd with each mask."""
    methods = ["ce", "kd", "kd+fa", "kd+at", "kd+fa+at", "cakd", "cakd_gradient", "cakd_topk"]
    text = write_grid(executor="debug").read_text() + (
        '[methods.cakd_gradient]\nterms = ["kd", "fa", "at"]\nmask = "gradient"\nsoft = true\n'
        '[methods.cakd_topk]\nterms = ["kd", "fa", "at"]\nmask = "topk"\n')
    grid = tmp_path / "rows.toml"
    grid.write_text(text)
    out = tmp_path / "out"
    assert launch([str(grid), "--out", str(out), "--set", f"grid.method={methods}", "--set", "grid.seed=[0]",
                   "--set", "train.epochs=1"]) == 0
    runs, epochs = tables(out)
    students = {r["method"]: r for r in runs if r["stage"] == "student"}
    assert sorted(students) == sorted(methods) and all(r["status"] == State.COMPLETED for r in runs)
    by_key = {e["job_key"]: e for e in epochs}
    for method, run in students.items():
        row = by_key[run["job_key"]]
        assert (row["loss_fa"] is not None) == ("fa" in method or "cakd" in method), method
        assert (row["loss_at"] is not None) == ("at" in method or "cakd" in method), method
        assert (row["mask_kept_fraction"] is not None) == method.startswith("cakd"), method
    assert by_key[students["cakd"]["job_key"]]["mask_kept_fraction"] == 0.5
    assert 0 < by_key[students["cakd_gradient"]["job_key"]]["mask_kept_fraction"] <= 1


def test_two_launches_of_one_grid_do_not_both_run(write_grid, tmp_path, capsys):
    from harness.launch import grid_lock

    out = tmp_path / "out"
    with grid_lock(out / "tiny"):
        assert launch([str(write_grid()), "--out", str(out)]) == 2
    assert "another launch of this grid" in capsys.readouterr().out
    assert not [f for f in GridPaths(out / "tiny").jobs.glob("*") if JobPaths(f).result.exists()]


def test_a_loss_that_becomes_non_finite_fails_the_job_and_keeps_the_last_good_checkpoint(write_grid, tmp_path):
    import torch

    from harness.models import checkpoint

    out = tmp_path / "out"
    diverge = ["--set", "grid.method=['ce']", "--set", "grid.seed=[0]", "--set", "train.epochs=2",
               "--set", "train.schedule='multistep'", "--set", "train.milestones=[1]", "--set", "train.gamma=1e30"]
    assert launch([str(write_grid(executor="debug")), "--out", str(out), *diverge]) == 1
    (run,), epochs = tables(out)
    assert run["status"] == State.FAILED and [e["epoch"] for e in epochs] == [1]
    assert "loss term 'ce' became non-finite at epoch 2, step" in run["error"]
    (job,) = map(JobPaths, GridPaths(out / "tiny").jobs.iterdir())
    assert checkpoint.load(job.checkpoint, torch.device("cpu"))["epoch"] == 1
    assert not job.model.exists()
