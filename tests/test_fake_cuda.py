"""Device placement without a GPU: the metrics, the data pipeline, the teacher cache and the
Grad-CAM / MATE forward paths run on fake CUDA tensors.

PyTorch's fake tensors (`FakeTensorMode`) carry shapes, dtypes and devices but no values. An
operation that mixes a CPU tensor with a CUDA one raises as it would on a GPU, so a tensor created
without `device=` on a path that meets the device's data is caught here. With a shape environment,
data-dependent shapes (`bincount`, boolean masks) go through, but values cannot be read: turning
`.item()` or `.tolist()` into Python numbers raises `GuardOnDataDependentSymNode`, and `.numpy()`
refuses fake tensors. So each test runs the device work and checks where its results live; where
a function ends by reading numbers, the test asserts that the read is the only thing that fails.

What fake tensors cannot check, left to tests/test_cuda.py on a real GPU: indexing a CPU tensor
with CUDA indices (passes here, fails on a GPU), CUDA generators and pinned memory (they need a
driver), and backward passes (they need a device context), hence the training step itself.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode, ShapeEnv

from harness.run import evaluate, teacher_cache
from harness.data import Cifar
from harness.data.device import PAD, DeviceData, Normalize
from harness.models import build_model
from methods import Batch, Context, Outputs, build_method
from methods.gradcam import CachedTeacher, class_maps, gradcam, normalize, resample

CUDA = torch.device("cuda")
N_TRAIN, CLASSES = 64, 10


@pytest.fixture
def fake_cuda():
    """Everything created inside is a fake tensor; CUDA ones need no GPU."""
    with FakeTensorMode(shape_env=ShapeEnv()):
        yield


@contextlib.contextmanager
def cuda_autocast(dtype=torch.float16):
    """CUDA autocast over fake tensors. `torch.autocast("cuda")` switches itself off where no GPU
    is present; the autocast state it would set works on fake CUDA tensors all the same."""
    enabled, before = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", enabled)
        torch.set_autocast_dtype("cuda", before)
        torch.clear_autocast_cache()


def on_cuda(build, *args, **kwargs):
    """`build(...)` with its parameters and buffers created on (fake) CUDA, inside `fake_cuda`
    (moving a module there afterwards cannot work: `.to` would swap CPU parameters for fakes)."""
    with torch.device(CUDA):
        return build(*args, **kwargs)


def cuda_model(arch: str = "resnet20") -> torch.nn.Module:
    return on_cuda(build_model, arch).eval()


def frozen_cuda_model(arch: str = "resnet20") -> torch.nn.Module:
    return cuda_model(arch).requires_grad_(False)


def tiny_cifar() -> Cifar:
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = lambda n: rng.integers(0, CLASSES, n).astype(np.uint8)
    return Cifar(images(N_TRAIN), labels(N_TRAIN), images(16), labels(16), images(24), labels(24), "random")


def fake_probs(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, CLASSES, device=CUDA).softmax(1), torch.randint(0, CLASSES, (n,), device=CUDA)


def epoch_draws_without_generator(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What `DeviceData.epoch_draws` returns, drawn without a (real) CUDA generator."""
    return (torch.randperm(n, device=CUDA), torch.randint(0, 2 * PAD + 1, (n, 2), device=CUDA),
            torch.rand(n, device=CUDA) < 0.5)


def assert_on_cuda(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        assert tensor.device.type == "cuda", tensor.device


def assert_only_the_read_fails(fn, *args, **kwargs) -> None:
    """`fn` does its device work, then fails where it turns device values into Python numbers."""
    with pytest.raises(GuardOnDataDependentSymNode):
        fn(*args, **kwargs)


# ---------------------------------------------------------------------- the tool itself


def test_fake_cuda_raises_on_cross_device_operations_and_on_value_reads(fake_cuda):
    values, index = torch.rand(8, device=CUDA), torch.randint(0, 4, (8,), device=CUDA)
    with pytest.raises(RuntimeError, match="same device"):  # the accumulator of a CPU-made tensor
        torch.zeros(4).index_add_(0, index, values)
    with pytest.raises(RuntimeError, match="same device|two devices"):
        torch.zeros(8) + values
    assert_on_cuda(torch.zeros(4, device=CUDA).index_add_(0, index, values), torch.bincount(index, minlength=4))
    assert_only_the_read_fails(lambda: int(values.sum().item()))
    with pytest.raises(RuntimeError, match="numpy"):
        values.cpu().numpy()


# ---------------------------------------------------------------------- evaluation and metrics


def test_reliability_on_cuda_fails_only_where_it_reads_the_numbers(fake_cuda):
    """Every GPU job used to fail here at its end: CPU accumulators indexed by CUDA tensors."""
    probs, labels = fake_probs()
    assert_only_the_read_fails(evaluate.reliability, probs, labels)
    assert_only_the_read_fails(evaluate.ece, probs, labels)


def test_reliability_sums_stay_on_the_device(fake_cuda):
    probs, labels = fake_probs()
    sums = evaluate.reliability_sums(probs, labels)
    assert_on_cuda(sums)
    assert sums.shape == (3, evaluate.ECE_BINS) and sums.dtype == torch.float64


def test_metric_tensors_with_teachers_stay_on_the_device(fake_cuda):
    probs, labels = fake_probs()
    teachers = [torch.randn(len(labels), CLASSES, device=CUDA).half() for _ in range(3)]
    tensors = evaluate.metric_tensors(probs.log(), labels, teachers)
    assert set(tensors) == {"nll", "reliability", "confusion", "class_totals", "class_right",
                            "agreement_teachers", "agreement_ensemble"}
    assert_on_cuda(*tensors.values())
    assert tensors["agreement_teachers"].shape == (3,)
    assert_on_cuda(evaluate.confusion_counts(labels, labels, CLASSES), evaluate.agreement_fraction(probs, labels))


def test_predict_on_uint8_images_on_the_device_under_autocast(fake_cuda):
    images = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8, device=CUDA)
    with cuda_autocast():
        logits = evaluate.predict(cuda_model(), images, Normalize(CUDA), 16, cuda_autocast)
    assert_on_cuda(logits)
    assert logits.shape == (40, CLASSES) and logits.dtype == torch.float32


def test_job_metrics_do_the_device_work_before_reading_anything(fake_cuda, tmp_path):
    from types import SimpleNamespace

    data = DeviceData(tiny_cifar(), CUDA)
    trainer = SimpleNamespace(model=cuda_model(), data=data, eval_batch_size=16,
                              accelerator=SimpleNamespace(autocast=cuda_autocast),
                              method=SimpleNamespace(teachers=[frozen_cuda_model(), frozen_cuda_model("vgg19_bn")]))
    assert_only_the_read_fails(evaluate.job_metrics, trainer, tmp_path, ["a", "b"])
    assert not (tmp_path / "confusion.json").exists()  # written after the read


# ---------------------------------------------------------------------- the data pipeline


def test_the_data_set_and_its_normaliser_live_on_the_device(fake_cuda):
    data = DeviceData(tiny_cifar(), CUDA)
    assert_on_cuda(data.train_padded, data.train_labels, *data.val, *data.test, data.offsets,
                   data.normalize.scale, data.normalize.shift)
    assert data.train_padded.shape == (N_TRAIN, 32 + 2 * PAD, 32 + 2 * PAD, 3)
    assert_on_cuda(data.normalize(data.test[0]))


def test_augmented_batches_of_every_rank_are_gathered_on_the_device(fake_cuda):
    data = DeviceData(tiny_cifar(), CUDA)
    draws = epoch_draws_without_generator(N_TRAIN)
    for rank in (0, 1):
        batches = list(data.batches(*draws, batch_size=20, rank=rank, world_size=2))
        assert len(batches) == 3
        for batch in batches:
            assert_on_cuda(batch.images, batch.labels, batch.indices, batch.crops, batch.flips)
            assert batch.images.shape == (10, 3, 32, 32) and batch.images.dtype == torch.float32
            assert batch.images.is_contiguous(memory_format=torch.channels_last)


def test_probe_and_clean_batches_are_on_the_device(fake_cuda):
    data = DeviceData(tiny_cifar(), CUDA)
    for batch in (data.probe_batch(), data.clean_batch(40, 100)):
        assert_on_cuda(batch.images, batch.labels, batch.indices, batch.crops, batch.flips)
    assert len(data.clean_batch(40, 100).indices) == N_TRAIN - 40


# ---------------------------------------------------------------------- the teacher cache


def test_the_teacher_cache_is_computed_on_the_device(fake_cuda):
    data = DeviceData(tiny_cifar(), CUDA)
    outputs = list(teacher_cache.device_outputs(frozen_cuda_model(), data, cuda_autocast, batch_size=40))
    assert [start for start, _, _ in outputs] == [0, 40]
    for _, logits, cams in outputs:
        assert_on_cuda(logits, cams)
        assert cams.shape[1:] == (CLASSES, 8, 8) and cams.dtype == torch.float32  # maps in float32 under autocast
    with pytest.raises(RuntimeError, match="numpy"):  # the copy to the host arrays: the only read
        teacher_cache.compute(frozen_cuda_model(), data, cuda_autocast, batch_size=40)


def test_a_cache_read_from_disk_is_loaded_onto_the_device(tmp_path):
    folder = tmp_path / "cache"
    arrays = {"logits": np.zeros((N_TRAIN, CLASSES), np.float16), "cams": np.ones((N_TRAIN, CLASSES, 8, 8), np.float16)}
    teacher_cache.ensure(folder, {"format": teacher_cache.FORMAT}, lambda: arrays)
    with FakeTensorMode(shape_env=ShapeEnv()):
        cache = teacher_cache.load(folder, CUDA)
        assert_on_cuda(cache.logits, cache.cams)
        indices, crops, flips = epoch_draws_without_generator(N_TRAIN)
        maps = cache.maps(indices[:16], torch.randint(0, CLASSES, (16,), device=CUDA), 4, 32, crops[:16], flips[:16])
        assert_on_cuda(maps)
        assert maps.shape == (16, 4, 4)


# ---------------------------------------------------------------------- Grad-CAM and MATE


def test_gradcam_maps_and_their_resampling_stay_on_the_device(fake_cuda):
    model = cuda_model()
    feature = torch.randn(6, 64, 8, 8, device=CUDA)
    classes = torch.randint(0, CLASSES, (6,), device=CUDA)
    shifts, flips = torch.randint(-PAD, PAD + 1, (6, 2), device=CUDA), torch.rand(6, device=CUDA) < 0.5
    with cuda_autocast():
        maps = class_maps(model, feature.half())
        cam = gradcam(model, feature, classes)
        moved = resample(cam, 4, 32, shifts, flips)
        flat = normalize(moved)
    assert_on_cuda(maps, cam, moved, resample(cam, 16), flat)
    assert maps.dtype == moved.dtype == flat.dtype == torch.float32 and moved.shape == (6, 4, 4)


def fake_cache(map_size: int) -> CachedTeacher:
    return CachedTeacher(logits=torch.randn(N_TRAIN, CLASSES, device=CUDA).half(),
                         cams=torch.randn(N_TRAIN, CLASSES, map_size, map_size, device=CUDA).half(), pad=PAD)


@pytest.mark.parametrize("cache, weighting", [("off", "gradcam"), ("clean", "gradcam"), ("clean", "confidence")])
def test_mate_losses_and_weights_are_computed_on_the_device(fake_cuda, cache, weighting):
    data = DeviceData(tiny_cifar(), CUDA)
    student, teachers = cuda_model(), [frozen_cuda_model(), frozen_cuda_model("vgg19_bn")]
    caches = [fake_cache(8), fake_cache(4)] if cache == "clean" else None
    spec = {"terms": ["mate"], "params": {"mate": {"teacher_cache": cache, "weighting": weighting, "cam_class": "pred"}}}
    method = on_cuda(build_method, spec, Context(student, teachers, teacher_caches=caches, teacher_names=["r", "v"]))
    batch = next(data.batches(*epoch_draws_without_generator(N_TRAIN), batch_size=16))
    with cuda_autocast():
        teacher_outs = method.teacher_outputs(batch)
        out = Outputs(*student(batch.images, features=True))
        att = method.terms[-1].attribution(batch, out, teacher_outs)
        losses = method.losses(batch, out, teacher_outs)
    assert_on_cuda(*(t.logits for t in teacher_outs), att.student, att.teachers, att.similarity, att.weights)
    assert att.weights.shape == (16, 2) and att.size == 4
    assert set(losses) == {"ce", "kd", "cam"}
    assert_on_cuda(*losses.values(), *method.terms[-1]._sums.values())
    assert all(loss.dtype == torch.float32 for loss in losses.values())


@pytest.mark.parametrize("mask", ["intervention", "topk"])
def test_the_causal_mask_forward_is_computed_on_the_device(fake_cuda, mask):
    student, teachers = cuda_model(), [frozen_cuda_model()]
    spec = {"terms": ["kd", "fa", "at"], "params": {t: {"mask": mask} for t in ("fa", "at")}}
    method = on_cuda(build_method, spec, Context(student, teachers))
    batch = Batch(torch.randn(8, 3, 32, 32, device=CUDA), torch.randint(0, CLASSES, (8,), device=CUDA))
    with cuda_autocast():
        teacher_outs = method.teacher_outputs(batch)
        losses = method.losses(batch, Outputs(*student(batch.images, features=True)), teacher_outs)
    assert_on_cuda(*losses.values())
