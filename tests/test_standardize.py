"""Logit standardisation (Sun et al., CVPR 2024): the z-score against the official one written out
here, and KD on standardised logits against the formula. `dkd`'s `standardize` is tested in
test_dkd.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods import TERMS, Batch, Context, Outputs, build_method
from methods.kd import kd_loss, soft_targets, zscore


def zscore_np(z, eps=1e-7):
    """Per row: (z − mean) / (eps + unbiased std), as the official `normalize`."""
    out = []
    for row in np.asarray(z, np.float64):
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))
        out.append([(v - mean) / (eps + std) for v in row])
    return np.array(out)


def kd_np(student, teacher, T):
    total = 0.0
    for s, t in zip(np.asarray(student, np.float64), np.asarray(teacher, np.float64)):
        p_t, p_s = np.exp(t / T) / np.exp(t / T).sum(), np.exp(s / T) / np.exp(s / T).sum()
        total += sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    return T**2 * total / len(student)


def test_zscore_is_the_official_one():
    torch.manual_seed(0)
    z = torch.randn(5, 10) * 4 + 2
    assert np.allclose(zscore(z).numpy(), zscore_np(z.numpy()), atol=1e-5)
    assert torch.allclose(zscore(z).mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(zscore(z).std(1), torch.ones(5), atol=1e-5)  # unbiased, as the official code
    assert zscore(z.bfloat16()).dtype == torch.float32


def test_zscore_removes_each_samples_scale_and_shift():
    torch.manual_seed(0)
    z = torch.randn(5, 10)
    assert torch.allclose(zscore(z * torch.tensor([[0.5], [1], [2], [7], [30]]) - torch.arange(5.0)[:, None]),
                          zscore(z), atol=1e-5)


def test_a_constant_row_gives_zeros_not_nan():
    assert torch.equal(zscore(torch.full((1, 4), 3.0)), torch.zeros(1, 4))


def test_kd_on_standardised_logits_matches_the_formula():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 10) * 5, torch.randn(4, 10) * 2 + 1
    got = kd_loss(zscore(student), soft_targets([zscore(teacher)], 2.0), 2.0)
    assert got.item() == pytest.approx(kd_np(zscore_np(student.numpy()), zscore_np(teacher.numpy()), 2.0), rel=1e-5)


@pytest.mark.skipif("standardize" not in TERMS["kd"].defaults,
                    reason="kd has no `standardize` parameter: declaring one changes the job keys of every kd result "
                           "(tests/test_reference_keys.py), left to the key logic's owner")
def test_kd_standardize_is_kd_on_z_scored_logits():
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 10) * 5, torch.randn(4, 10) * 2 + 1, torch.tensor([0, 1, 2, 3])
    ctx = Context(torch.nn.Identity(), [torch.nn.Identity()])
    on = build_method({"terms": ["kd"], "params": {"kd": {"standardize": True, "temperature": 2.0}}}, ctx)
    losses = on.losses(Batch(torch.zeros(4), labels), Outputs(student, []), [Outputs(teacher, [])])
    assert losses["kd"].item() == pytest.approx(0.9 * kd_np(zscore_np(student.numpy()), zscore_np(teacher.numpy()), 2.0),
                                                rel=1e-5)
    ce = torch.nn.functional.cross_entropy(student, labels).item()
    assert losses["ce"].item() == pytest.approx(0.1 * ce, rel=1e-6)  # CE stays on the raw logits
    assert TERMS["kd"].defaults["standardize"] is False
