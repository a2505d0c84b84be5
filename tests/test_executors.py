"""The executor interface as the launcher uses it, with a fake queueing backend: no job trains here."""
from __future__ import annotations

import pytest

from harness import launch as launch_module
from harness.executors import Executor, ExecutorError, Started, make_executor
from harness.executors.local import DebugExecutor, LocalExecutor
from harness.executors.slurm import SlurmError, SlurmExecutor
from harness.run.layout import GridPaths


class FakeQueue(Executor):
    """Queues every job it is given; refuses them all when `refusal` is set."""

    name = "fake"
    refusal: ExecutorError | None = None
    calls: list = []

    def check(self, jobs):
        self.calls.append(("check", len(jobs)))
        if self.refusal:
            raise self.refusal

    def start(self, stages, console):
        total = sum(len(stage) for stage in stages)
        self.calls.append(("start", [[j.stage for j in stage] for stage in stages]))
        note = f"queued {total} jobs somewhere" if total else "nothing to submit"
        return Started(ended=False, queued=total, note=note)


@pytest.fixture
def fake_queue(monkeypatch):
    FakeQueue.calls, FakeQueue.refusal = [], None
    monkeypatch.setattr(launch_module, "make_executor", lambda root, cluster: FakeQueue(root, cluster))
    return FakeQueue


def test_make_executor_picks_the_backend_by_name(tmp_path):
    kinds = {name: type(make_executor(tmp_path, {"executor": name})) for name in ("local", "debug", "slurm")}
    assert kinds == {"local": LocalExecutor, "debug": DebugExecutor, "slurm": SlurmExecutor}
    assert issubclass(SlurmError, ExecutorError)


def test_a_queueing_backend_is_checked_then_started_and_the_launcher_says_what_it_queued(write_grid, tmp_path,
                                                                                        capsys, fake_queue):
    out = tmp_path / "out"
    assert launch_module.main([str(write_grid()), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "queued 5 jobs somewhere" in said and f"watch: python -m harness.status {out / 'tiny'}" in said
    assert fake_queue.calls == [("check", 5), ("start", [["teacher"], ["student"] * 4])]
    assert not GridPaths(out / "tiny").runs_table.exists()  # queued jobs are collected later, not now


def test_a_refusal_is_bad_input_naming_the_grid_key_and_nothing_starts(write_grid, tmp_path, capsys, fake_queue):
    fake_queue.refusal = ExecutorError("cluster.partition", "invalid partition specified: nope")
    grid = write_grid()
    assert launch_module.main([str(grid), "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().out.replace("\n", "")
    assert f"error: grid file {grid}: cluster.partition: invalid partition specified: nope" in said
    assert fake_queue.calls == [("check", 5)]


def test_nothing_to_queue_says_so_and_follows_nothing(write_grid, tmp_path, capsys, fake_queue, monkeypatch):
    monkeypatch.setattr(FakeQueue, "to_run", lambda self, jobs: [])
    assert launch_module.main([str(write_grid()), "--out", str(tmp_path / "out"), "--wait"]) == 0
    said = capsys.readouterr().out
    assert "nothing to submit" in said and "watch:" not in said
