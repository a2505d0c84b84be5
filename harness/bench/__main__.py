"""`python -m harness.bench`: the speed goals of the harness, measured as ratios in one process.

    python -m harness.bench                  # every benchmark
    python -m harness.bench step kd          # some of them
    python -m harness.bench --steps 20 --repeats 5 --precision bf16

- step:    harness training step (augmentation included) vs a plain hand-written PyTorch loop,
           ResNet20, images/s (goal ≥ 0.95×)
- kd:      KD step with a ResNet110 teacher vs (student step + teacher inference forward), each
           measured alone (goal ≤ 1.05×)
- augment: augmenting one batch vs one ResNet20 training step (goal < 3 %)
- plan:    planning a 10,000-job grid: read, validate, expand, key (goal < 1 s)
- report:  `python -m harness.report` on a synthetic 1,000-job results folder (goal < 5 s)
- robustness: CIFAR-10-C evaluation (cache on disk → device → model) vs the clean test set
           already on the device, ResNet20, images/s (goal ≥ 0.9×)
- slurm:   (only when named; needs a running SLURM) sbatch calls and time to queue a 1,000-job
           grid (goals: one per stage array chunk, < 10 s), and the job wrapper's overhead from
           task start to first training step (goal < 5 s)
- cakd:    kd+at, kd+fa+at and CAKD with each mask, step time vs a kd step with the same
           ResNet110 teacher (goals: kd+fa+at ≤ 1.15×, intervention ≤ 2×, gradient ≤ 1.6×)
- archs:   (only when named) training images/s of every architecture of the zoo, plain loop
- mate:    MATE-KD with three teachers (ResNet110, DenseNet121, VGG19-BN). Cache on vs a ce step
           (goal ≤ 1.4×); cache off vs (student step + the teachers' forward and backward to
           their last feature map) (goal ≤ 1.25×); both also vs a kd step with the same teachers;
           and the time to build the cache. Minutes on a CPU: bound it with e.g.
           `python -m harness.bench mate --steps 3 --repeats 3`.

Measurements alternate between the compared sides and report medians, so a noisy machine
shifts both alike. Random images stand in for CIFAR-10 (speed does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from harness.config import precision
from harness.display import make_console


@dataclass
class Row:
    """One measured figure with its goal, e.g. Row("kd", 0.94, "≤", 1.05, "×", "kd step 405 ms ...")."""

    name: str
    value: float
    op: str
    goal: float
    unit: str
    detail: str

    @property
    def met(self) -> bool:
        return {"≥": self.value >= self.goal, "≤": self.value <= self.goal, "<": self.value < self.goal}[self.op]


def random_cifar(n: int, seed: int = 0):
    from harness.data import Cifar

    rng = np.random.default_rng(seed)
    images = lambda k: rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
    labels = lambda k: rng.integers(0, 10, k).astype(np.uint8)
    return Cifar(images(n), labels(n), images(100), labels(100), images(100), labels(100), "random")


def config(method: str, options: dict, precision: str, batch: int) -> dict:
    """A job config as the grid would resolve it: method by grid name, `options` its [methods] tables."""
    from harness.config import schema
    from harness.config.grid import resolve_method

    recipe = {k: v.default for k, v in schema.TRAIN.items() if k != "arch"}
    recipe.update(batch_size=batch, mixed_precision=precision, epochs=1000)
    problems = []
    spec = resolve_method(method, options, "bench", problems)
    assert not problems, problems
    return {"arch": "resnet20", "seed": 0, "teachers": [], "recipe": recipe,
            "method": {"terms": spec["terms"], "params": spec["params"]}}


def harness_trainer(method: str, args, teachers=(), options: dict | None = None):
    from harness.run.train import build_trainer

    return build_trainer(config(method, options or {}, args.precision, args.batch), {"channels_last": True},
                         random_cifar(args.steps * args.batch), list(teachers))


def saved_teacher(arch: str) -> tuple[str, str]:
    """(arch, path) of a randomly initialised teacher checkpoint (speed does not need a trained one)."""
    from harness.models import checkpoint
    from harness.models import build_model

    path = Path(tempfile.mkdtemp()) / f"{arch}.pt"
    checkpoint.save_weights(path, arch, build_model(arch))
    return arch, str(path)


def time_epochs(trainer, repeats: int) -> Callable[[], float]:
    """A callable timing one harness epoch (args.steps steps), seconds per step."""
    from harness.run.train import train_epoch

    epoch = iter(range(10**6))
    steps = trainer.data.steps_per_epoch(trainer.recipe["batch_size"])
    return lambda: train_epoch(trainer, next(epoch))["epoch_time_s"] / steps


def plain_loop(args, arch: str = "resnet20") -> Callable[[], float]:
    """The reference: what a careful person writes by hand for the same model, batch and precision."""
    from harness.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(arch).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(args.steps * args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (len(x),), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)

    def epoch() -> float:
        start = time.perf_counter()
        for i in range(args.steps):
            xb, yb = x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return (time.perf_counter() - start) / args.steps

    return epoch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(repeats: int, **timers: Callable[[], float]) -> dict[str, float]:
    """Warm each timer up once, then run them in turn `repeats` times; median of each."""
    for timer in timers.values():
        timer()
    samples = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            samples[name].append(timer())
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_step(args) -> list[Row]:
    t = alternate(args.repeats, harness=time_epochs(harness_trainer("ce", args), args.repeats), plain=plain_loop(args))
    ips = {k: args.batch / v for k, v in t.items()}
    return [Row("step", ips["harness"] / ips["plain"], "≥", 0.95, "×",
                f"harness {ips['harness']:.0f} img/s, plain loop {ips['plain']:.0f} img/s")]


def bench_kd(args) -> list[Row]:
    kd = harness_trainer("kd", args, [saved_teacher("resnet110")])
    ce = harness_trainer("ce", args)
    teacher, device = kd.method.teachers[0], kd.data.device
    images = next(kd.data.train_batches(0, 0, args.batch)).images

    def teacher_forward() -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            with torch.inference_mode(), kd.accelerator.autocast():
                teacher(images, features=True)
        sync(device)
        return (time.perf_counter() - start) / args.steps

    t = alternate(args.repeats, kd=time_epochs(kd, args.repeats), student=time_epochs(ce, args.repeats),
                  teacher=teacher_forward)
    ratio = t["kd"] / (t["student"] + t["teacher"])
    return [Row("kd", ratio, "≤", 1.05, "×", f"kd step {1e3 * t['kd']:.0f} ms; student step {1e3 * t['student']:.0f} ms"
                f" + ResNet110 forward {1e3 * t['teacher']:.0f} ms")]


# Issue 3's goals: each method's step time as a multiple of a kd step with the same teacher.
FEATURE_METHODS = {
    "kd+at": ({}, None), "kd+fa+at": ({}, 1.15),
    "cakd intervention": ({"cakd": {"mask": "intervention"}}, 2.0),
    "cakd gradient": ({"cakd": {"mask": "gradient"}}, 1.6),
    "cakd topk": ({"cakd": {"mask": "topk"}}, None),
}


def bench_cakd(args) -> list[Row]:
    teacher = saved_teacher("resnet110")
    timers = {"kd": time_epochs(harness_trainer("kd", args, [teacher]), args.repeats)}
    for label, (options, _) in FEATURE_METHODS.items():
        timers[label] = time_epochs(harness_trainer(label.split()[0], args, [teacher], options), args.repeats)
    t = alternate(args.repeats, **timers)
    return [Row(label, t[label] / t["kd"], "≤", goal or float("inf"), "×",
                f"{1e3 * t[label]:.0f} ms per step vs kd {1e3 * t['kd']:.0f} ms (ResNet110 teacher)")
            for label, (_, goal) in FEATURE_METHODS.items()]


def bench_augment(args) -> list[Row]:
    trainer = harness_trainer("ce", args)
    data, n = trainer.data, trainer.data.n_train

    def augment() -> float:
        gen = torch.Generator(device=data.device).manual_seed(0)
        start = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, n, (args.batch,), device=data.device, generator=gen)
            crops = torch.randint(0, 9, (args.batch, 2), device=data.device, generator=gen)
            data.augment(idx, crops, torch.rand(args.batch, device=data.device, generator=gen) < 0.5)
        sync(data.device)
        return (time.perf_counter() - start) / args.steps

    t = alternate(args.repeats, augment=augment, step=time_epochs(trainer, args.repeats))
    return [Row("augment", t["augment"] / t["step"], "<", 0.03, "×",
                f"augment {1e3 * t['augment']:.2f} ms per batch; training step {1e3 * t['step']:.0f} ms")]


def bench_plan(args) -> list[Row]:
    from harness.config import grid as gridlib

    text = ('name = "bench"\n[teachers.a]\narch = "resnet56"\n[teachers.b]\narch = "resnet110"\n'
            '[grid]\nmethod = ["ce", "kd"]\nseed = [%s]\nteacher_set = [["a"], ["b"], ["a", "b"]]\n'
            % ", ".join(map(str, range(2500))))
    path = Path(tempfile.mkdtemp()) / "bench.toml"
    path.write_text(text)
    times, jobs = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        jobs = len(gridlib.plan(gridlib.load(path)).jobs)
        times.append(time.perf_counter() - start)
    return [Row("plan", statistics.median(times), "<", 1.0, " s", f"{jobs} jobs planned")]


def synthetic_results(root: Path, methods=("ce", "kd", "kd+at", "kd+fa", "mate"), seeds=range(50),
                      teacher_sets=("r56", "r110", "dn121", "r56+r110"), epochs: int = 200, corruptions: int = 19,
                      seed: int = 0) -> Path:
    """A results folder shaped like a collected grid's (runs, epochs, confusion, robustness Parquet
    tables; grid.toml), with made-up numbers: what `report` is timed and tested on."""
    import json

    import pyarrow as pa

    from harness.analysis import collect

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    runs, keys = [], []
    bins = [{"count": 10, "confidence": (i + 0.5) / 15, "accuracy": min(1.0, (i + 0.2) / 15)} for i in range(15)]
    for m, method in enumerate(methods):
        for teachers in teacher_sets:
            for s in seeds:
                key = f"{len(runs):016x}"
                keys.append(key)
                runs.append({**{n: None for n in collect.RUNS_SCHEMA.names}, "schema_version": 1, "grid": "synthetic",
                             "job_key": key, "stage": "student", "method": method, "seed": s, "teacher_set": teachers,
                             "arch": "resnet20", "status": "completed", "test_top1": 90 + m * 0.2 + rng.normal(0, 0.3),
                             "best_val_top1": 90.5, "test_top1_at_best_val": 90 + m * 0.2 + rng.normal(0, 0.3),
                             "epochs": epochs, "wall_time_s": 3600.0, "gpu_hours": 1.0, "torch_version": "2.5.1",
                             "device": "cuda:0", "git_commit": "abc1234", "executor": "slurm", "test_ece": 3.0,
                             "test_nll": 0.3, "test_reliability": json.dumps(bins)})
    n = len(keys)
    collect.write_parquet(pa.Table.from_pylist(runs, schema=collect.RUNS_SCHEMA), root / "runs.parquet")
    ep = np.tile(np.arange(1, epochs + 1), n)
    collect.write_parquet(pa.table({"schema_version": pa.array(np.ones(n * epochs, np.int32)),
                                    "job_key": np.repeat(keys, epochs), "epoch": ep,
                                    "val_top1": 90 * (1 - np.exp(-ep / 30)) + rng.normal(0, 0.5, n * epochs)}),
                          root / "epochs.parquet")
    t, p = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    cells = np.where(t == p, 900, 11).ravel()
    collect.write_parquet(pa.table({"schema_version": pa.array(np.ones(n * 100, np.int32)),
                                    "job_key": np.repeat(keys, 100), "true_class": np.tile(t.ravel(), n),
                                    "pred_class": np.tile(p.ravel(), n), "count": np.tile(cells, n)}),
                          root / "confusion.parquet")
    names = [f"corruption_{i:02d}" for i in range(corruptions)]
    per_job = corruptions * 5
    sev = np.tile(np.repeat(np.arange(1, 6), corruptions), n)
    collect.write_parquet(pa.table({"schema_version": pa.array(np.ones(n * per_job, np.int32)),
                                    "job_key": np.repeat(keys, per_job), "corruption": np.tile(names * 5, n),
                                    "severity": sev, "top1": 85 - 8 * sev + rng.normal(0, 1, n * per_job),
                                    "n": np.full(n * per_job, 10000), "corruption_source": ["generated"] * (n * per_job)}),
                          root / "robustness.parquet")
    (root / "grid.toml").write_text('name = "synthetic"\n')
    return root


def bench_report(args) -> list[Row]:
    from harness.analysis import report

    root = synthetic_results(Path(tempfile.mkdtemp()) / "synthetic")
    times = []
    for _ in range(max(1, min(args.repeats, 3))):
        start = time.perf_counter()
        with open("/dev/null", "w") as sink:
            import contextlib
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                report.main([str(root)])
        times.append(time.perf_counter() - start)
    return [Row("report", statistics.median(times), "<", 5.0, " s",
                "python -m harness.report on 1,000 job rows (200 epochs each, confusion, CIFAR-10-C): tables, report.md, 6 PNGs")]


MATE_TEACHERS = ("resnet110", "densenet121", "vgg19_bn")


def bench_mate(args) -> list[Row]:
    """Issue 4: mate with three teachers, cache off and on; the cache build."""
    from harness.run import teacher_cache
    from harness.run.train import build_trainer

    teachers = [saved_teacher(arch) for arch in MATE_TEACHERS]
    cache_root = Path(tempfile.mkdtemp())

    def mate(cache: str):
        cfg = config("mate", {"mate": {"teacher_cache": cache}}, args.precision, args.batch)
        return build_trainer(cfg, {"channels_last": True}, random_cifar(args.steps * args.batch), teachers,
                             cache_root=cache_root)

    ce, kd, off = harness_trainer("ce", args), harness_trainer("kd", args, teachers), mate("off")
    paths = [path for _, path in teachers]
    keys = [teacher_cache.file_sha256(p)[:16] for p in paths]  # what build_trainer keys them by here
    start = time.perf_counter()
    teacher_cache.prepare(cache_root, keys, paths, off.method.teachers, off.data, {}, args.precision,
                          off.accelerator.autocast, batch_size=args.batch, log=lambda line: None)
    sync(off.data.device)
    build, n = time.perf_counter() - start, off.data.n_train
    on = mate("clean")  # finds the cache just built
    batch = next(off.data.train_batches(0, 0, args.batch))

    def teachers_to_last_map() -> float:
        """Each teacher's forward, then the backward of the batch's label logits to its last feature map."""
        start = time.perf_counter()
        for _ in range(args.steps):
            for teacher in off.method.teachers:
                with off.accelerator.autocast():
                    with torch.no_grad():
                        feature = teacher(batch.images, features=True)[1][-1]
                    feature = feature.detach().requires_grad_()
                    logits = teacher.head(feature)
                torch.autograd.grad(logits.gather(1, batch.labels[:, None]).sum(), feature)
        sync(off.data.device)
        return (time.perf_counter() - start) / args.steps

    t = alternate(args.repeats, ce=time_epochs(ce, args.repeats), kd=time_epochs(kd, args.repeats),
                  off=time_epochs(off, args.repeats), on=time_epochs(on, args.repeats), teachers=teachers_to_last_map)
    ms = {k: f"{1e3 * v:.0f} ms" for k, v in t.items()}
    return [
        Row("mate cache on", t["on"] / t["ce"], "≤", 1.4, "×",
            f"{ms['on']} per step = {t['on'] / t['kd']:.2f}× kd step ({ms['kd']}, 3 teachers); ce step {ms['ce']}"),
        Row("mate cache off", t["off"] / (t["ce"] + t["teachers"]), "≤", 1.25, "×",
            f"{ms['off']} per step = {t['off'] / t['ce']:.2f}× ce, {t['off'] / t['kd']:.2f}× kd; student step "
            f"{ms['ce']} + 3 teachers' forward and backward to the last map {ms['teachers']}"),
        Row("mate cache build per 1k images", build / n * 1000, "≤", float("inf"), " s",
            f"3 teachers, first build: {build:.1f} s for {n} images, so ≈ {build / n * 45000 / 60:.1f} min "
            f"for the 45k training split"),
    ]


def bench_slurm(args) -> list[Row]:
    """On a running SLURM (slurm/local-cluster up): queue a 1,000-job grid (held, then cancelled)
    and count sbatch calls and time to all queued; run one small job and time its wrapper, from
    SLURM's start of the task to the first training step (the job log's "training on" line)."""
    from harness.run import job as job_runner
    from harness.data.cache import RawCifar, write_cache
    from harness.launch import main as launch

    folder = Path(tempfile.mkdtemp())
    cifar = random_cifar(1200)
    write_cache(folder / "data", RawCifar(cifar.x_train, cifar.y_train, cifar.x_test[:100], cifar.y_test[:100]), "random")
    grid = folder / "grid.toml"
    grid.write_text(f'name = "bench"\n[data]\nroot = "{folder / "data"}"\nval_size = 100\nlimit_train = 256\n'
                    f'limit_test = 100\n[train]\nepochs = 1\nbatch_size = 64\n[grid]\nmethod = ["ce"]\n'
                    f'seed = {list(range(1000))}\n[cluster]\nexecutor = "slurm"\ncpus_per_task = 1\n')
    start = time.perf_counter()
    assert launch([str(grid), "--out", str(folder / "held"), "--set", "cluster.sbatch_args=['--hold']"]) == 0
    queued_s = time.perf_counter() - start
    records = [job_runner.read_json(p) for p in (folder / "held" / "bench" / "jobs").glob("*/slurm.json")]
    arrays = sorted({r["task_id"].split("_")[0] for r in records})
    subprocess.run(["scancel", *arrays], check=False)
    subprocess.run(["scancel", "--name", "kd-bench-collect"], check=False)
    assert launch([str(grid), "--out", str(folder / "one"), "--set", "grid.seed=[0]"]) == 0
    (job,) = (folder / "one" / "bench" / "jobs").iterdir()
    deadline = time.time() + 300
    while not (job / "result.json").exists() and time.time() < deadline:
        time.sleep(1)
    task = job_runner.read_json(job / "slurm.json")["task_id"]
    started = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "Start", "-j", task], capture_output=True,
                             text=True).stdout.split()[0]
    first_step = next(line[:19] for line in (job / "log.txt").read_text().splitlines() if "training on" in line)
    overhead = (datetime.fromisoformat(first_step.replace(" ", "T")) - datetime.fromisoformat(started)).total_seconds()
    return [Row("slurm queue 1000 jobs", queued_s, "<", 10.0, " s", f"{len(records)} jobs in {len(arrays)} array(s)"),
            Row("slurm sbatch calls", len(arrays) + 1, "≤", 2.0, "", "one array per stage chunk + the collect job"),
            Row("slurm job wrapper", overhead, "<", 5.0, " s", "task start (sacct) → first training step (1 s resolution)")]


def bench_robustness(args, corruptions: int = 3, n: int = 10_000) -> list[Row]:
    """CIFAR-10-C evaluation (blocks read from a cache on disk, copied to the device, classified)
    vs evaluating the clean test set already on the device, ResNet20, images/s (goal ≥ 0.9×)."""
    import json

    from harness.data.corruptions import ALL
    from harness.data.device import Normalize, to_device
    from harness.run.evaluate import predict
    from harness.models import build_model
    from harness.run.robustness import evaluate_corruptions
    from harness.run.train import make_accelerator

    accelerator = make_accelerator(args.precision)
    device = accelerator.device
    model = build_model("resnet20").to(device, memory_format=torch.channels_last).eval()
    normalize, rng = Normalize(device), np.random.default_rng(0)
    clean = to_device(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "cifar10c"
        folder.mkdir()
        np.save(folder / "labels.npy", rng.integers(0, 10, 5 * n).astype(np.uint8))
        names = ALL[:corruptions]
        for name in names:
            np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
        (folder / "manifest.json").write_text(json.dumps({"format": 1, "images_per_severity": n, "corruptions": {
            name: {"source": "random"} for name in names}}))

        def time_clean() -> float:
            sync(device)
            start = time.perf_counter()
            predict(model, clean, normalize, 1000, accelerator.autocast).argmax(1).cpu()
            return (time.perf_counter() - start) / n

        def time_corrupted() -> float:
            rows, seconds = evaluate_corruptions(model, normalize, device, root, list(names), batch_size=1000,
                                                 autocast=accelerator.autocast)
            return seconds / sum(r["n"] for r in rows)

        t = alternate(args.repeats, clean=time_clean, corrupted=time_corrupted)
    ips = {k: 1 / v for k, v in t.items()}
    return [Row("robustness", ips["corrupted"] / ips["clean"], "≥", 0.9, "×",
                f"CIFAR-10-C {ips['corrupted']:.0f} img/s ({corruptions} corruptions × 5 severities × {n}, from disk), "
                f"clean test set {ips['clean']:.0f} img/s")]


def bench_archs(args) -> list[Row]:
    """Training throughput of every architecture of the zoo (a plain loop at the bench's batch and
    precision): what a job's cost is planned from. Large networks are slow on a CPU, so at most 3
    steps × 2 repeats each."""
    from harness.models import ARCHS

    short = argparse.Namespace(**{**vars(args), "steps": min(args.steps, 3)})
    rows = []
    for arch in ARCHS:
        seconds = alternate(min(args.repeats, 2), step=plain_loop(short, arch))["step"]
        rows.append(Row(f"train {arch}", args.batch / seconds, "≥", 0, " img/s",
                        f"{seconds * 1e3:.0f} ms per step of {args.batch}"))
    return rows


BENCHES = {"step": bench_step, "kd": bench_kd, "augment": bench_augment, "plan": bench_plan, "cakd": bench_cakd,
           "mate": bench_mate, "slurm": bench_slurm, "robustness": bench_robustness, "report": bench_report,
           "archs": bench_archs}
ONLY_WHEN_NAMED = {"slurm", "archs"}  # need a cluster, or take long: not part of the default run


def device_name() -> str:
    """What the figures were measured on: the GPU's name, or the CPU's model and vector extension."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 platform.machine())
    return f"CPU {model} ({torch.backends.cpu.get_cpu_capability()})"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", choices=[*BENCHES, []], default=[], metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed repeat (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per side (default 5)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--precision", choices=precision.CHOICES, default="auto",
                        help="autocast precision (default auto: bf16 where the hardware has it natively, else no)")
    args = parser.parse_args(argv)
    args.precision = precision.resolve(args.precision, torch.cuda.is_available())
    console = make_console()
    console.print(f"device: {device_name()}")
    table = Table(title=f"kd-harness speed (batch {args.batch}, {args.precision}, {device_name()}, "
                        f"{torch.get_num_threads()} threads)")
    for column in ("benchmark", "measured", "goal", "met", "detail"):
        table.add_column(column)
    missed = 0
    for name in args.which or [b for b in BENCHES if b not in ONLY_WHEN_NAMED]:
        for row in BENCHES[name](args):
            missed += not row.met
            goal = "–" if row.goal == float("inf") else f"{row.op} {row.goal}{row.unit}"
            table.add_row(row.name, f"{row.value:.3f}{row.unit}", goal, "yes" if row.met else "[red]no[/]", row.detail)
            console.print(f"{row.name}: {row.value:.3f}{row.unit} ({row.detail})")
    console.print(table)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
