"""Pipeline timings around the step: augmenting a batch, planning a grid, the report, CIFAR-10-C evaluation."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness.bench.timing import Row, alternate, timer
from harness.bench.workloads import harness_trainer, time_epochs


def bench_augment(args) -> list[Row]:
    """Augmenting one batch vs one ResNet20 training step (goal < 3 %)."""
    trainer = harness_trainer("ce", args)
    data, n = trainer.data, trainer.data.n_train
    gen = torch.Generator(device=data.device).manual_seed(0)

    def augment() -> None:
        idx = torch.randint(0, n, (args.batch,), device=data.device, generator=gen)
        crops = torch.randint(0, 9, (args.batch, 2), device=data.device, generator=gen)
        data.augment(idx, crops, torch.rand(args.batch, device=data.device, generator=gen) < 0.5)

    t = alternate(args.repeats, augment=timer(augment, args.steps, data.device), step=time_epochs(trainer))
    return [Row("augment", t["augment"] / t["step"], "<", 0.03, "×",
                f"augment {1e3 * t['augment']:.2f} ms per batch; training step {1e3 * t['step']:.0f} ms")]


def bench_plan(args) -> list[Row]:
    """Planning a 10,000-job grid from its file: read, validate, expand, key (goal < 1 s)."""
    from harness.config import grid as gridlib

    text = ('name = "bench"\n[teachers.a]\narch = "resnet56"\n[teachers.b]\narch = "resnet110"\n'
            '[grid]\nmethod = ["ce", "kd"]\nseed = [%s]\nteacher_set = [["a"], ["b"], ["a", "b"]]\n'
            % ", ".join(map(str, range(2500))))
    path = Path(tempfile.mkdtemp()) / "bench.toml"
    path.write_text(text)
    jobs = [0]

    def plan() -> None:
        jobs[0] = len(gridlib.plan(gridlib.load(path)).jobs)

    seconds = alternate(args.repeats, warm_up=False, plan=timer(plan))["plan"]
    return [Row("plan", seconds, "<", 1.0, " s", f"{jobs[0]} jobs planned")]


def bench_report(args) -> list[Row]:
    """`python -m harness.report` on a synthetic 1,000-job results folder (goal < 5 s)."""
    from harness.analysis import report
    from harness.analysis.synthetic import synthetic_results

    root = synthetic_results(Path(tempfile.mkdtemp()) / "synthetic")

    def quiet_report() -> None:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            report.main([str(root)])

    seconds = alternate(max(1, min(args.repeats, 3)), warm_up=False, report=timer(quiet_report))["report"]
    return [Row("report", seconds, "<", 5.0, " s",
                "python -m harness.report on 1,000 job rows (200 epochs each, confusion, CIFAR-10-C): tables, report.md, 6 PNGs")]


def bench_robustness(args, corruptions: int = 3, n: int = 10_000) -> list[Row]:
    """CIFAR-10-C evaluation (blocks read from a cache on disk, copied to the device, classified)
    vs evaluating the clean test set already on the device, ResNet20, images/s (goal ≥ 0.9×)."""
    from harness.data.corruptions import ALL
    from harness.data.device import Normalize, to_device
    from harness.models import build_model
    from harness.run.evaluate import predict
    from harness.run.robustness import evaluate_corruptions
    from harness.run.train import make_accelerator

    accelerator = make_accelerator(args.precision)
    device = accelerator.device
    model = build_model("resnet20").to(device, memory_format=torch.channels_last).eval()
    normalize, rng = Normalize(device), np.random.default_rng(0)
    clean = to_device(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), device)
    names = ALL[:corruptions]
    clean_pass = timer(lambda: predict(model, clean, normalize, 1000, accelerator.autocast).argmax(1).cpu(),
                       device=device)
    with tempfile.TemporaryDirectory() as root:
        write_cifar10c(Path(root) / "cifar10c", names, n, rng)

        def corrupted() -> float:  # seconds per image, as the evaluation measures itself
            rows, seconds = evaluate_corruptions(model, normalize, device, root, list(names), batch_size=1000,
                                                 autocast=accelerator.autocast)
            return seconds / sum(r["n"] for r in rows)

        t = alternate(args.repeats, clean=lambda: clean_pass() / n, corrupted=corrupted)
    ips = {k: 1 / v for k, v in t.items()}
    return [Row("robustness", ips["corrupted"] / ips["clean"], "≥", 0.9, "×",
                f"CIFAR-10-C {ips['corrupted']:.0f} img/s ({corruptions} corruptions × 5 severities × {n}, from disk), "
                f"clean test set {ips['clean']:.0f} img/s")]


def write_cifar10c(folder: Path, names, n: int, rng: np.random.Generator) -> None:
    """A CIFAR-10-C cache of random images: `n` per severity for each corruption in `names`."""
    folder.mkdir()
    np.save(folder / "labels.npy", rng.integers(0, 10, 5 * n).astype(np.uint8))
    for name in names:
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "images_per_severity": n, "corruptions": {
        name: {"source": "random"} for name in names}}))
