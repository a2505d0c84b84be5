"""`dist` (DIST) against the paper's formula written out here: Pearson correlations of the rows and
the columns of the softened probability matrices, by explicit loops in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods import TERMS, Batch, Context, Outputs, build_method
from methods.dist import dist_relations


def softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def pearson(u, v):
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    num = sum((a - mu) * (b - mv) for a, b in zip(u, v))
    return num / math.sqrt(sum((a - mu) ** 2 for a in u) * sum((b - mv) ** 2 for b in v))


def paper_dist(student, teachers, tau):
    """(inter, intra) of the paper: 1 − mean ρ over the rows (samples), 1 − mean ρ over the columns
    (classes) of Y = softmax(Z / τ); the teachers' Y is their mean."""
    y_s = np.array([softmax(r / tau) for r in np.asarray(student, np.float64)])
    y_t = np.mean([[softmax(r / tau) for r in np.asarray(t, np.float64)] for t in teachers], axis=0)
    n, c = y_s.shape
    inter = 1 - sum(pearson(y_s[i], y_t[i]) for i in range(n)) / n
    intra = 1 - sum(pearson(y_s[:, j], y_t[:, j]) for j in range(c)) / c
    return inter, intra


def dist_method(teachers=1, **params):
    return build_method({"terms": ["dist"], "params": {"dist": params}},
                        Context(torch.nn.Identity(), [torch.nn.Identity()] * teachers))


@pytest.fixture
def data():
    torch.manual_seed(1)
    return torch.randn(8, 10) * 3, [torch.randn(8, 10) * 3, torch.randn(8, 10) * 3], torch.arange(8) % 10


def test_relations_match_the_paper(data):
    student, teachers, _ = data
    for tau in (1.0, 4.0):
        got = dist_relations(student, teachers[:1], tau)
        assert [g.item() for g in got] == pytest.approx(paper_dist(student.numpy(), [teachers[0].numpy()], tau), rel=1e-5)


def test_numpy_corrcoef_agrees_on_the_rows(data):  # a second, library, reading of ρ
    student, teachers, _ = data
    y_s, y_t = torch.softmax(student.double() / 4, 1).numpy(), torch.softmax(teachers[0].double() / 4, 1).numpy()
    rows = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t)])
    assert dist_relations(student, teachers[:1], 4.0)[0].item() == pytest.approx(1 - rows, rel=1e-5)


def test_several_teachers_use_their_mean_probabilities(data):
    student, teachers, _ = data
    got = dist_relations(student, teachers, 4.0)
    assert [g.item() for g in got] == pytest.approx(paper_dist(student.numpy(), [t.numpy() for t in teachers], 4.0),
                                                    rel=1e-5)


def test_a_student_equal_to_its_teacher_or_an_affine_map_of_it_loses_nothing(data):
    student, _, _ = data
    assert [v.item() for v in dist_relations(student, [student], 4.0)] == pytest.approx([0, 0], abs=1e-6)
    inter, _ = dist_relations(student, [student + torch.randn(8, 1)], 4.0)  # softmax is shift-invariant
    assert inter.item() == pytest.approx(0, abs=1e-6)


def test_the_method_weights_ce_inter_and_intra(data):
    student, teachers, labels = data
    method = dist_method(beta=1.5, gamma=0.5, temperature=2.0, ce_weight=0.3)
    losses = method.losses(Batch(torch.zeros(8), labels), Outputs(student, []), [Outputs(teachers[0], [])])
    inter, intra = paper_dist(student.numpy(), [teachers[0].numpy()], 2.0)
    ce = torch.nn.functional.cross_entropy(student, labels).item()
    assert set(losses) == {"ce", "dist_inter", "dist_intra"}
    assert [losses[k].item() for k in ("ce", "dist_inter", "dist_intra")] == pytest.approx(
        [0.3 * ce, 1.5 * 4 * inter, 0.5 * 4 * intra], rel=1e-5)


def test_defaults_are_the_official_cifar100_ones(data):
    assert TERMS["dist"].defaults == {"beta": 2.0, "gamma": 2.0, "temperature": 4.0, "ce_weight": 1.0,
                                      "teacher_cache": "off"}
    assert TERMS["dist"].supervises and TERMS["dist"].uses_teachers
    student, teachers, labels = data
    losses = dist_method().losses(Batch(torch.zeros(8), labels), Outputs(student, []), [Outputs(teachers[0], [])])
    inter, intra = paper_dist(student.numpy(), [teachers[0].numpy()], 4.0)
    assert losses["dist_inter"].item() == pytest.approx(2 * 16 * inter, rel=1e-5)
    assert losses["dist_intra"].item() == pytest.approx(2 * 16 * intra, rel=1e-5)


def test_a_batch_of_one_is_finite():
    losses = dist_method().losses(Batch(torch.zeros(1), torch.tensor([3])), Outputs(torch.randn(1, 10), []),
                                  [Outputs(torch.randn(1, 10), [])])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["dist_intra"].item() == pytest.approx(2 * 16)  # a column of one sample correlates with nothing


def test_losses_are_float32_under_bf16_autocast_and_gradients_reach_the_student():
    method = dist_method(teachers=2)
    student = torch.randn(4, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = (student * 1).bfloat16()
        losses = method.losses(Batch(torch.zeros(4), torch.arange(4)), Outputs(logits, []),
                               [Outputs(torch.randn(4, 10).bfloat16(), []), Outputs(torch.randn(4, 10), [])])
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_teacher_cache_makes_it_cached():
    assert dist_method(teacher_cache="clean").terms[0].cached and not dist_method().terms[0].cached
