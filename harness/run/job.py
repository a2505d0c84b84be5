"""What runs on a node: one job in its own folder.

The folder holds `job.json` (the spec the launcher wrote), and the job leaves there `log.txt`,
`epochs.json` (rows so far), `checkpoint.pt` (each epoch), `model.pt` (final weights) and
`result.json` (metrics, or the error of a failed run). `result.json` is written last, atomically:
its presence with status "completed" is what makes a key done.

    python -m harness.job results/<grid>/jobs/<key>          # run (or resume) one job
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from harness.atomic import atomic_write_json, open_append, remove_temporaries
from harness.cli import interruptible, refusing_unreadable
from harness.run.layout import JobPaths, State, read_json

EVENT_PREFIX = "@kd-event "  # marks machine-readable progress lines on stdout


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class JobLog:
    """Human log (log.txt), epoch rows so far (epochs.json), attempts and their cost
    (attempts.json), and the event stream to the launcher."""

    def __init__(self, folder: Path, forward):
        self.paths, self.forward = JobPaths(folder), forward
        self.file = open_append(self.paths.log)
        before = read_json(self.paths.attempts) or {"attempts": 0, "wall_time_s": 0.0}
        self.attempts, self.earlier_s = before["attempts"] + 1, before["wall_time_s"]
        self.earlier_cpu_s = before.get("cpu_time_s", 0.0)
        self.started, self.cpu_started, self.rows = time.time(), time.process_time(), []
        self.save_cost()

    def wall_time_s(self) -> float:
        """Wall time of this attempt and the earlier ones, so a resumed job reports its whole cost."""
        return self.earlier_s + time.time() - self.started

    def cpu_time_s(self) -> float:
        """CPU time (user + system, all threads) of this process over this attempt and the earlier
        ones: the job's CPU cost where no scheduler accounts for it."""
        return self.earlier_cpu_s + time.process_time() - self.cpu_started

    def save_cost(self) -> None:
        atomic_write_json(self.paths.attempts, {"attempts": self.attempts, "wall_time_s": self.wall_time_s(),
                                                          "cpu_time_s": self.cpu_time_s()})

    def line(self, text: str) -> None:
        self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            self.rows = list(event.pop("history"))  # the checkpoint's rows are the truth on resume
            if event.get("set_aside"):
                self.line(f"{event['set_aside']}; training starts again from the first epoch")
            resumed = f", resuming after epoch {event['resumed_from']}" if event["resumed_from"] else ""
            self.line(f"training on {event['device']} × {event.get('world_size', 1)} process(es): {event['epochs']} epochs of "
                      f"{event['steps_per_epoch']} steps{resumed}")
        elif kind == "epoch":
            self.rows.append({k: v for k, v in event.items() if k not in ("event", "epochs")})
            atomic_write_json(self.paths.epochs, self.rows)
            self.save_cost()
            terms = ", ".join(f"{k[5:]} {v:.4f}" for k, v in event.items() if k.startswith("loss_"))
            self.line(f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f} ({terms}), "
                      f"train {event['train_top1']:.2f}%, val {event['val_top1']:.2f}%, "
                      f"{event['epoch_time_s']:.1f}s, {event['images_per_s']:.0f} img/s")
        elif kind == "log":  # a line for the log alone, e.g. where the tracking runs are, or a tracker's warning
            self.line(event["text"])
        self.forward(event)

    def close(self) -> None:
        self.save_cost()
        self.file.close()


def run(folder: Path, forward=lambda event: None) -> dict:
    """Run or resume the job in `folder`; return its result (also written to result.json).
    A failure is recorded, not raised: the rest of the grid goes on."""
    from harness.run.train import run_training  # heavy imports only where training happens

    spec = JobPaths(folder).read_spec()
    if int(os.environ.get("RANK", "0")) > 0:  # the other ranks of a DDP job train beside rank 0, which writes
        return {"status": State.COMPLETED, **run_training(spec, folder, lambda event: None)}
    with job_lock(folder):
        return _run_locked(folder, spec, forward, run_training)


class JobLocked(Exception):
    """Another process is training this job in this folder now."""


@contextlib.contextmanager
def job_lock(folder: Path):
    """One process per job folder: a job run by hand beside the launcher's would write the same files."""
    fd = os.open(JobPaths(folder).lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise JobLocked(f"{folder} is being trained by another process now ({holder}); wait for it, "
                            "or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _run_locked(folder: Path, spec: dict, forward, run_training) -> dict:
    paths = JobPaths(folder)
    paths.result.unlink(missing_ok=True)
    leftovers = remove_temporaries(folder)
    log = JobLog(folder, forward)
    if leftovers:
        log.line(f"removed {len(leftovers)} partial file(s) of a write that was killed: "
                 + ", ".join(p.name for p in leftovers))
    log.line(f"job {spec['key']} ({spec['method']}, seed {spec['seed']}, teachers {spec['teacher_set']}), "
             f"attempt {log.attempts}, host {platform.node()}")
    provenance = {"attempts": log.attempts, "executor": spec["executor"], "git_commit": git_commit(),
                  "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "host": platform.node()}
    try:
        import torch
        provenance["torch_version"] = torch.__version__
        metrics = run_training(spec, folder, log)
        result = {"status": State.COMPLETED, **metrics}
        log.line(f"completed: test top-1 {metrics['test_top1']:.2f}% (best val {metrics['best_val_top1']:.2f}% "
                 f"at epoch {metrics['best_epoch']})")
    except Exception:
        error = traceback.format_exc()
        result = {"status": State.FAILED, "error": "\n".join(error.strip().splitlines()[-12:])}
        log.line("failed:\n" + error)
    except (KeyboardInterrupt, SystemExit) as stop:  # stopped (the launcher's SIGINT, SLURM's SIGTERM or requeue)
        what = str(stop) if isinstance(stop, KeyboardInterrupt) else f"exit {stop.code}"
        log.line(f"interrupted{f' ({what})' if what else ''}: no result; the next attempt resumes from the last "
                 "epoch checkpoint")
        log.close()
        raise
    log.close()
    result.update(provenance, wall_time_s=log.wall_time_s(), cpu_time_s=log.cpu_time_s())
    atomic_write_json(paths.result, result)
    return result


@refusing_unreadable
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.job", description=(
        "Run (or resume) one job of a planned grid in its folder. The launcher calls this; run it "
        "by hand to debug one job."))
    parser.add_argument("folder", type=Path, help="the job folder, results/<grid>/jobs/<key>")
    parser.add_argument("--events", action="store_true",
                        help=f"print progress events as JSON lines prefixed {EVENT_PREFIX.strip()!r}")
    args = parser.parse_args(argv)
    interruptible()
    spec = JobPaths(args.folder).spec
    if not spec.is_file():
        print(f"error: no {spec.name} in {args.folder}", file=sys.stderr)
        return 2
    emit = EventStream() if args.events else (lambda e: None)
    try:
        return 0 if run(args.folder, emit)["status"] == State.COMPLETED else 1
    except (JobLocked, OSError) as e:  # OSError: e.g. a symbolic link where log.txt belongs
        print(f"error: {e}", file=sys.stderr)
        return 2


class EventStream:
    """Progress events to the launcher on stdout. If the launcher is gone (a broken pipe), the job
    goes on and finishes without it: its results land in its folder all the same."""

    def __init__(self):
        self.open = True

    def __call__(self, event: dict) -> None:
        if not self.open:
            return
        try:
            print(EVENT_PREFIX + json.dumps(event), flush=True)
        except (BrokenPipeError, OSError):
            self.open = False
            devnull = os.open(os.devnull, os.O_WRONLY)  # nothing more may reach the dead pipe, not even at exit
            os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
