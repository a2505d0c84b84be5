"""`dkd` (Decoupled KD) against the paper's formula written out here in float64 loops, its warm-up,
its logit standardisation, composition, and a grid with `dkd` and `dist` that plans and trains."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.config import grid as gridlib
from harness.config.grid import GridError
from methods import TERMS, Batch, Context, Outputs, Progress, build_method
from methods.dkd import dkd_losses


def softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def paper_dkd(student, teachers, labels, T):
    """(TCKD, NCKD) per the paper: p = softmax(z/T) (the teachers' mean), b = (p_y, 1 − p_y),
    p̂ = the non-target probabilities renormalised; T² · KL, averaged over the batch."""
    student, teachers = np.asarray(student, np.float64), [np.asarray(t, np.float64) for t in teachers]
    tckd = nckd = 0.0
    for i, y in enumerate(labels):
        p_s = softmax(student[i] / T)
        p_t = np.mean([softmax(t[i] / T) for t in teachers], axis=0)
        others = [j for j in range(len(p_s)) if j != y]
        tckd += kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        nckd += kl([p_t[j] / (1 - p_t[y]) for j in others], [p_s[j] / (1 - p_s[y]) for j in others])
    n = len(labels)
    return T**2 * tckd / n, T**2 * nckd / n


def zscore_np(z, eps=1e-7):
    """The official standardisation: unbiased std over the classes, eps added to it."""
    z = np.asarray(z, np.float64)
    return (z - z.mean(1, keepdims=True)) / (eps + z.std(1, ddof=1, keepdims=True))


def dkd_method(teachers=1, **params):
    return build_method({"terms": ["dkd"], "params": {"dkd": params}},
                        Context(torch.nn.Identity(), [torch.nn.Identity()] * teachers))


@pytest.fixture
def data():
    torch.manual_seed(0)
    return torch.randn(6, 10) * 3, [torch.randn(6, 10) * 3, torch.randn(6, 10) * 3], torch.tensor([0, 3, 9, 3, 5, 1])


def test_tckd_and_nckd_match_the_paper(data):
    student, teachers, labels = data
    for T in (1.0, 4.0):
        got = dkd_losses(student, teachers[:1], labels, T)
        expected = paper_dkd(student.numpy(), [teachers[0].numpy()], labels.tolist(), T)
        assert [g.item() for g in got] == pytest.approx(expected, rel=1e-5)


def test_together_they_are_kd_with_the_non_target_part_weighted_by_one_minus_p_target(data):
    student, teachers, labels = data  # the paper's decomposition, one sample at a time
    for i in range(len(labels)):
        tckd, nckd = dkd_losses(student[i:i + 1], [teachers[0][i:i + 1]], labels[i:i + 1], 4.0)
        p_t = softmax(teachers[0][i].double().numpy() / 4)
        kd = 16 * kl(p_t, softmax(student[i].double().numpy() / 4))
        assert tckd.item() + (1 - p_t[labels[i]]) * nckd.item() == pytest.approx(kd, rel=1e-5)


def test_several_teachers_are_dkd_of_their_mean_probabilities(data):
    student, teachers, labels = data
    got = dkd_losses(student, teachers, labels, 4.0)
    expected = paper_dkd(student.numpy(), [t.numpy() for t in teachers], labels.tolist(), 4.0)
    assert [g.item() for g in got] == pytest.approx(expected, rel=1e-5)


def test_a_confident_teacher_gives_finite_losses():
    student, teacher, labels = torch.zeros(2, 5), torch.tensor([[300.0, 0, 0, 0, 0]] * 2), torch.tensor([0, 0])
    tckd, nckd = dkd_losses(student, [teacher, teacher], labels, 1.0)  # 1 − p_y underflows to 0 in float32
    assert torch.isfinite(tckd) and torch.isfinite(nckd)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)  # the teachers' non-target classes: uniform, as the student's


def test_the_method_weights_ce_tckd_and_nckd(data):
    student, teachers, labels = data
    method = dkd_method(alpha=0.5, beta=3.0, temperature=2.0, ce_weight=0.7, warmup_epochs=0.0)
    losses = method.losses(Batch(torch.zeros(6), labels), Outputs(student, []), [Outputs(teachers[0], [])])
    tckd, nckd = paper_dkd(student.numpy(), [teachers[0].numpy()], labels.tolist(), 2.0)
    ce = torch.nn.functional.cross_entropy(student, labels).item()
    assert set(losses) == {"ce", "tckd", "nckd"}
    assert [losses[k].item() for k in ("ce", "tckd", "nckd")] == pytest.approx([0.7 * ce, 0.5 * tckd, 3 * nckd], rel=1e-5)


def test_defaults_are_the_official_cifar100_ones():
    assert TERMS["dkd"].defaults == {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20.0,
                                     "ce_weight": 1.0, "standardize": False, "teacher_cache": "off"}
    assert TERMS["dkd"].supervises and TERMS["dkd"].uses_teachers


@pytest.mark.parametrize("progress, ramp", [
    (Progress(0, 0, steps_per_epoch=4, epochs=30), 0.0),
    (Progress(0, 1, steps_per_epoch=4, epochs=30), 0.25 / 20),
    (Progress(5, 2, steps_per_epoch=4, epochs=30), 5.5 / 20),
    (Progress(19, 3, steps_per_epoch=4, epochs=30), 19.75 / 20),
    (Progress(20, 0, steps_per_epoch=4, epochs=30), 1.0),
    (Progress(29, 3, steps_per_epoch=4, epochs=30), 1.0),
])
def test_the_distillation_terms_warm_up_linearly_over_20_epochs(data, progress, ramp):
    student, teachers, labels = data
    method = dkd_method()
    method.progress = progress  # as the trainer sets it
    losses = method.losses(Batch(torch.zeros(6), labels), Outputs(student, []), [Outputs(teachers[0], [])])
    tckd, nckd = paper_dkd(student.numpy(), [teachers[0].numpy()], labels.tolist(), 4.0)
    assert losses["tckd"].item() == pytest.approx(ramp * tckd, rel=1e-5, abs=1e-12)
    assert losses["nckd"].item() == pytest.approx(ramp * 8 * nckd, rel=1e-5, abs=1e-12)
    assert losses["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(student, labels).item(), rel=1e-6)


def test_no_warm_up_at_zero_epochs(data):
    student, teachers, labels = data
    method = dkd_method(warmup_epochs=0.0)
    losses = method.losses(Batch(torch.zeros(6), labels), Outputs(student, []), [Outputs(teachers[0], [])])
    assert losses["tckd"].item() == pytest.approx(paper_dkd(student.numpy(), [teachers[0].numpy()],
                                                            labels.tolist(), 4.0)[0], rel=1e-5)


def test_standardize_is_dkd_of_the_z_scored_logits(data):
    student, teachers, labels = data
    student = student * 3 + torch.randn(6, 1)  # raw logits of any scale and shift
    batch, outs = Batch(torch.zeros(6), labels), [Outputs(t, []) for t in teachers]
    got = dkd_method(teachers=2, standardize=True, warmup_epochs=0.0).losses(batch, Outputs(student, []), outs)
    tckd, nckd = paper_dkd(zscore_np(student.numpy()), [zscore_np(t.numpy()) for t in teachers], labels.tolist(), 4.0)
    assert got["tckd"].item() == pytest.approx(tckd, rel=1e-5) and got["nckd"].item() == pytest.approx(8 * nckd, rel=1e-5)
    ce = torch.nn.functional.cross_entropy(student, labels).item()
    assert got["ce"].item() == pytest.approx(ce, rel=1e-6)  # CE stays on the raw logits
    off = dkd_method(teachers=2, warmup_epochs=0.0).losses(batch, Outputs(student, []), outs)
    assert off["nckd"].item() != pytest.approx(got["nckd"].item(), rel=1e-3)


def test_losses_are_float32_under_bf16_autocast():
    method = dkd_method(teachers=2, warmup_epochs=0.0, standardize=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.randn(4, 10).bfloat16()
        losses = method.losses(Batch(torch.zeros(4), torch.arange(4)), Outputs(logits, []),
                               [Outputs(logits, []), Outputs(-logits, [])])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_gradients_reach_the_student_only():
    student = torch.randn(4, 10, requires_grad=True)
    teacher = torch.randn(4, 10, requires_grad=True)
    loss = sum(dkd_method(warmup_epochs=0.0).losses(Batch(torch.zeros(4), torch.arange(4)), Outputs(student, []),
                                                    [Outputs(teacher.detach(), [])]).values())
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and teacher.grad is None


def test_teacher_cache_makes_it_cached_and_a_term_checks_its_parameters():
    assert dkd_method(teacher_cache="clean").terms[0].cached
    with pytest.raises(ValueError, match="dkd: warmup_epochs = -1.0: must be ≥ 0"):
        dkd_method(warmup_epochs=-1.0)
    with pytest.raises(ValueError, match="dkd needs at least one teacher"):
        dkd_method(teachers=0)


@pytest.mark.parametrize("method, fragment", [
    ("dkd+kd", "dkd and kd each supervise"),
    ("dist+dkd", "dist and dkd each supervise"),
    ("kd+dist", "kd and dist each supervise"),
    ("ce+dkd", "ce and dkd each supervise"),
])
def test_two_supervising_terms_are_refused(write_grid, method, fragment):
    with pytest.raises(GridError) as info:
        gridlib.load(write_grid(), [f"grid.method=['{method}']"])
    assert any(p == "grid.method[0]" and fragment in msg for p, msg in info.value.problems), info.value.problems


@pytest.mark.parametrize("override, path, fragment", [
    ("methods.dkd.standardize='yes'", "methods.dkd.standardize", "expected bool"),
    ("methods.dkd.beta=-1.0", "methods.dkd.beta", "must be ≥ 0"),
    ("methods.dist.temperature=0.0", "methods.dist.temperature", "must be > 0"),
])
def test_their_parameters_are_validated_by_the_grid(write_grid, override, path, fragment):
    with pytest.raises(GridError) as info:
        gridlib.load(write_grid(), ["grid.method=['dkd', 'dist']", override])
    assert any(p == path and fragment in msg for p, msg in info.value.problems), info.value.problems


def test_a_grid_with_dkd_and_dist_plans_and_its_jobs_train(write_grid, cifar_root, tmp_path):
    from harness.data import load_cifar10
    from harness.models import build_model, checkpoint
    from harness.run.train import build_trainer, train_epoch

    overrides = ["grid.method=['dkd', 'dist']", "grid.seed=[0]", "train.epochs=1", "data.limit_train=64",
                 "methods.dkd.warmup_epochs=0.5", "methods.dkd.standardize=true"]
    plan = gridlib.plan(gridlib.load(write_grid(), overrides))
    students = {j.method: j for j in plan.stage("student")}
    assert set(students) == {"dkd", "dist"} and all(len(j.teachers) == 1 for j in students.values())
    assert len(plan.stage("teacher")) == 1
    assert students["dkd"].config["method"]["params"]["dkd"]["standardize"] is True
    assert students["dist"].config["method"]["params"] == {"dist": TERMS["dist"].defaults}

    teacher = tmp_path / "teacher.pt"  # an untrained teacher stands in for the teacher job
    checkpoint.save_weights(teacher, "resnet20", build_model("resnet20"))
    losses = {"dkd": ("ce", "tckd", "nckd"), "dist": ("ce", "dist_inter", "dist_intra")}
    for method, job in students.items():  # one epoch of 2 steps, as the job would run it
        data = job.config["data"]
        cifar = load_cifar10(cifar_root, val_size=data["val_size"], limit_train=data["limit_train"], limit_test=10)
        t = build_trainer(job.config, {"channels_last": False}, cifar, [("resnet20", str(teacher))])
        row = train_epoch(t, 0)
        assert all(row[f"loss_{name}"] > 0 for name in losses[method]), row
