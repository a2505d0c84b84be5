"""Statistics over seeds, as a paper needs them: mean, sample std, Student-t confidence interval,
the paired difference of two methods over the seeds they share (scipy's paired t-test, seeded
percentile bootstrap), Welch's test for two grids, and Holm's correction for a table's many tests.

Every function takes plain floats; NaN/None inputs are the caller's to drop. With one value there
is no spread: std, intervals and p-values are NaN (shown as "–"), never a made-up zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

NAN = float("nan")


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t critical value: P(|T| <= q) = level (df=4, 0.95 -> 2.776)."""
    return float(_st.t.ppf(0.5 + level / 2, df)) if df >= 1 else NAN


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1)
    ci_low: float  # Student-t interval of the mean
    ci_high: float


def _finite(values) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def describe(values, level: float = 0.95) -> Summary:
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, NAN, NAN, NAN)
    std = float(x.std(ddof=1))
    half = t_quantile(n - 1, level) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Paired:
    n: int  # shared seeds
    mean_diff: float  # mean of a - b over the shared seeds
    std_diff: float
    ci_low: float  # Student-t interval of the mean difference
    ci_high: float
    p_value: float  # two-sided paired t-test
    boot_low: float  # percentile bootstrap interval of the mean difference
    boot_high: float


def paired(a: dict, b: dict, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> Paired:
    """Difference a - b over the keys (seeds) both have a value for."""
    keys = sorted(k for k in a if k in b and a[k] is not None and b[k] is not None
                  and not math.isnan(a[k]) and not math.isnan(b[k]))
    x = np.asarray([a[k] for k in keys], dtype=float)
    y = np.asarray([b[k] for k in keys], dtype=float)
    n = len(keys)
    if n == 0:
        return Paired(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
    s = describe(x - y, level)
    lo, hi = bootstrap_mean_ci(x - y, level, n_boot, seed)
    return Paired(n, s.mean, s.std, s.ci_low, s.ci_high, paired_p_value(x, y), lo, hi)


def paired_p_value(a, b) -> float:
    """Two-sided paired t-test of a against b (scipy.stats.ttest_rel). Identical differences have
    no spread, where scipy answers NaN: then the answer is certain (1 if they are all 0, else 0)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return NAN
    if np.ptp(d) == 0:
        return 1.0 if d[0] == 0 else 0.0
    return float(_st.ttest_rel(a, b).pvalue)


def bootstrap_mean_ci(d, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of d (scipy.stats.bootstrap), seeded: same data,
    same interval. NaN for n < 3: two values give three possible resampled means, no interval."""
    d = np.asarray(d, dtype=float)
    if len(d) < 3:
        return NAN, NAN
    if np.ptp(d) == 0:  # every resample has the same mean (scipy warns of a degenerate distribution)
        return float(d[0]), float(d[0])
    ci = _st.bootstrap((d,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def welch(a, b, level: float = 0.95) -> Paired:
    """Unpaired difference mean(a) − mean(b) (two grids, no shared seeds assumed): Welch's t-test
    (scipy.stats.ttest_ind, equal_var=False) and its Welch–Satterthwaite t-interval; no bootstrap
    (boot_* are NaN); std_diff is the difference's standard error."""
    x, y = _finite(a), _finite(b)
    if len(x) == 0 or len(y) == 0:
        return Paired(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
    n = min(len(x), len(y))
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Paired(n, diff, NAN, NAN, NAN, NAN, NAN, NAN)
    se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    if se == 0:  # no spread in either: scipy answers NaN, the difference is certain
        return Paired(n, diff, 0.0, diff, diff, 1.0 if diff == 0 else 0.0, NAN, NAN)
    test = _st.ttest_ind(x, y, equal_var=False)
    ci = test.confidence_interval(level)
    return Paired(n, diff, se, float(ci.low), float(ci.high), float(test.pvalue), NAN, NAN)


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate):
    the i-th smallest of m is multiplied by m − i + 1, made monotone, capped at 1. NaN entries
    (no test) stay NaN and do not count towards m. scipy has no Holm (only FDR control)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, NAN)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    if m == 0:
        return out.tolist()
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.tolist()
