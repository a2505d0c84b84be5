"""Method terms against hand computation, and the composition mechanism."""
from __future__ import annotations

import math

import pytest
import torch

from methods import Batch, Context, Outputs, TERMS, build_method
from methods.kd import kd_loss, soft_targets


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_kd_loss_matches_hand_computation():
    student, teacher, temperature = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 2.0
    p_t = softmax([v / temperature for v in teacher])
    p_s = softmax([v / temperature for v in student])
    expected = temperature**2 * sum(p * math.log(p / q) for p, q in zip(p_t, p_s))
    got = kd_loss(torch.tensor([student]), soft_targets([torch.tensor([teacher])], temperature), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_several_teachers_average_their_probabilities():
    a, b = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    mean = (torch.softmax(a / 4, 1) + torch.softmax(b / 4, 1)) / 2
    assert torch.allclose(soft_targets([a, b], 4.0), mean)
    assert not torch.allclose(soft_targets([a, b], 4.0), torch.softmax((a + b) / 2 / 4, 1))


def test_kd_method_weights_ce_and_soft_term():
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 10), torch.randn(4, 10)
    labels = torch.tensor([1, 2, 3, 4])
    method = build_method({"terms": ["kd"], "params": {"kd": {"alpha": 0.75, "temperature": 3.0}}},
                          Context(torch.nn.Identity(), [torch.nn.Identity()]))
    losses = method.losses(Batch(torch.zeros(4), labels), Outputs(logits, []), [Outputs(teacher, [])])
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert losses["ce"].item() == pytest.approx(0.25 * ce.item(), rel=1e-6)
    assert losses["kd"].item() == pytest.approx(0.75 * kd_loss(logits, soft_targets([teacher], 3.0), 3.0).item(), rel=1e-6)


def test_ce_is_added_when_no_term_supervises():
    class Probe(TERMS["kd"].__mro__[1]):  # a Term that does not supervise
        name, defaults = "probe", {}

        def losses(self, batch, student, teachers):
            return {"probe": student.logits.sum() * 0}

    TERMS["probe"] = Probe
    try:
        method = build_method({"terms": ["probe"], "params": {}}, Context(torch.nn.Identity()))
        assert [t.name for t in method.terms] == ["ce", "probe"]
        assert not method.uses_teachers and method.teachers == []
    finally:
        del TERMS["probe"]


def test_losses_are_float32_under_bf16_autocast():
    method = build_method({"terms": ["kd"], "params": {"kd": {}}}, Context(torch.nn.Identity(), [torch.nn.Identity()]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.randn(4, 10).bfloat16()
        losses = method.losses(Batch(torch.zeros(4), torch.arange(4)), Outputs(logits, []), [Outputs(logits, [])])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_teacher_outputs_are_frozen_and_usable_in_the_student_graph():
    teacher = torch.nn.Linear(3, 10)
    teacher.requires_grad_(False)
    student = torch.nn.Linear(3, 10)

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, features=False):
            return self.m(x), [self.m(x)]

    method = build_method({"terms": ["kd"], "params": {"kd": {}}}, Context(student, [Wrap(teacher)]))
    x = torch.randn(4, 3)
    outs = method.teacher_outputs(Batch(x, torch.arange(4)))
    loss = sum(method.losses(Batch(x, torch.arange(4)), Outputs(student(x), []), outs).values())
    loss.backward()  # inference-mode tensors would refuse to be saved for backward
    assert student.weight.grad is not None and teacher.weight.grad is None
