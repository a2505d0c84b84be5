"""Experiment tracking ([tracking] in a grid file) against the real backends, offline: TensorBoard's
event files read back with its own reader, MLflow's local SQLite store with MlflowClient, W&B's
offline run folders. Tiny grids on the generated CIFAR cache (tests/conftest.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from harness.config import grid as gridlib
from harness.launch import main as launch
from harness.run import tracking
from tests.conftest import TINY_GRID

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.limit_train=100", "--set", "data.limit_test=100", "--set", "train.batch_size=32",
        "--set", "train.epochs=2", "--set", "grid.method=['ce']"]
SKIP = {"schema_version", "job_key", "epoch"}  # epochs.parquet columns that are no logged value


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    """W&B offline, everything it writes in a temporary folder, no login; inherited by job processes."""
    folder = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(name, str(folder))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.delenv("WANDB_API_KEY", raising=False)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS"):
            mp.delenv(name, raising=False)
        yield folder / "wandb"


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store made once (its tables take seconds to create); each grid gets a copy."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def grid_file(folder: Path, cifar_root: Path, backends: list[str], executor: str = "debug", **extra: str) -> Path:
    settings = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    path = folder / "grid.toml"
    path.write_text(TINY_GRID.format(root=cifar_root, executor=executor)
                    + f"[tracking]\nbackends = {json.dumps(backends)}\n{settings}")
    return path


def with_store(out: Path, template: Path) -> None:
    (out / "tiny").mkdir(parents=True, exist_ok=True)
    shutil.copy(template, out / "tiny" / tracking.MLFLOW_DB)


def tables(out: Path) -> tuple[list[dict], list[dict]]:
    return (pq.read_table(out / "tiny" / "runs.parquet").to_pylist(),
            pq.read_table(out / "tiny" / "epochs.parquet").to_pylist())


def spec_of(out: Path, key: str) -> dict:
    return json.loads((out / "tiny" / "jobs" / key / "job.json").read_text())


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder as TensorBoard's own reader sees it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def tensorboard_dir(out: Path, spec: dict) -> Path:
    return out / "tiny" / tracking.TENSORBOARD_DIR / f"{tracking.run_name(spec)}_{spec['key']}"


def mlflow_runs(out: Path) -> tuple[object, list]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'tiny' / tracking.MLFLOW_DB}")
    experiment = client.get_experiment_by_name("tiny")
    return client, client.search_runs([experiment.experiment_id])


def history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def wandb_runs(wandb_dir: Path) -> list[str]:
    """The run id of every offline run folder (offline-run-<date>_<time>-<id>), one per attempt."""
    return [p.name.split("-", 3)[3] for p in wandb_dir.glob("offline-run-*")]


def assert_epochs_logged(out: Path, spec: dict, epochs: list[dict]) -> None:
    """TensorBoard holds exactly the job's epoch rows: every column, each epoch once."""
    logged = scalars(tensorboard_dir(out, spec))
    rows = [e for e in epochs if e["job_key"] == spec["key"]]
    assert rows
    for column in {c for row in rows for c, v in row.items() if v is not None} - SKIP:
        points = logged[tracking.EPOCH + column]
        assert [s for s, _ in points] == [r["epoch"] for r in rows], column  # no step twice, none missing
        assert [v for _, v in points] == pytest.approx([r[column] for r in rows], rel=1e-6), column


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory, cifar_root, wandb_env, mlflow_template):
    """One debug-executor grid, two jobs (ce, seeds 0 and 1), all three backends."""
    folder = tmp_path_factory.mktemp("two")
    out = folder / "out"
    with_store(out, mlflow_template)
    grid = grid_file(folder, cifar_root, ["tensorboard", "mlflow", "wandb"])
    assert launch([str(grid), "--out", str(out), *TINY]) == 0
    runs, epochs = tables(out)
    return out, runs, epochs, wandb_env


def test_tensorboard_per_epoch_scalars_equal_epochs_parquet(two_jobs):
    from tensorboard.plugins.hparams import metadata

    out, runs, epochs, _ = two_jobs
    assert len(runs) == 2
    assert len(list((out / "tiny" / tracking.TENSORBOARD_DIR).iterdir())) == 2  # one run folder per job
    for run in runs:
        spec = spec_of(out, run["job_key"])
        assert_epochs_logged(out, spec, epochs)
        logged = scalars(tensorboard_dir(out, spec))
        assert logged["final/test_top1"] == [(2, pytest.approx(run["test_top1"]))]
        assert logged["final/test_ece"] == [(2, pytest.approx(run["test_ece"]))]
        # the HParams tab: the session's hparams (method, seed, recipe) beside those scalars
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        reader = EventAccumulator(str(tensorboard_dir(out, spec)))
        reader.Reload()
        content = reader.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["method"].string_value == "ce"
        assert start.hparams["seed"].number_value == run["seed"]
        assert start.hparams["job_key"].string_value == run["job_key"]
        assert start.hparams["train.epochs"].number_value == 2
        assert metadata.SESSION_END_INFO_TAG in content


def test_mlflow_one_run_per_job_with_params_tags_and_history(two_jobs):
    out, runs, epochs, _ = two_jobs
    client, found = mlflow_runs(out)
    assert sorted(r.data.tags["job_key"] for r in found) == sorted(r["job_key"] for r in runs)
    for mlrun in found:
        run = next(r for r in runs if r["job_key"] == mlrun.data.tags["job_key"])
        assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == f"ce_s{run['seed']}"
        assert {k: mlrun.data.tags[k] for k in ("grid", "stage", "method", "seed", "teacher_set")} == {
            "grid": "tiny", "stage": "student", "method": "ce", "seed": str(run["seed"]), "teacher_set": "none"}
        params = mlrun.data.params
        assert (params["method"], params["seed"], params["train.epochs"], params["data.limit_train"]) == (
            "ce", str(run["seed"]), "2", "100")
        rows = [e for e in epochs if e["job_key"] == run["job_key"]]
        for column in ("train_loss", "loss_ce", "lr", "train_top1", "val_top1", "images_per_s"):
            assert history(client, mlrun.info.run_id, tracking.EPOCH + column) == [
                (r["epoch"], pytest.approx(r[column])) for r in rows], column
        assert history(client, mlrun.info.run_id, "final/test_top1") == [(2, pytest.approx(run["test_top1"]))]


def test_wandb_offline_run_folder_per_job_with_the_job_derived_id(two_jobs):
    out, runs, _, wandb_dir = two_jobs
    ids = {tracking.wandb_id(spec_of(out, r["job_key"])) for r in runs}
    assert len(ids) == 2 and all(any(i.startswith(r["job_key"] + "-") for r in runs) for i in ids)
    assert sorted(wandb_runs(wandb_dir)) == sorted(ids)
    for run_id in ids:
        (folder,) = wandb_dir.glob(f"offline-run-*-{run_id}")
        assert (folder / f"run-{run_id}.wandb").stat().st_size > 0


def test_a_job_killed_mid_epoch_resumes_its_runs_without_a_step_twice(tmp_path, cifar_root, wandb_env,
                                                                       mlflow_template):
    """Killed (SIGKILL, launcher and job) after its first epoch, relaunched: the same TensorBoard
    run folder, MLflow run and W&B run id, each epoch once."""
    out = tmp_path / "out"
    with_store(out, mlflow_template)
    grid = grid_file(tmp_path, cifar_root, ["tensorboard", "mlflow", "wandb"], executor="local")
    args = [*TINY, "--set", "grid.seed=[0]", "--set", "train.epochs=3"]
    before = set(wandb_runs(wandb_env))
    proc = subprocess.Popen([sys.executable, "-m", "harness.launch", str(grid), "--out", str(out), *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    jobs = out / "tiny" / "jobs"
    deadline = time.time() + 240
    while time.time() < deadline and not list(jobs.glob("*/epochs.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its job, in epoch 2
    proc.wait()
    (job,) = jobs.iterdir()
    assert not (job / "result.json").exists(), "the job finished before it could be killed"

    assert launch([str(grid), "--out", str(out), *args]) == 0
    assert "resuming after epoch" in (job / "log.txt").read_text()
    (run,), epochs = tables(out)
    assert run["attempts"] == 2 and [e["epoch"] for e in epochs] == [1, 2, 3]
    spec = spec_of(out, run["job_key"])
    assert_epochs_logged(out, spec, epochs)
    client, (mlrun,) = mlflow_runs(out)  # one run, resumed
    assert mlrun.data.tags["job_key"] == run["job_key"] and mlrun.info.status == "FINISHED"
    assert history(client, mlrun.info.run_id, "epoch/val_top1") == [(e["epoch"], pytest.approx(e["val_top1"])) for e in epochs]
    new = [i for i in wandb_runs(wandb_env) if i not in before]
    assert new and set(new) == {tracking.wandb_id(spec)}  # one folder per attempt, all of the same run


def test_a_kill_between_checkpoint_and_log_is_caught_up_once(tmp_path, cifar_root, wandb_env, mlflow_template):
    """The checkpoint holds epoch 2 but the trackers' record says 1 (killed before it was logged),
    and the job was killed before its result: the relaunch gives TensorBoard epoch 2 and the final
    metrics (dropping what the kill may have left after epoch 1), and MLflow, which has them, nothing twice."""
    out = tmp_path / "out"
    with_store(out, mlflow_template)
    grid = grid_file(tmp_path, cifar_root, ["tensorboard", "mlflow"])
    args = [*TINY, "--set", "grid.seed=[0]", "--set", "train.epochs=1"]
    assert launch([str(grid), "--out", str(out), *args]) == 0
    (job,) = (out / "tiny" / "jobs").iterdir()
    record = job / tracking.STATE_FILE
    assert json.loads(record.read_text()) == {"tensorboard": {"epoch": 1, "final": True},
                                             "mlflow": {"epoch": 1, "final": True}}
    record.write_text(json.dumps({"tensorboard": {"epoch": 0, "final": False}, "mlflow": {"epoch": 0, "final": False}}))
    (job / "result.json").unlink()

    assert launch([str(grid), "--out", str(out), *args]) == 0
    (run,), epochs = tables(out)
    spec = spec_of(out, run["job_key"])
    assert_epochs_logged(out, spec, epochs)
    assert scalars(tensorboard_dir(out, spec))["final/test_top1"] == [(1, pytest.approx(run["test_top1"]))]
    client, (mlrun,) = mlflow_runs(out)
    assert [s for s, _ in history(client, mlrun.info.run_id, "epoch/val_top1")] == [1]
    assert [s for s, _ in history(client, mlrun.info.run_id, "final/test_top1")] == [1]
    assert "tracking, from epoch 2" in (job / "log.txt").read_text()


def test_a_broken_backend_is_one_warning_and_the_job_completes(tmp_path, cifar_root):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    grid = grid_file(tmp_path, cifar_root, ["mlflow", "tensorboard"],
                     mlflow_uri=f"sqlite:///{blocker}/mlflow.db")  # a store that cannot be made
    out = tmp_path / "out"
    assert launch([str(grid), "--out", str(out), *TINY, "--set", "grid.seed=[0]", "--set", "train.epochs=1"]) == 0
    (run,), epochs = tables(out)
    assert run["status"] == "completed"
    log = (out / "tiny" / "jobs" / run["job_key"] / "log.txt").read_text().splitlines()
    warnings = [line for line in log if "warning: tracking" in line]
    assert len(warnings) == 1 and "mlflow failed" in warnings[0], log
    assert_epochs_logged(out, spec_of(out, run["job_key"]), epochs)  # the other backend unaffected


def test_under_ddp_rank_0_alone_logs(tmp_path, cifar_root, wandb_env, mlflow_template):
    """A two-rank job (gloo on CPU, as tasks_per_job = 2 plans it) under torchrun: one TensorBoard
    event file, one MLflow run, each epoch once, one W&B run (accelerate's W&B tracker alone would
    start one on every rank)."""
    from harness.analysis import collect
    from tests.conftest import planned_jobs

    out = tmp_path / "out"
    with_store(out, mlflow_template)
    grid = grid_file(tmp_path, cifar_root, ["tensorboard", "mlflow", "wandb"], executor="slurm")
    before = set(wandb_runs(wandb_env))
    (job,) = planned_jobs(grid, out, *TINY, "--set", "grid.seed=[0]", "--set", "cluster.tasks_per_job=2")
    folder = job.folder
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "harness.job", str(folder)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collect.collect(out / "tiny")
    (run,), epochs = tables(out)
    assert run["status"] == "completed" and run["world_size"] == 2
    spec = spec_of(out, folder.name)
    assert len(list(tensorboard_dir(out, spec).glob("events.out.tfevents.*"))) == 1
    assert_epochs_logged(out, spec, epochs)
    client, (mlrun,) = mlflow_runs(out)
    assert [s for s, _ in history(client, mlrun.info.run_id, "epoch/val_top1")] == [1, 2]
    assert [i for i in wandb_runs(wandb_env) if i not in before] == [tracking.wandb_id(spec)]
    assert "warning" not in (folder / "log.txt").read_text()


@pytest.mark.parametrize("backend", ["tensorboard", "wandb", "mlflow"])
def test_a_backend_whose_package_is_missing_is_a_plan_time_error(tmp_path, cifar_root, monkeypatch, capsys, backend):
    module = gridlib.schema.TRACKERS[backend][0]
    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` fails as if it were not installed
    out = tmp_path / "out"
    assert launch([str(grid_file(tmp_path, cifar_root, [backend])), "--out", str(out)]) == 2
    said = capsys.readouterr().out.replace("\n", "")
    assert "tracking.backends[0]" in said and f"pip install 'kd-harness[{backend}]'" in said
    assert not (out / "tiny" / "jobs").exists()  # nothing run


def test_tracking_is_no_part_of_the_job_key_and_is_checked(tmp_path, cifar_root):
    plain = tmp_path / "plain.toml"
    plain.write_text(TINY_GRID.format(root=cifar_root, executor="local"))
    tracked = grid_file(tmp_path, cifar_root, ["tensorboard", "wandb", "mlflow"], project="kd",
                        mlflow_uri="sqlite:///rel/mlflow.db", wandb_mode="offline")
    keys = [[j.key for j in gridlib.plan(gridlib.load(g)).jobs] for g in (plain, tracked)]
    assert keys[0] == keys[1]
    job = gridlib.plan(gridlib.load(tracked)).jobs[0]
    assert job.runtime["tracking"]["project"] == "kd"
    assert job.runtime["tracking"]["mlflow_uri"] == f"sqlite:///{Path('rel').resolve()}/mlflow.db"  # from launch's folder
    assert "tracking" not in gridlib.plan(gridlib.load(plain)).jobs[0].runtime
    with pytest.raises(gridlib.GridError, match=r"tracking.backends\[0\]: unknown backend 'tensorbord'; did you mean"):
        gridlib.load(grid_file(tmp_path, cifar_root, ["tensorbord"]))
    with pytest.raises(gridlib.GridError, match="tracking.wandb_mode"):
        gridlib.load(grid_file(tmp_path, cifar_root, ["wandb"], wandb_mode="sometimes"))
