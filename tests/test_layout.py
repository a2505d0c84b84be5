"""The results folder's layout and the job states: the names README.md documents and earlier result
folders hold, so that a relaunch or `collect` still reads what an older harness wrote."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from harness.atomic import atomic_write_json
from harness.run.layout import FOLDER_STATES, GridPaths, JobPaths, State


def test_the_file_names_are_the_documented_ones(tmp_path):
    job = GridPaths(tmp_path).job("abc")
    assert job.folder == tmp_path / "jobs" / "abc" and job.grid == GridPaths(tmp_path)
    names = {"spec": "job.json", "result": "result.json", "log": "log.txt", "epochs": "epochs.json",
             "attempts": "attempts.json", "checkpoint": "checkpoint.pt", "model": "model.pt",
             "confusion": "confusion.json", "robustness": "robustness.json", "slurm": "slurm.json",
             "lock": ".job.lock", "explain": "explain.png"}
    assert {attr: getattr(job, attr).relative_to(job.folder).as_posix() for attr in names} == names
    grid = GridPaths(tmp_path)
    grid_names = {"grid_file": "grid.toml", "plan": "plan.json", "jobs": "jobs", "runs_table": "runs.parquet",
                  "epochs_table": "epochs.parquet", "confusion_table": "confusion.parquet",
                  "robustness_table": "robustness.parquet", "report": "report", "launch_lock": ".launch.lock",
                  "teacher_cache": "teacher_cache", "slurm": "slurm", "slurm_intent": "slurm/submitting.json"}
    assert {attr: getattr(grid, attr).relative_to(tmp_path).as_posix() for attr in grid_names} == grid_names


def test_states_are_the_bare_words_in_json_parquet_and_text():
    assert [s.value for s in State] == ["completed", "failed", "partial", "new", "interrupted", "pending"]
    assert json.dumps({"status": State.COMPLETED}) == '{"status": "completed"}'
    table = pa.Table.from_pylist([{"status": State.PENDING}], schema=pa.schema([("status", pa.string())]))
    assert table.column("status").to_pylist() == ["pending"]
    assert f"{State.NEW} {State.FAILED:>7}" == "new  failed" and str(State.PARTIAL) == "partial"
    assert State.COMPLETED == "completed" and "interrupted" in {State.INTERRUPTED}
    assert [s.shown for s in FOLDER_STATES] == [State.COMPLETED, State.FAILED, State.INTERRUPTED, State.PENDING]


def test_a_folders_state_follows_its_files(tmp_path):
    job = JobPaths(tmp_path)
    assert job.state() is State.NEW and job.read_result() is None and job.read_epochs() == []
    job.checkpoint.write_bytes(b"")
    assert job.state() is State.PARTIAL
    job.result.write_text("{")  # half-written: as good as none
    assert job.state() is State.PARTIAL
    for status in ("failed", "completed"):
        atomic_write_json(job.result, {"status": status})
        assert job.state() is State(status)


def test_reads_of_a_grid_and_its_job(tmp_path: Path):
    grid = GridPaths(tmp_path)
    atomic_write_json(grid.plan, {"name": "g", "jobs": []})
    job = grid.job("k")
    spec = {"key": "k", "stage": "student", "method": "kd", "seed": 0, "config": {}, "teachers": []}
    atomic_write_json(job.spec, spec)
    atomic_write_json(job.slurm, {"task_id": "12_3"})
    atomic_write_json(job.attempts, {"attempts": 2})
    assert grid.read_plan()["name"] == "g" and job.read_spec() == spec
    assert job.read_slurm()["task_id"] == "12_3" and job.read_attempts() == {"attempts": 2}
