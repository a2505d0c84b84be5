"""Where a grid's results and each job's files are, and a job's state as those files say it.

The one module that names them: `GridPaths` (results/<grid>/) and `JobPaths`
(results/<grid>/jobs/<key>/); every other module asks these for a path instead of spelling it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from harness.atomic import UnreadableFile


class State(str, Enum):
    """A job's state; a str, so JSON, Parquet and tables hold the bare word.

    A job folder says one of the first four (`JobPaths.state`, what `launch --dry-run` shows);
    result.json holds COMPLETED or FAILED. Tables (runs.parquet's `status`, `harness.status`) show
    the unfinished two as INTERRUPTED and PENDING (`State.shown`)."""

    COMPLETED = "completed"
    FAILED = "failed"
    PARTIAL = "partial"  # no result yet, a checkpoint to resume from
    NEW = "new"  # nothing trained yet
    INTERRUPTED = "interrupted"  # PARTIAL, in tables
    PENDING = "pending"  # NEW, in tables

    __str__ = str.__str__  # f-strings and tables show the word, not `State.NEW`
    __format__ = str.__format__

    @property
    def shown(self) -> State:
        return {State.PARTIAL: State.INTERRUPTED, State.NEW: State.PENDING}.get(self, self)


FOLDER_STATES = (State.COMPLETED, State.FAILED, State.PARTIAL, State.NEW)


def read_required_json(path: Path, keys: tuple[str, ...], remedy: str) -> dict:
    """The file's JSON object; UnreadableFile (with `remedy`, what rewrites it) where it is not JSON
    or lacks one of `keys`."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as e:
        raise UnreadableFile(f"{path}: not a JSON file ({e}); {remedy}") from None
    if not isinstance(data, dict) or not set(keys) <= data.keys():
        raise UnreadableFile(f"{path}: expected a JSON object with {', '.join(keys)}; {remedy}")
    return data


def read_json(path: Path) -> dict | list | None:
    """The file's JSON, or None where it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class JobPaths:
    """One job's folder. The launcher writes `spec`; the job writes the rest (harness.run.job), and
    the SLURM executor `slurm`, the record of the task it queued."""

    folder: Path

    @property
    def spec(self) -> Path:
        return self.folder / "job.json"

    @property
    def result(self) -> Path:  # written last: its status "completed" is what makes the key done
        return self.folder / "result.json"

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    @property
    def epochs(self) -> Path:
        return self.folder / "epochs.json"

    @property
    def attempts(self) -> Path:
        return self.folder / "attempts.json"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.folder / "model.pt"

    @property
    def confusion(self) -> Path:
        return self.folder / "confusion.json"

    @property
    def robustness(self) -> Path:
        return self.folder / "robustness.json"

    @property
    def slurm(self) -> Path:
        return self.folder / "slurm.json"

    @property
    def lock(self) -> Path:
        return self.folder / ".job.lock"

    @property
    def explain(self) -> Path:
        return self.folder / "explain.png"

    @property
    def grid(self) -> GridPaths:
        return GridPaths(self.folder.parent.parent)

    def read_spec(self) -> dict:
        """Raises where there is none: a job cannot run without it."""
        return read_required_json(self.spec, ("key", "stage", "method", "seed", "config", "teachers"),
                                  "launching its grid again rewrites it")

    def read_result(self) -> dict | None:
        return read_json(self.result)

    def read_slurm(self) -> dict | None:
        return read_json(self.slurm)

    def read_epochs(self) -> list[dict]:
        return read_json(self.epochs) or []

    def read_attempts(self) -> dict:
        return read_json(self.attempts) or {}

    def state(self) -> State:
        """COMPLETED | FAILED (its result says) | PARTIAL (a checkpoint to resume) | NEW."""
        result = self.read_result()
        if result:
            return State(result["status"])
        return State.PARTIAL if self.checkpoint.exists() else State.NEW


@dataclass(frozen=True)
class GridPaths:
    """A grid's results folder, results/<grid>/ (README.md: "What a grid leaves behind")."""

    root: Path

    @property
    def grid_file(self) -> Path:  # the grid file as run
        return self.root / "grid.toml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def job(self, key: str) -> JobPaths:
        return JobPaths(self.jobs / key)

    @property
    def runs_table(self) -> Path:
        return self.root / "runs.parquet"

    @property
    def epochs_table(self) -> Path:
        return self.root / "epochs.parquet"

    @property
    def confusion_table(self) -> Path:
        return self.root / "confusion.parquet"

    @property
    def robustness_table(self) -> Path:
        return self.root / "robustness.parquet"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def launch_lock(self) -> Path:
        return self.root / ".launch.lock"

    @property
    def teacher_cache(self) -> Path:
        return self.root / "teacher_cache"

    @property
    def slurm(self) -> Path:  # submitit's folder: one subfolder of logs per SLURM job
        return self.root / "slurm"

    @property
    def slurm_intent(self) -> Path:  # what is being submitted now (harness.executors.slurm)
        return self.slurm / "submitting.json"

    def read_plan(self) -> dict:
        return read_required_json(self.plan, ("name", "jobs"), "launching the grid again rewrites it")
