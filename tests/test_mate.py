"""MATE-KD (methods.mate): the weighting, the loss terms, the cached maps against on-the-fly maps,
and tiny end-to-end grids with one and three teachers (cache off and on) plus the explain picture."""
from __future__ import annotations

import contextlib
import copy
import json
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from harness.data import Cifar
from harness.data.device import DeviceData
from harness.launch import main as launch
from harness.models import StagedNet
from harness.run import teacher_cache
from methods import Batch, Context, Outputs, build_method
from methods.gradcam import CachedTeacher, class_maps, resample, select
from tests.test_gradcam import Brightness, tiny_net


def mate(student, teachers, caches=None, names=(), **params):
    spec = {"terms": ["mate"], "params": {"mate": params}}
    return build_method(spec, Context(student, teachers, teacher_caches=caches, teacher_names=list(names)))


def run(method, student, x, labels, indices=None, crops=None, flips=None):
    batch = Batch(x, labels, indices, crops, flips)
    teachers = method.teacher_outputs(batch)
    logits, feats = student(x, features=True)
    term = method.terms[-1]
    out = Outputs(logits, feats)
    return term.attribution(batch, out, teachers), method.losses(batch, out, teachers)


def frozen(net):
    return net.eval().requires_grad_(False)


def test_weights_sum_to_one_and_favour_the_teacher_whose_map_equals_the_students():
    student = tiny_net(0)
    teachers = [frozen(tiny_net(1)), frozen(copy.deepcopy(student)), frozen(tiny_net(2))]
    method = mate(student, teachers)
    x, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
    att, _ = run(method, student, x, labels)
    assert att.weights.shape == (16, 3) and att.size == 8
    torch.testing.assert_close(att.weights.sum(1), torch.ones(16))
    torch.testing.assert_close(att.similarity[:, 1], torch.ones(16))  # its map is the student's
    assert (att.weights.argmax(1) == 1).all() and (att.weights[:, 1] > 0.5).all()
    assert ((att.similarity >= 0) & (att.similarity <= 1 + 1e-6)).all()


def test_uniform_gives_equal_weights_and_confidence_follows_the_true_class():
    student = tiny_net(0)
    teachers = [frozen(tiny_net(s)) for s in (1, 2, 3)]
    x, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    att, _ = run(mate(student, teachers, weighting="uniform"), student, x, labels)
    assert torch.equal(att.weights, torch.full((8, 3), 1 / 3))
    att, _ = run(mate(student, teachers, weighting="confidence"), student, x, labels)
    p_true = torch.stack([torch.softmax(t(x), 1)[torch.arange(8), labels] for t in teachers], 1)
    torch.testing.assert_close(att.weights.sum(1), torch.ones(8))
    assert torch.equal(att.weights.argmax(1), p_true.argmax(1))


def test_bad_parameters_and_no_teacher_are_refused():
    with pytest.raises(ValueError, match="weighting"):
        mate(tiny_net(), [frozen(tiny_net(1))], weighting="best")
    with pytest.raises(ValueError, match="tau"):
        mate(tiny_net(), [frozen(tiny_net(1))], tau=0.0)
    with pytest.raises(ValueError, match="at least one teacher"):
        mate(tiny_net(), [])


def test_losses_are_float32_under_autocast_and_the_epoch_summary_resets():
    student = tiny_net(0).train()
    teachers = [frozen(tiny_net(1)), frozen(tiny_net(2))]
    method = mate(student, teachers, names=["r110", "vgg"])
    x, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        att, losses = run(method, student, x, labels)
    assert set(losses) == {"ce", "kd", "cam"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert att.weights.dtype == torch.float32
    summary = method.epoch_summary(None)
    assert set(summary) == {"mate_weight_r110", "mate_weight_vgg", "mate_sim_r110", "mate_sim_vgg"}
    assert summary["mate_weight_r110"] + summary["mate_weight_vgg"] == pytest.approx(1, abs=1e-5)
    assert method.epoch_summary(None) == {}
    assert not any(k.startswith("terms.") and "student" in k for k in method.state_dict())  # teachers/student not saved


def test_the_attribution_term_moves_the_students_parameters():
    student = tiny_net(0).train()
    teachers = [frozen(tiny_net(1)), frozen(tiny_net(2))]
    method = mate(student, teachers, alpha=0.0, beta=1.0, weighting="uniform")
    x, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 5, (16,))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    cams = []
    for _ in range(8):
        _, losses = run(method, student, x, labels)
        opt.zero_grad()
        losses["cam"].backward()
        if not cams:
            assert student.stem[0].weight.grad.abs().sum() > 0  # reaches the first layer
            assert student.fc.weight.grad is None  # the Grad-CAM channel weights are detached
        opt.step()
        cams.append(losses["cam"].item())
    assert cams[-1] < 0.8 * cams[0], cams
    assert not torch.equal(before["stem.0.weight"], student.state_dict()["stem.0.weight"])
    assert all(p.grad is None for t in teachers for p in t.parameters())


# ---------------------------------------------------------------------- cached vs on-the-fly maps

def blob_cifar(n: int = 64, seed: int = 0) -> Cifar:
    """Smooth bright blobs on black, so a translation-equivariant teacher's map is smooth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    centres, sigmas = rng.uniform(6, 26, (n, 2)), rng.uniform(3, 6, n)
    blobs = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / (2 * sigmas[:, None, None] ** 2))
    images = (255 * blobs[..., None] * rng.uniform(0.5, 1, (n, 1, 1, 3))).astype(np.uint8)
    labels = (np.arange(n) % 3).astype(np.uint8)
    return Cifar(images, labels, images[:4], labels[:4], images[:4], labels[:4], "blobs")


def equivariant_teacher() -> StagedNet:
    """Map = per-pixel brightness pooled over 4×4 cells: shifting the image shifts the map."""
    net = StagedNet(Brightness(), [nn.AvgPool2d(4)], [2], [4], 3)
    net.stem.set()
    with torch.no_grad():
        net.fc.weight.copy_(torch.tensor([[1.0, 0.5], [0.5, 1.0], [1.0, 1.0]]))
    return frozen(net)


def cache_of(teacher, data) -> CachedTeacher:
    arrays = teacher_cache.compute(teacher, data, contextlib.nullcontext, batch_size=data.n_train)
    return CachedTeacher(torch.from_numpy(arrays["logits"]), torch.from_numpy(arrays["cams"]), pad=4)


def test_cached_maps_equal_on_the_fly_maps_without_augmentation():
    data = DeviceData(blob_cifar(), torch.device("cpu"))
    teachers = [frozen(tiny_net(1, classes=3)), equivariant_teacher()]
    caches = [cache_of(t, data) for t in teachers]
    batch = data.probe_batch(data.n_train)  # the un-augmented view, all images, as the cache saw them
    with torch.no_grad():
        outs = [t(batch.images, features=True) for t in teachers]
    for t, cache, (logits, feats) in zip(teachers, caches, outs):
        assert torch.equal(cache.logits, logits.half())
        for size in (8, 4):
            fly = resample(select(class_maps(t, feats[-1]).half().float(), batch.labels).relu(), size)
            assert torch.equal(cache.maps(batch.indices, batch.labels, size, 32, batch.crops, batch.flips), fly)
    student = tiny_net(0, classes=3)
    on = mate(student, teachers, caches, teacher_cache="clean")
    off = mate(student, teachers, teacher_cache="off")
    att_on, _ = run(on, student, batch.images, batch.labels, batch.indices, batch.crops, batch.flips)
    att_off, _ = run(off, student, batch.images, batch.labels, batch.indices, batch.crops, batch.flips)
    torch.testing.assert_close(att_on.teachers, att_off.teachers, rtol=0, atol=2e-3)  # fp16 storage
    torch.testing.assert_close(att_on.weights, att_off.weights, rtol=0, atol=2e-2)


def test_kd_with_the_cache_reads_the_clean_logits_and_matches_kd_on_the_clean_view():
    data = DeviceData(blob_cifar(), torch.device("cpu"))
    teachers = [frozen(tiny_net(1, classes=3)), equivariant_teacher()]
    caches = [cache_of(t, data) for t in teachers]
    batch = data.probe_batch(data.n_train)
    spec = lambda cache: {"terms": ["kd"], "params": {"kd": {"teacher_cache": cache}}}
    on = build_method(spec("clean"), Context(tiny_net(0, classes=3), teachers, teacher_caches=caches))
    off = build_method(spec("off"), Context(tiny_net(0, classes=3), teachers))
    supplied = on.teacher_outputs(batch)
    assert [o.features for o in supplied] == [[], []]
    for out, cache in zip(supplied, caches):
        assert torch.equal(out.logits, cache.logits[batch.indices])
    ran = off.teacher_outputs(batch)
    student = Outputs(torch.randn(len(batch.labels), 3), [])
    torch.testing.assert_close(on.losses(batch, student, supplied)["kd"], off.losses(batch, student, ran)["kd"],
                               rtol=0, atol=1e-3)  # fp16 storage of the cached logits
    with pytest.raises(RuntimeError, match="kd: teacher_cache = 'clean' but the harness handed no teacher cache"):
        build_method(spec("clean"), Context(tiny_net(0, classes=3), teachers)).teacher_outputs(batch)


def test_cached_maps_follow_crops_and_flips_within_interpolation_tolerance():
    data = DeviceData(blob_cifar(), torch.device("cpu"))
    teacher = equivariant_teacher()
    cache = cache_of(teacher, data)
    batch = next(data.train_batches(seed=0, epoch=0, batch_size=data.n_train))
    assert (batch.crops != 4).any() and batch.flips.any() and (~batch.flips).any()
    with torch.no_grad():
        _, feats = teacher(batch.images, features=True)
    for size in (8, 4):
        fly = resample(select(class_maps(teacher, feats[-1]), batch.labels).relu(), size)
        cached = cache.maps(batch.indices, batch.labels, size, 32, batch.crops, batch.flips)
        unmoved = cache.maps(batch.indices, batch.labels, size, 32, None, None)
        cos = lambda a, b: torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))  # noqa: E731
        err = (cached - fly).flatten(1).abs().amax(1) / fly.flatten(1).amax(1)  # worst cell, relative to the peak
        # measured: cosine ≥ 0.985 (mean 0.996), worst cell ≤ 0.27 of the peak (mean 0.11); the
        # map of the view is a box average at shifted cells, the cached one a bilinear sample of
        # box averages: they differ by the blob's curvature within a cell
        assert cos(cached, fly).min() > 0.98 and cos(cached, fly).mean() > 0.99, size
        assert err.max() < 0.35 and err.mean() < 0.15, size
        assert cos(unmoved, fly).mean() < 0.7  # without the mapping they would not agree at all


# ---------------------------------------------------------------------- end to end

MATE_GRID = """
name = "tiny"
[data]
root = "{root}"
val_size = 100
limit_train = 100
limit_test = 100
[train]
arch = "resnet20"
epochs = 2
batch_size = 50
lr = 0.05
schedule = "cosine"
eval_batch_size = 200
[teachers.r20]
arch = "resnet20"
seed = 1
epochs = 1
[teachers.r20b]
arch = "resnet20"
seed = 2
epochs = 1
[teachers.vgg]
arch = "vgg19_bn"
epochs = 1
batch_size = 100
[grid]
method = ["mate", "mate_cached"]
seed = [0]
teacher_set = [["r20"], ["r20", "r20b", "vgg"]]
[methods.mate_cached]
terms = ["mate"]
teacher_cache = "clean"
[cluster]
executor = "debug"
"""


def test_mate_with_one_and_three_teachers_cache_off_and_on_end_to_end(tmp_path, cifar_root, capsys):
    grid, out = tmp_path / "grid.toml", tmp_path / "out"
    grid.write_text(textwrap.dedent(MATE_GRID).format(root=cifar_root))
    assert launch([str(grid), "--out", str(out)]) == 0
    root = out / "tiny"
    runs = pq.read_table(root / "runs.parquet").to_pylist()
    epochs = pq.read_table(root / "epochs.parquet").to_pylist()
    students = [r for r in runs if r["stage"] == "student"]
    assert sorted((r["method"], r["teacher_set"]) for r in students) == [
        ("mate", "r20"), ("mate", "r20+r20b+vgg"), ("mate_cached", "r20"), ("mate_cached", "r20+r20b+vgg")]
    assert all(r["status"] == "completed" for r in runs)
    for r in students:
        rows = [e for e in epochs if e["job_key"] == r["job_key"]]
        assert len(rows) == 2
        names = r["teacher_set"].split("+")
        for e in rows:
            assert sum(e[f"mate_weight_{n}"] for n in names) == pytest.approx(1, abs=1e-4)
            assert all(0 <= e[f"mate_sim_{n}"] <= 1 for n in names)
            assert e["loss_kd"] > 0 and e["loss_cam"] > 0 and e["loss_ce"] > 0
    # one cache per teacher, shared by both cached jobs, each with its manifest
    caches = sorted(p for p in (root / "teacher_cache").iterdir() if p.is_dir())
    assert len(caches) == 3 and all((p / "manifest.json").is_file() for p in caches)
    shapes = sorted(json.loads((p / "manifest.json").read_text())["files"]["cams"]["shape"] for p in caches)
    assert shapes == [[100, 10, 4, 4], [100, 10, 8, 8], [100, 10, 8, 8]]

    from harness.explain import main as explain

    three = next(r for r in students if r["method"] == "mate_cached" and "vgg" in r["teacher_set"])
    png = tmp_path / "explain.png"
    assert explain([str(root / "jobs" / three["job_key"]), "--images", "4", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_answers_help():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-m", "harness.explain", "--help"], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python -m harness.explain" in out.stdout
