"""What runs on a node: one job in its own folder.

The folder holds `job.json` (the spec the launcher wrote), and the job leaves there `log.txt`,
`epochs.json` (rows so far), `checkpoint.pt` (each epoch), `model.pt` (final weights) and
`result.json` (metrics, or the error of a failed run). `result.json` is written last, atomically:
its presence with status "completed" is what makes a key done.

    python -m harness.job results/<grid>/jobs/<key>          # run (or resume) one job
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from harness.atomic import atomic_write_json

EVENT_PREFIX = "@kd-event "  # marks machine-readable progress lines on stdout
STATES = ("completed", "failed", "partial", "new")
DISPLAY_STATE = {"completed": "completed", "failed": "failed", "partial": "interrupted", "new": "pending"}  # in tables


def state(folder: Path) -> str:
    """completed | failed | partial (has a checkpoint to resume) | new."""
    result = read_json(folder / "result.json")
    if result:
        return result["status"]
    return "partial" if (folder / "checkpoint.pt").exists() else "new"


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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
        self.folder, self.forward = folder, forward
        self.file = open(folder / "log.txt", "a", buffering=1)
        before = read_json(folder / "attempts.json") or {"attempts": 0, "wall_time_s": 0.0}
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
        atomic_write_json(self.folder / "attempts.json", {"attempts": self.attempts, "wall_time_s": self.wall_time_s(),
                                                          "cpu_time_s": self.cpu_time_s()})

    def line(self, text: str) -> None:
        self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            self.rows = list(event.pop("history"))  # the checkpoint's rows are the truth on resume
            resumed = f", resuming after epoch {event['resumed_from']}" if event["resumed_from"] else ""
            self.line(f"training on {event['device']} × {event.get('world_size', 1)} process(es): {event['epochs']} epochs of "
                      f"{event['steps_per_epoch']} steps{resumed}")
        elif kind == "epoch":
            self.rows.append({k: v for k, v in event.items() if k not in ("event", "epochs")})
            atomic_write_json(self.folder / "epochs.json", self.rows)
            self.save_cost()
            terms = ", ".join(f"{k[5:]} {v:.4f}" for k, v in event.items() if k.startswith("loss_"))
            self.line(f"epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss']:.4f} ({terms}), "
                      f"train {event['train_top1']:.2f}%, val {event['val_top1']:.2f}%, "
                      f"{event['epoch_time_s']:.1f}s, {event['images_per_s']:.0f} img/s")
        self.forward(event)

    def close(self) -> None:
        self.save_cost()
        self.file.close()


def run(folder: Path, forward=lambda event: None) -> dict:
    """Run or resume the job in `folder`; return its result (also written to result.json).
    A failure is recorded, not raised: the rest of the grid goes on."""
    from harness.train import run_training  # heavy imports only where training happens

    spec = json.loads((folder / "job.json").read_text())
    if int(os.environ.get("RANK", "0")) > 0:  # the other ranks of a DDP job train beside rank 0, which writes
        return {"status": "completed", **run_training(spec, folder, lambda event: None)}
    (folder / "result.json").unlink(missing_ok=True)
    log = JobLog(folder, forward)
    log.line(f"job {spec['key']} ({spec['method']}, seed {spec['seed']}, teachers {spec['teacher_set']}), "
             f"attempt {log.attempts}, host {platform.node()}")
    provenance = {"attempts": log.attempts, "executor": spec["executor"], "git_commit": git_commit(),
                  "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "host": platform.node()}
    try:
        import torch
        provenance["torch_version"] = torch.__version__
        metrics = run_training(spec, folder, log)
        result = {"status": "completed", **metrics}
        log.line(f"completed: test top-1 {metrics['test_top1']:.2f}% (best val {metrics['best_val_top1']:.2f}% "
                 f"at epoch {metrics['best_epoch']})")
    except Exception:
        error = traceback.format_exc()
        result = {"status": "failed", "error": "\n".join(error.strip().splitlines()[-12:])}
        log.line("failed:\n" + error)
    log.close()
    result.update(provenance, wall_time_s=log.wall_time_s(), cpu_time_s=log.cpu_time_s())
    atomic_write_json(folder / "result.json", result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.job", description=(
        "Run (or resume) one job of a planned grid in its folder. The launcher calls this; run it "
        "by hand to debug one job."))
    parser.add_argument("folder", type=Path, help="the job folder, results/<grid>/jobs/<key>")
    parser.add_argument("--events", action="store_true",
                        help=f"print progress events as JSON lines prefixed {EVENT_PREFIX.strip()!r}")
    args = parser.parse_args(argv)
    if not (args.folder / "job.json").is_file():
        print(f"error: no job.json in {args.folder}", file=sys.stderr)
        return 2
    emit = (lambda e: print(EVENT_PREFIX + json.dumps(e), flush=True)) if args.events else (lambda e: None)
    return 0 if run(args.folder, emit)["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
