"""Experiment tracking: each job is one run in TensorBoard, Weights & Biases and/or MLflow
(`[tracking] backends` of a grid file), the same run across requeues and relaunches.

Through accelerate's tracker integration: the trackers are accelerate's own classes
(`TensorBoardTracker`, `WandBTracker`, `MLflowTracker`), handed to `Accelerator(log_with=...,
project_dir=...)`; `init_trackers` starts them and stores the job's flattened config,
`accelerator.log(row, step=epoch)` writes each epoch and `end_training` closes them.

Written here, where accelerate cannot do what is needed:
- the trackers are built here, one per backend: `init_trackers` gives all of them one
  `project_name`, which is TensorBoard's run folder and W&B's project at once;
- a guard around each (`Guard`): accelerate lets a tracker's exception through `accelerator.log`
  into training; here a backend that fails is one warning line in the job log and is left out
  for the rest of the job;
- MLflow: the tracking URI (accelerate's tracker uses whatever the process has), the run found again
  by its job-key tag (accelerate resumes only a run id it is given), the last epoch that run holds
  (its metric history), the experiment created once when jobs race to create it, the end status;
- TensorBoard: the HParams session in the run's own folder, written directly (accelerate's
  `store_init_configuration` calls `add_hparams` into a new timestamped sub-folder, with an
  experiment summary, on every start: one more HParams row per resume, and one job's hparams taken
  for the whole grid's), its end status, and `purge_step` on resume;
- W&B: the end status (`finish(exit_code=1)` for a failed job); resuming (the id derived from the
  job key, `resume="allow"`) is wandb.init's own.
- Per-backend rows (the catch-up after a resume, the final metrics) go to each accelerate tracker's
  own `log` (`accelerator.get_tracker(name)`), as which rows a backend still lacks differs.

Rank 0 alone logs: the guards run on the main process only (accelerate's `on_main_process`), and
what this module writes itself is behind `accelerator.is_main_process`.

Continuity: an epoch is logged after its checkpoint is written, and `tracking.json` in the job
folder records the last epoch each backend took. A resumed job first gives each backend the
checkpoint's epochs after that one (those a kill between checkpoint and log left out), then goes on
with the next epoch: no step twice. A kill between a log and its record: TensorBoard reopens with
`purge_step`, so its reader drops what came after the record; MLflow is asked for the last epoch it
holds; W&B refuses a step it already has.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker, on_main_process

from harness.atomic import atomic_write_json

# What tracking writes (the grid folder is results/<grid>/, a job's results/<grid>/jobs/<key>/).
STATE_FILE = "tracking.json"  # in the job folder: the last epoch each backend took
TENSORBOARD_DIR = "tensorboard"  # in the grid folder: one run folder per job
MLFLOW_DB = "mlflow.db"  # in the grid folder: the default MLflow store
# W&B writes its own wandb/ folder in the grid folder (or in $WANDB_DIR)

EPOCH, FINAL = "epoch/", "final/"  # metric names: per-epoch rows, the job's end-of-job metrics
PROGRESS_METRIC = EPOCH + "val_top1"  # in every epoch row: MLflow's history of it says how far the run got
FINAL_METRIC = FINAL + "test_top1"  # in every job's final metrics


def grid_folder(folder: Path) -> Path:
    return folder.resolve().parent.parent


def run_name(spec: dict) -> str:
    """What a person tells runs apart by: method, teacher set and seed (teachers: arch and seed)."""
    if spec["stage"] == "teacher":
        name = f"teacher_{spec['config']['arch']}_s{spec['seed']}"
    elif spec["teacher_set"] in ("", "none"):
        name = f"{spec['method']}_s{spec['seed']}"
    else:
        name = f"{spec['method']}_{spec['teacher_set']}_s{spec['seed']}"
    return re.sub(r"[^A-Za-z0-9._+=-]", "-", name)


def tags(spec: dict) -> dict[str, str]:
    return {"grid": spec["grid"], "stage": spec["stage"], "method": spec["method"], "seed": str(spec["seed"]),
            "teacher_set": spec["teacher_set"], "job_key": spec["key"]}


def wandb_id(spec: dict) -> str:
    """The job key and a digest of the grid name: one W&B run per job, found again on every
    relaunch, and the same job in another grid (same key) is not taken for it."""
    return f"{spec['key']}-{hashlib.sha256(spec['grid'].encode()).hexdigest()[:6]}"


def flat_config(spec: dict) -> dict[str, Any]:
    """The resolved config as flat key/value pairs: the labels, arch, method terms and parameters
    (`kd.temperature`), data and recipe (`train.lr`). Lists become JSON text; unset values are left out."""
    config = spec["config"]
    out: dict[str, Any] = {**tags(spec), "seed": spec["seed"], "arch": config["arch"],
                           "terms": "+".join(config["method"]["terms"]),
                           "teachers": ",".join(config.get("teachers") or []) or "none"}
    for term, params in config["method"]["params"].items():
        out.update({f"{term}.{k}": v for k, v in params.items()})
    out.update({f"data.{k}": v for k, v in config["data"].items()})
    out.update({f"train.{k}": v for k, v in config["recipe"].items()})
    if "world_size" in config:
        out["world_size"] = config["world_size"]
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in out.items() if v is not None}


def numbers(values: dict, prefix: str) -> dict[str, float]:
    """The finite numbers of a row, named `<prefix><column>`; a JSON object of numbers (e.g. the
    agreement with each teacher) becomes `<prefix><column>/<name>`."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith("{"):
            with contextlib.suppress(ValueError):
                out.update(numbers(json.loads(value), f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix + key] = value
    return out


def epoch_values(row: dict) -> dict[str, float]:
    """Every column of an epoch row (losses per term, lr, top-1s, images/s, method summaries); the
    epoch itself is the step."""
    return numbers({k: v for k, v in row.items() if k != "epoch"}, EPOCH)


# ---------------------------------------------------------------- the trackers

class Guard(GeneralTracker):
    """One accelerate tracker whose failures stay its own: the first is one warning line in the job
    log, and the tracker is left out from then on; the job goes on."""

    requires_logging_directory = False
    main_process_only = True  # whatever the tracker inside says (accelerate's W&B tracker says False)

    def __init__(self, inner: GeneralTracker, warn: Callable[[str], None]):
        self.inner, self.warn, self.failed = inner, warn, None
        super().__init__()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def tracker(self):
        return self.inner.tracker

    def call(self, what: str, *args, **kwargs) -> None:
        if self.failed:
            return
        try:
            getattr(self.inner, what)(*args, **kwargs)
        except Exception as e:  # any backend, any failure (an unreachable server, a locked database, ...)
            text = (str(e).strip().splitlines() or [""])[0][:300]
            self.failed = f"{type(e).__name__}: {text}" if text else type(e).__name__
            self.warn(f"tracking: {self.name} failed ({self.failed}); the job goes on without it")

    @on_main_process
    def start(self):
        self.call("start")

    @on_main_process
    def store_init_configuration(self, values: dict):
        self.call("store_init_configuration", values)

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs):
        self.call("log", values, step=step, **kwargs)

    @on_main_process
    def finish(self):
        self.call("finish")


class TensorBoard(TensorBoardTracker):
    """accelerate's TensorBoard tracker; the HParams session written directly into the run's folder
    (see the module's docstring), so `tensorboard --logdir results/<grid>` compares the jobs."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir.name, str(run_dir.parent))
        self.new_session, self.outcome = True, None

    @on_main_process
    def store_init_configuration(self, values: dict):
        if self.new_session:  # a resumed run has its session already
            self.writer.file_writer.add_summary(hparams_summary(start=values))
            self.writer.flush()

    @on_main_process
    def finish(self):
        if self.outcome:
            self.writer.file_writer.add_summary(hparams_summary(failed=self.outcome == "failed"))
        super().finish()


def hparams_summary(start: dict | None = None, failed: bool = False):
    """TensorBoard's HParams plugin data: the session's start (its hparams) or its end (its status).
    No experiment summary: TensorBoard then builds one from every job's session and scalars."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

    if start is not None:
        info = SessionStartInfo()
        for key, value in start.items():
            if isinstance(value, bool):
                info.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                info.hparams[key].number_value = value
            else:
                info.hparams[key].string_value = str(value)
        tag, content = metadata.SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=info)
    else:
        info = SessionEndInfo(status=Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS"))
        tag, content = metadata.SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=info)
    content.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


class WandB(WandBTracker):
    """accelerate's W&B tracker; a failed job's run ends with exit code 1."""

    def __init__(self, project: str, **init_kwargs):
        super().__init__(project, **init_kwargs)
        self.outcome = None

    @on_main_process
    def finish(self):
        self.run.finish(exit_code=1 if self.outcome == "failed" else 0)


class MLflow(MLflowTracker):
    """accelerate's MLflow tracker, told its tracking URI and the run of this job (found again by its
    `grid` and `job_key` tags) before accelerate starts it; the run ends FAILED for a failed job."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_tags: dict[str, str], artifacts: str | None):
        super().__init__(experiment_name=experiment, run_name=run_name, tags=run_tags)
        self.uri, self.artifacts, self.outcome, self.last_epoch, self.has_final = uri, artifacts, None, 0, False

    @on_main_process
    def start(self):
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(self.uri)
        if mlflow.active_run():  # one process may run several jobs (the debug executor)
            mlflow.end_run()
        with store_lock(self.uri):  # the first job creates the store's tables: one at a time
            client = MlflowClient(self.uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                client.create_experiment(self.experiment_name, artifact_location=self.artifacts)
            except MlflowException:  # another job created it meanwhile
                if client.get_experiment_by_name(self.experiment_name) is None:
                    raise
            experiment = client.get_experiment_by_name(self.experiment_name)
        if self.run_id is None:  # (MLFLOW_RUN_ID, which accelerate reads, would name it)
            query = " and ".join(f"tags.{k} = '{self.tags[k]}'" for k in ("grid", "job_key"))
            found = client.search_runs([experiment.experiment_id], query, max_results=1,
                                       order_by=["attributes.start_time ASC"])
            self.run_id = found[0].info.run_id if found else None
        if self.run_id is not None:  # how far it got: the rows and final metrics it holds are not logged again
            self.last_epoch = max((m.step for m in client.get_metric_history(self.run_id, PROGRESS_METRIC)), default=0)
            self.has_final = bool(client.get_metric_history(self.run_id, FINAL_METRIC))
        super().start()

    @on_main_process
    def finish(self):
        import mlflow

        mlflow.end_run(status="FAILED" if self.outcome == "failed" else "FINISHED")


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock beside a local SQLite store (made where missing): its first users would
    otherwise create its tables at once."""
    import fcntl

    match = re.fullmatch(r"sqlite:///(/.+)", uri)
    if not match:
        yield
        return
    db = Path(match[1])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(name: str, spec: dict, folder: Path, settings: dict) -> GeneralTracker:
    """The accelerate tracker of one backend for this job (no I/O until it starts)."""
    grid, project = grid_folder(folder), settings.get("project") or spec["grid"]
    label = run_name(spec)
    if name == "tensorboard":
        return TensorBoard(grid / TENSORBOARD_DIR / f"{label}_{spec['key']}")
    if name == "wandb":
        kwargs = {"id": wandb_id(spec), "name": label, "resume": "allow", "reinit": "finish_previous",
                  "group": "teachers" if spec["stage"] == "teacher" else f"{spec['method']}_{spec['teacher_set']}",
                  "job_type": spec["stage"], "tags": [f"{k}:{v}"[:64] for k, v in tags(spec).items()],
                  "settings": {"console": "off", "silent": True}}  # stdout carries the job's events to the launcher
        if settings.get("wandb_mode"):
            kwargs["mode"] = settings["wandb_mode"]
        if not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(grid)  # W&B writes <dir>/wandb/
        return WandB(project, **kwargs)
    if name == "mlflow":
        uri = settings.get("mlflow_uri") or f"sqlite:///{grid / MLFLOW_DB}"
        db = re.fullmatch(r"sqlite:///(/.+)", uri)  # a local store: artifacts beside it, not in the job's cwd
        return MLflow(uri, project, label, tags(spec), (Path(db[1]).parent / "mlflow-artifacts").as_uri() if db else None)
    raise ValueError(f"unknown tracking backend {name!r}")


# ---------------------------------------------------------------- one job's runs

class JobRun:
    """A job's run in each backend of its `[tracking]` table (`spec["runtime"]["tracking"]`);
    does nothing without one. `train_and_evaluate` calls `start` once the checkpoint is read,
    `log_epoch` after each epoch's checkpoint, and `run_training` calls `end`."""

    def __init__(self, spec: dict | None = None, folder: Path | None = None, emit: Callable[[dict], None] = lambda e: None):
        settings = ((spec or {}).get("runtime") or {}).get("tracking") or {}
        self.spec, self.folder, self.emit = spec, folder, emit
        self.guards: list[Guard] = []
        for name in dict.fromkeys(settings.get("backends") or []):
            try:
                self.guards.append(Guard(build(name, spec, folder, settings), self.warn))
            except Exception as e:
                self.warn(f"tracking: {name} cannot be set up ({type(e).__name__}: {e}); the job goes on without it")
        self.accelerator, self.active, self.record = None, False, {}

    def warn(self, text: str) -> None:
        self.emit({"event": "log", "text": f"warning: {text}"})

    def accelerator_kwargs(self) -> dict:
        """What `make_accelerator` passes on to `Accelerator`."""
        if not self.guards:
            return {}
        return {"log_with": list(self.guards), "project_dir": str(grid_folder(self.folder))}

    def live(self) -> list[Guard]:
        return [g for g in self.guards if not g.failed]

    def start(self, accelerator, epoch: int, history: list[dict]) -> None:
        """Start (or resume) every run; give each backend the checkpoint's epochs it lacks."""
        self.accelerator = accelerator
        self.active = bool(self.guards) and accelerator.is_main_process
        if self.active:
            try:
                self._start(accelerator, epoch, history)
            except Exception as e:  # the guards catch the backends' failures: this is a bug here, not a job's
                self.active = False
                self.warn(f"tracking: not started ({type(e).__name__}: {e}); the job goes on without it")

    def _start(self, accelerator, epoch: int, history: list[dict]) -> None:
        try:
            self.record = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            self.record = {}
        took = {g.name: min(self.record.get(g.name, {}).get("epoch", 0), epoch) for g in self.guards}
        for g in self.guards:
            if isinstance(g.inner, TensorBoard):
                g.inner.new_session = g.name not in self.record
                if g.name in self.record or epoch:  # drop whatever a kill left after the last recorded epoch
                    g.inner.init_kwargs["purge_step"] = took[g.name] + 1
        accelerator.init_trackers(self.spec["grid"], config=flat_config(self.spec))
        for g in self.live():
            if isinstance(g.inner, MLflow):  # what the run itself holds
                took[g.name] = g.inner.last_epoch
            for row in history:
                if row["epoch"] > took[g.name]:
                    g.log(epoch_values(row), step=row["epoch"])
        self.save(epoch)
        self.say(epoch)

    def log_epoch(self, row: dict) -> None:
        if self.active and self.live():
            self.accelerator.log(epoch_values(row), step=row["epoch"])  # each guard catches its own failure
            self.save(row["epoch"])

    def end(self, metrics: dict | None = None, failed: bool = False) -> None:
        """The final metrics (at the last epoch's step), each run's end status, the trackers closed.
        Never raises: the job's outcome is decided already."""
        if self.accelerator is None or not self.guards:
            return
        try:
            if self.active:
                if metrics is not None:
                    values, step = numbers(metrics, FINAL), metrics.get("epochs") or 0  # not twice after a kill at the end
                    for g in self.live():
                        if not (self.record.get(g.name, {}).get("final") or getattr(g.inner, "has_final", False)):
                            g.log(values, step=step)
                    self.save(step, final=True)
                for g in self.guards:
                    g.inner.outcome = "failed" if failed else "completed"
            self.accelerator.end_training()  # the trackers finish (main process only), the process group ends
        except Exception as e:
            self.warn(f"tracking: ending the runs failed ({type(e).__name__}: {e})")

    def save(self, epoch: int, final: bool | None = None) -> None:
        for g in self.live():
            before = self.record.get(g.name, {})
            done = final if final is not None else bool(before.get("final")) and before.get("epoch") == epoch
            self.record[g.name] = {"epoch": epoch, "final": done}
        try:
            atomic_write_json(self.folder / STATE_FILE, self.record)
        except OSError as e:
            self.warn(f"tracking: cannot write {STATE_FILE} ({e.strerror}); a resume may log an epoch twice")

    def say(self, epoch: int) -> None:
        """One line in the job log: where each run is."""
        where = []
        for g in self.live():
            inner = g.inner
            with contextlib.suppress(Exception):
                if isinstance(inner, TensorBoard):
                    where.append(f"tensorboard {inner.logging_dir}")
                elif isinstance(inner, MLflow):
                    where.append(f"mlflow run {inner.active_run.info.run_id} of experiment {inner.experiment_name!r} "
                                 f"at {inner.uri}")
                elif isinstance(inner, WandB):
                    run = inner.run
                    where.append(f"wandb run {run.id} of project {run.project!r}"
                                 + (f" (offline: {Path(run.dir).parent})" if run.offline else f" ({run.url})"))
        if where:
            resumed = f", from epoch {epoch + 1}" if epoch else ""
            self.emit({"event": "log", "text": f"tracking{resumed}: " + "; ".join(where)})


NONE = JobRun()  # no tracking (a trainer built by hand, the bench)
