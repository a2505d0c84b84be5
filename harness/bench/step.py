"""Training-step micro-benchmarks: harness vs plain loop; kd, feature-method and MATE-KD steps vs their parts."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from harness.bench.timing import Row, alternate, timer
from harness.bench.workloads import harness_trainer, plain_loop, saved_teacher, time_epochs


def bench_step(args) -> list[Row]:
    """Harness ce step vs the hand-written loop, images/s (goal ≥ 0.95×)."""
    t = alternate(args.repeats, harness=time_epochs(harness_trainer("ce", args)), plain=plain_loop(args))
    ips = {k: args.batch / v for k, v in t.items()}
    return [Row("step", ips["harness"] / ips["plain"], "≥", 0.95, "×",
                f"harness {ips['harness']:.0f} img/s, plain loop {ips['plain']:.0f} img/s")]


def bench_kd(args) -> list[Row]:
    """KD step (ResNet110 teacher) vs a student step plus the teacher's inference forward (goal ≤ 1.05×)."""
    kd = harness_trainer("kd", args, [saved_teacher("resnet110")])
    ce = harness_trainer("ce", args)
    teacher = kd.method.teachers[0]
    images = next(kd.data.train_batches(0, 0, args.batch)).images

    def teacher_forward() -> None:
        with torch.inference_mode(), kd.accelerator.autocast():
            teacher(images, features=True)

    t = alternate(args.repeats, kd=time_epochs(kd), student=time_epochs(ce),
                  teacher=timer(teacher_forward, args.steps, kd.data.device))
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
    """Each feature method's step vs a kd step with the same ResNet110 teacher."""
    teacher = saved_teacher("resnet110")
    timers = {"kd": time_epochs(harness_trainer("kd", args, [teacher]))}
    for label, (options, _) in FEATURE_METHODS.items():
        timers[label] = time_epochs(harness_trainer(label.split()[0], args, [teacher], options))
    t = alternate(args.repeats, **timers)
    return [Row(label, t[label] / t["kd"], "≤", goal or float("inf"), "×",
                f"{1e3 * t[label]:.0f} ms per step vs kd {1e3 * t['kd']:.0f} ms (ResNet110 teacher)")
            for label, (_, goal) in FEATURE_METHODS.items()]


MATE_TEACHERS = ("resnet110", "densenet121", "vgg19_bn")


def bench_mate(args) -> list[Row]:
    """Issue 4: mate with three teachers, cache off and on; the cache build."""
    teachers = [saved_teacher(arch) for arch in MATE_TEACHERS]
    cache_root = Path(tempfile.mkdtemp())
    mate = lambda cache: harness_trainer("mate", args, teachers, {"mate": {"teacher_cache": cache}},
                                         cache_root=cache_root)
    ce, kd, off = harness_trainer("ce", args), harness_trainer("kd", args, teachers), mate("off")
    build = timer(lambda: build_teacher_cache(off, teachers, cache_root, args), device=off.data.device)()
    on = mate("clean")  # finds the cache just built
    t = alternate(args.repeats, ce=time_epochs(ce), kd=time_epochs(kd), off=time_epochs(off), on=time_epochs(on),
                  teachers=timer(teachers_to_last_map(off, args.batch), args.steps, off.data.device))
    return mate_rows(t, build, off.data.n_train)


def build_teacher_cache(trainer, teachers, cache_root: Path, args) -> None:
    """The first build of the teachers' cache, keyed as build_trainer keys it."""
    from harness.run import teacher_cache

    paths = [path for _, path in teachers]
    keys = [teacher_cache.file_sha256(p)[:16] for p in paths]
    teacher_cache.prepare(cache_root, keys, paths, trainer.method.teachers, trainer.data, {}, args.precision,
                          trainer.accelerator.autocast, batch_size=args.batch, log=lambda line: None)


def teachers_to_last_map(trainer, batch_size: int):
    """Each teacher's forward, then the backward of the batch's label logits to its last feature map."""
    batch = next(trainer.data.train_batches(0, 0, batch_size))

    def work() -> None:
        for teacher in trainer.method.teachers:
            with trainer.accelerator.autocast():
                with torch.no_grad():
                    feature = teacher(batch.images, features=True)[1][-1]
                feature = feature.detach().requires_grad_()
                logits = teacher.head(feature)
            torch.autograd.grad(logits.gather(1, batch.labels[:, None]).sum(), feature)

    return work


def mate_rows(t: dict[str, float], build: float, n: int) -> list[Row]:
    """The mate figures from the step medians `t`, and the cache build of `n` images taking `build` s."""
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
