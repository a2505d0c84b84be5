"""The training loop of one job: a student (and its method's trainable parts) trained with
accelerate under the grid's mixed precision, teachers frozen beside it.

A checkpoint is written after every epoch; a job that finds one resumes from it and ends with the
same numbers as an uninterrupted run (data order and augmentation are seeded by run seed and
epoch). Nothing synchronises the device inside an epoch except the throttled progress report.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.atomic import UnreadableFile
from harness.models import checkpoint
from harness.config import precision
from harness.run import robustness, teacher_cache, tracking
from harness.run.layout import JobPaths
from harness.data import DataError, load_dataset
from harness.data.device import DeviceData
from harness.run.evaluate import job_metrics, predict
from harness.models import build_model
from methods import Batch, Context, Method, Outputs, build_method
from methods import Progress as StepProgress  # what a term sees (this module's Progress: the job's state)

Emit = Callable[[dict], None]
PROGRESS_EVERY_S = 1.0


class Student(nn.Module):
    """The student and its method as one module, so that one forward yields the losses and DDP
    synchronises the method's trainable parts (e.g. FitNet regressors) with the student's."""

    def __init__(self, model: nn.Module, method: Method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, batch: Batch, teachers: list[Outputs]) -> tuple[dict[str, Tensor], Tensor]:
        logits, features = self.model(batch.images, features=True)
        return self.method.losses(batch, Outputs(logits, features), teachers), logits


DDP_TIMEOUT = timedelta(minutes=5)  # a rank stuck in a collective fails after this, not NCCL's default


def make_accelerator(precision: str, log_with=None, project_dir: str | None = None):
    """`log_with`, `project_dir`: the job's experiment trackers (harness.run.tracking.JobRun)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import InitProcessGroupKwargs

    # One process may run several jobs (the debug executor): accelerate's state is a singleton.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                       log_with=log_with, project_dir=project_dir,
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=DDP_TIMEOUT)])


def configure_backends(device: torch.device, runtime: dict) -> None:
    """cuDNN autotuning on CUDA (the shapes are static), or, with `deterministic`, deterministic
    kernels everywhere (slower; on GPUs the only way to bit-identical reruns and resumes)."""
    if runtime.get("deterministic"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any matmul
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def lr_factor(epoch: float, recipe: dict) -> float:
    """Learning-rate multiplier at a (fractional) epoch: warm-up, then the schedule."""
    warmup, total = recipe["warmup_epochs"], recipe["epochs"]
    if epoch < warmup:
        return epoch / warmup
    if recipe["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(total - warmup, 1e-9)))
    if recipe["schedule"] == "multistep":
        milestones = [m * total if m < 1 else m for m in recipe["milestones"]]
        return recipe["gamma"] ** sum(epoch >= m for m in milestones)
    return 1.0


@dataclass
class Trainer:
    """Everything one job trains with, built once (`build_trainer`), stepped by `train_epoch`."""

    accelerator: Any
    data: DeviceData
    model: nn.Module  # the bare student network
    method: Method
    student: Student  # model + method: what is checkpointed
    wrapped: nn.Module  # `student` as accelerate prepared it (autocast, DDP)
    optimizer: Any
    scheduler: Any
    recipe: dict
    seed: int
    eval_batch_size: int

    def evaluate(self, split: tuple[Tensor, Tensor]) -> float:
        """Top-1 in percent; with several ranks each classifies its share and the counts are summed."""
        self.model.eval()
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        images, labels = split[0][rank::world], split[1][rank::world]
        logits = predict(self.model, images, self.data.normalize, self.eval_batch_size, self.accelerator.autocast)
        correct = self.accelerator.reduce((logits.argmax(1) == labels).sum(), reduction="sum")
        return correct.item() * 100 / len(split[1])


def build_trainer(config: dict, runtime: dict, cifar, teachers: list[tuple[str, str]],
                  cache_root: Path | None = None, teacher_names: list[str] = (),
                  run: tracking.JobRun = tracking.NONE) -> Trainer:
    """Accelerator, on-device data, student, frozen teachers (arch, checkpoint path), method, optimiser.
    A method that asks for the teacher cache gets it (built under `cache_root` where missing)."""
    recipe = config["recipe"]
    accelerator = make_accelerator(recipe["mixed_precision"], **run.accelerator_kwargs())
    device = accelerator.device
    precision.check(recipe["mixed_precision"], device)
    configure_backends(device, runtime)
    memory_format = torch.channels_last if runtime.get("channels_last", True) else torch.contiguous_format
    torch.manual_seed(config["seed"])
    data = DeviceData(cifar, device)
    model = build_model(config["arch"], cifar.num_classes).to(device, memory_format=memory_format)
    frozen = [checkpoint.load_frozen(path, arch, device, memory_format, cifar.num_classes) for arch, path in teachers]
    if runtime.get("compile"):  # in place: parameter names, so checkpoints, stay those of the plain module
        for net in (model, *frozen):
            net.compile()
    caches = None
    if teacher_cache.wanted(config["method"]):
        if cache_root is None:
            raise ValueError("the method asks for teacher_cache = 'clean' but no cache folder was given")
        paths = [path for _, path in teachers]
        keys = config.get("teachers") or []
        keys = keys if len(keys) == len(paths) else [teacher_cache.file_sha256(p)[:16] for p in paths]
        caches = teacher_cache.prepare(cache_root, keys, paths, frozen, data, config.get("data", {}),
                                       recipe["mixed_precision"], accelerator.autocast,
                                       runtime.get("eval_batch_size", 1000))
    ctx = Context(model, frozen, recipe["label_smoothing"], teacher_caches=caches, teacher_names=list(teacher_names))
    method = build_method(config["method"], ctx).to(device)
    student = Student(model, method)
    optimizer = torch.optim.SGD(student.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe["nesterov"] and recipe["momentum"] > 0,
                                weight_decay=recipe["weight_decay"])
    steps = data.steps_per_epoch(recipe["batch_size"])
    if steps == 0:
        raise ValueError(f"batch_size {recipe['batch_size']} exceeds the {data.n_train} training images")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step / steps, recipe))
    wrapped, optimizer = accelerator.prepare(student, optimizer)
    return Trainer(accelerator, data, model, method, student, wrapped, optimizer, scheduler, recipe,
                   config["seed"], runtime.get("eval_batch_size", 1000))


def run_training(spec: dict, folder: Path, emit: Emit) -> dict:
    """Train the job described by `spec` (see harness.run.job) in `folder`; return its metrics."""
    config, data_cfg = spec["config"], spec["config"]["data"]
    dataset = data_cfg.get("dataset", "cifar10")
    problem = robustness.check_cache(spec["data_root"], spec["runtime"].get("eval") or {}, dataset)
    if problem:  # launch asks this before submitting; a job started by hand asks it before its first epoch
        raise DataError(problem)
    cifar = load_dataset(spec["data_root"], dataset, val_size=data_cfg["val_size"],
                         split_seed=data_cfg["split_seed"], limit_train=data_cfg["limit_train"],
                         limit_test=data_cfg["limit_test"])
    names = spec["teacher_set"].split("+") if spec.get("teachers") else []
    run = tracking.JobRun(spec, folder, emit)  # [tracking]: a warning at worst, never the job's failure
    try:
        t = build_trainer(config, spec["runtime"], cifar, [tuple(x) for x in spec["teachers"]],
                          run=run,
                          cache_root=JobPaths(folder.resolve()).grid.teacher_cache, teacher_names=names)
        metrics = train_and_evaluate(t, spec, folder, emit, run)
        run.end(metrics)
        return metrics
    except Exception:
        run.end(failed=True)
        raise
    finally:  # on success, and on a failure, so that no other rank waits on this one in a collective
        end_process_group()


def end_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def train_and_evaluate(t: Trainer, spec: dict, folder: Path, emit: Emit, run: tracking.JobRun = tracking.NONE) -> dict:
    """The epochs (resumed where the checkpoint left off), then the end-of-job metrics."""
    config, names = spec["config"], spec["teacher_set"].split("+") if spec.get("teachers") else []
    epochs, steps = t.recipe["epochs"], t.data.steps_per_epoch(t.recipe["batch_size"])
    state = Progress.resume(JobPaths(folder).checkpoint, t)
    emit({"event": "start", "epochs": epochs, "steps_per_epoch": steps, "resumed_from": state.epoch,
          "set_aside": state.set_aside,
          "history": state.history, "device": str(t.data.device), "world_size": t.accelerator.num_processes})
    run.start(t.accelerator, state.epoch, state.history)
    for epoch in range(state.epoch, epochs):
        row = train_epoch(t, epoch, lambda info: emit({"event": "step", "epoch": epoch, **info}))
        row["val_top1"] = t.evaluate(t.data.val)
        row.update(t.method.epoch_summary(t.data.probe_batch()))
        state.add(row, t.model)
        if t.accelerator.is_main_process:
            state.save(folder, t)
        emit({"event": "epoch", **row, "epochs": epochs})
        run.log_epoch(row)  # after the checkpoint: a resume starts after the epochs the trackers have

    metrics = {"test_top1": t.evaluate(t.data.test), "device": str(t.data.device),
               "world_size": t.accelerator.num_processes,
               "mixed_precision": t.recipe["mixed_precision"], **state.summary()}
    if state.best_weights is not None:
        t.model.load_state_dict(state.best_weights)
        metrics["test_top1_at_best_val"] = t.evaluate(t.data.test)
        t.model.load_state_dict(state.last_weights)
    metrics.update(job_metrics(t, folder, names) if t.accelerator.is_main_process else {})
    if t.accelerator.is_main_process:
        checkpoint.save_weights(JobPaths(folder).model, config["arch"], t.model)
    metrics.update(robustness.evaluate_job(t, spec, folder) if t.accelerator.is_main_process else {})
    return metrics


def train_epoch(t: Trainer, epoch: int, report: Callable[[dict], None] = lambda info: None) -> dict:
    """One epoch; loss terms and accuracy are summed on the device and read once at the end."""
    t.wrapped.train()
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), device=t.data.device)
    seen, last_report, start = 0, time.perf_counter(), time.perf_counter()
    lr = t.optimizer.param_groups[0]["lr"]
    steps = t.data.steps_per_epoch(t.recipe["batch_size"])
    batches = t.data.train_batches(t.seed, epoch, t.recipe["batch_size"], t.accelerator.process_index,
                                   t.accelerator.num_processes)
    watch = NonFiniteWatch(t.data.device)
    for step, batch in enumerate(batches):
        t.method.progress = StepProgress(epoch, step, steps, t.recipe["epochs"])
        with t.accelerator.autocast():
            teacher_outs = t.method.teacher_outputs(batch)
        losses, logits = t.wrapped(batch, teacher_outs)
        watch.add(step, losses)
        loss = sum(losses.values())
        t.optimizer.zero_grad(set_to_none=True)
        t.accelerator.backward(loss)
        t.optimizer.step()
        t.scheduler.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0) + value.detach()
        correct += (logits.argmax(1) == batch.labels).sum()
        seen += len(batch.labels)
        if time.perf_counter() - last_report > PROGRESS_EVERY_S:
            last_report = time.perf_counter()
            report({"step": step + 1, "steps": steps, "loss": sum(sums.values()).item() / (step + 1)})
    if t.data.device.type == "cuda":
        torch.cuda.synchronize(t.data.device)
    elapsed = time.perf_counter() - start
    watch.check(t.accelerator, epoch)  # before the epoch's checkpoint: the last good one stays
    terms = reduce_mean(t.accelerator, {k: v / steps for k, v in sums.items()})
    correct = t.accelerator.reduce(correct, reduction="sum").item()
    total_seen = seen * t.accelerator.num_processes
    return {"epoch": epoch + 1, "lr": lr, "train_loss": sum(terms.values()),
            **{f"loss_{k}": v for k, v in terms.items()}, "train_top1": 100 * correct / total_seen,
            "epoch_time_s": elapsed, "images_per_s": total_seen / elapsed}


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or infinite: the job cannot produce a trustworthy number."""


class NonFiniteWatch:
    """The first step at which each loss term was not finite, kept on the device (no per-step sync)
    and read once at the end of the epoch, on every rank together."""

    def __init__(self, device: torch.device):
        self.device, self.first = device, {}

    def add(self, step: int, losses: dict[str, Tensor]) -> None:
        for name, value in losses.items():
            first = self.first.get(name)
            if first is None:
                first = self.first[name] = torch.full((), -1, dtype=torch.long, device=self.device)
            bad = ~torch.isfinite(value.detach()) & (first < 0)
            self.first[name] = torch.where(bad, step, first)

    def check(self, accelerator, epoch: int) -> None:
        if not self.first:
            return
        names = list(self.first)
        firsts = torch.stack([self.first[n] for n in names])
        anywhere = accelerator.reduce((firsts >= 0).long(), reduction="sum").tolist()
        bad = [(step, name, hit) for name, step, hit in zip(names, firsts.tolist(), anywhere) if hit]
        if bad:
            step, name, _ = min(bad, key=lambda b: (b[0] < 0, b[0]))
            where = f"step {step + 1}" if step >= 0 else "another rank's step"
            raise NonFiniteLoss(f"loss term {name!r} became non-finite at epoch {epoch + 1}, {where}: the job "
                                f"stops; its last good checkpoint (epoch {epoch}) is kept")


def reduce_mean(accelerator, values: dict[str, Tensor]) -> dict[str, float]:
    if not values:
        return {}
    stacked = accelerator.reduce(torch.stack(list(values.values())).float(), reduction="mean")
    return dict(zip(values, stacked.tolist()))


class Progress:
    """What survives an interruption: completed epochs, their rows, the best-val weights."""

    def __init__(self):
        self.epoch, self.history, self.set_aside = 0, [], None
        self.best_val, self.best_epoch, self.best_weights, self.last_weights = -1.0, 0, None, None

    @classmethod
    def resume(cls, path: Path, t: Trainer) -> "Progress":
        state = cls()
        ckpt = state.read(path, t.data.device)
        if ckpt is not None:
            t.student.load_state_dict(ckpt["student"])
            t.optimizer.load_state_dict(ckpt["optimizer"])
            t.scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            if t.data.device.type == "cuda" and ckpt["rng"].get("cuda"):
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"][0].cpu(), t.data.device)
            if t.accelerator.scaler is not None and ckpt.get("scaler"):  # fp16 loss scale: resumes as it was
                t.accelerator.scaler.load_state_dict(ckpt["scaler"])
            state.epoch, state.history = ckpt["epoch"], ckpt["history"]
            state.best_val, state.best_epoch, state.best_weights = ckpt["best_val"], ckpt["best_epoch"], ckpt["best_weights"]
            # a copy: the best-val weights are loaded into the model at the end, and a view of the
            # live parameters would then silently become them
            state.last_weights = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
        return state

    def read(self, path: Path, device: torch.device) -> dict | None:
        """The checkpoint, or None. An unreadable one (truncated, corrupt) is set aside, said so in
        `set_aside`, and the job starts again: it would otherwise fail the same way on every relaunch."""
        if not path.exists():
            return None
        try:
            return checkpoint.load(path, device)
        except UnreadableFile as e:
            aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            self.set_aside = f"{path.name} was unreadable ({type(e.__cause__).__name__}): set aside as {aside.name}"
            return None

    def add(self, row: dict, model: nn.Module) -> None:
        self.epoch = row["epoch"]
        self.history.append(row)
        self.last_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if row["val_top1"] > self.best_val:
            self.best_val, self.best_epoch, self.best_weights = row["val_top1"], row["epoch"], self.last_weights

    def save(self, folder: Path, t: Trainer) -> None:
        device = t.data.device  # only the generator this rank uses: another run may see other GPUs
        rng = {"torch": torch.get_rng_state(), "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []}
        scaler = t.accelerator.scaler
        checkpoint.save(JobPaths(folder).checkpoint, {"scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": self.epoch, "history": self.history, "student": t.student.state_dict(),
            "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(), "rng": rng,
            "best_val": self.best_val, "best_epoch": self.best_epoch, "best_weights": self.best_weights})

    def summary(self) -> dict:
        train_time = sum(r["epoch_time_s"] for r in self.history)
        images = sum(r["images_per_s"] * r["epoch_time_s"] for r in self.history)
        return {"best_val_top1": self.best_val, "best_epoch": self.best_epoch, "epochs": self.epoch,
                "train_time_s": train_time, "train_images_per_s": images / train_time if train_time else 0.0}
