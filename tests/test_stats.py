"""harness.analysis.stats against values computed by hand (and checked against textbook tables)."""
import math

import numpy as np
import pytest
from scipy.stats import t as t_dist

from harness.analysis import stats


def test_t_quantile_matches_the_table():
    assert stats.t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_quantile(30) == pytest.approx(2.042, abs=1e-3)


def test_describe_mean_sample_std_and_t_interval():
    s = stats.describe([1, 2, 3, 4, 5])
    assert (s.n, s.mean) == (5, 3.0)
    assert s.std == pytest.approx(math.sqrt(2.5))  # sum of squares 10 / (n - 1)
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # 1.96318
    assert (s.ci_low, s.ci_high) == (pytest.approx(3 - half), pytest.approx(3 + half))


def test_describe_one_value_has_no_spread_and_none_is_dropped():
    s = stats.describe([83.5, None, float("nan")])
    assert s.n == 1 and s.mean == 83.5 and math.isnan(s.std) and math.isnan(s.ci_low)
    assert stats.describe([]).n == 0


def test_paired_difference_over_shared_seeds():
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0, 9: 100.0}  # seed 9 has no partner: left out
    b = {0: 1.5, 1: 1.9, 2: 3.6, 3: 4.4, 4: 5.9, 7: -50.0}
    p = stats.paired(a, b)
    # d = -0.5, 0.1, -0.6, -0.4, -0.9: mean -0.46, sd sqrt(0.532 / 4), t = -2.8204, df 4
    assert p.n == 5 and p.mean_diff == pytest.approx(-0.46)
    assert p.std_diff == pytest.approx(math.sqrt(0.133))
    assert p.p_value == pytest.approx(0.04781, abs=1e-4)
    half = 2.7764451 * math.sqrt(0.133) / math.sqrt(5)
    assert (p.ci_low, p.ci_high) == (pytest.approx(-0.46 - half), pytest.approx(-0.46 + half))
    # the bootstrap interval is seeded and lies within the observed differences' range
    assert -0.9 <= p.boot_low < p.mean_diff < p.boot_high <= 0.1
    assert (p.boot_low, p.boot_high) == (stats.paired(a, b).boot_low, stats.paired(a, b).boot_high)


def test_paired_degenerate_cases():
    assert stats.paired({0: 1.0}, {1: 2.0}).n == 0
    one = stats.paired({0: 1.0}, {0: 2.0})
    assert one.n == 1 and one.mean_diff == -1.0 and math.isnan(one.p_value)
    same = stats.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same.mean_diff == 0 and same.p_value == 1.0


def test_welch_matches_scipy_by_hand():
    # a: mean 2, var 1 (n 3); b: mean 5, var 10/3 (n 4) -> se² = 1/3 + (10/3)/4
    w = stats.welch([1, 2, 3], [3, 4, 6, 7])
    va, vb = 1 / 3, 10 / 3 / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert w.mean_diff == -3 and w.std_diff == pytest.approx(math.sqrt(va + vb))
    from scipy import stats as st
    assert w.p_value == pytest.approx(2 * st.t.sf(3 / math.sqrt(va + vb), df))
    assert w.p_value == pytest.approx(st.ttest_ind([1, 2, 3], [3, 4, 6, 7], equal_var=False).pvalue)


def test_no_bootstrap_interval_from_two_seeds():
    two = stats.paired({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.5})
    assert two.n == 2 and not math.isnan(two.p_value) and math.isnan(two.boot_low)


def test_holm_adjusts_a_table_of_p_values():
    # sorted 0.01, 0.03, 0.04 of m = 3 (NaN is no test): 3·0.01, 2·0.03, max(1·0.04, 0.06)
    adjusted = stats.holm([0.01, 0.04, float("nan"), 0.03])
    assert adjusted[0] == pytest.approx(0.03) and adjusted[1] == pytest.approx(0.06)
    assert math.isnan(adjusted[2]) and adjusted[3] == pytest.approx(0.06)
    assert stats.holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    assert stats.holm([0.0478]) == [0.0478]  # one test: nothing to correct
    assert stats.holm([]) == []


def test_paired_uses_scipy_ttest_rel_and_bootstrap():
    from scipy import stats as st
    a = {0: 91.0, 1: 91.5, 2: 93.5, 3: 92.0}
    b = {0: 90.0, 1: 91.0, 2: 92.0, 3: 92.2}
    p = stats.paired(a, b, seed=3)
    assert p.p_value == pytest.approx(st.ttest_rel(list(a.values()), list(b.values())).pvalue)
    d = [a[k] - b[k] for k in a]
    boot = st.bootstrap((d,), np.mean, n_resamples=10_000, method="percentile",
                        rng=np.random.default_rng(3)).confidence_interval
    assert (p.boot_low, p.boot_high) == (pytest.approx(boot.low), pytest.approx(boot.high))
    constant = stats.paired({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert constant.p_value == 0.0 and (constant.boot_low, constant.boot_high) == (1.0, 1.0)


def test_welch_interval_is_the_welch_satterthwaite_one():
    va, vb = 1 / 3, 10 / 3 / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    half = float(t_dist.ppf(0.975, df)) * math.sqrt(va + vb)
    w = stats.welch([1, 2, 3], [3, 4, 6, 7])
    assert (w.ci_low, w.ci_high) == (pytest.approx(-3 - half), pytest.approx(-3 + half))
    same = stats.welch([1.0, 1.0], [1.0, 1.0])
    assert same.p_value == 1.0 and same.std_diff == 0.0
