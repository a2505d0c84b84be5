"""Statistics over seeds, as a paper needs them: mean, sample std, Student-t confidence interval,
and the paired difference of two methods over the seeds they share (paired t-test, bootstrap CI).

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


def describe(values, level: float = 0.95) -> Summary:
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
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
    d = np.asarray([a[k] - b[k] for k in keys], dtype=float)
    n = len(d)
    if n == 0:
        return Paired(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
    s = describe(d, level)
    p = paired_p_value(d)
    lo, hi = bootstrap_mean_ci(d, level, n_boot, seed)
    return Paired(n, s.mean, s.std, s.ci_low, s.ci_high, p, lo, hi)


def paired_p_value(d) -> float:
    """Two-sided p-value of the one-sample t-test of mean(d) = 0 (= the paired t-test)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return NAN
    sd = d.std(ddof=1)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / math.sqrt(n))
    return float(2 * _st.t.sf(abs(t), n - 1))


def bootstrap_mean_ci(d, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of d, seeded (same data, same interval); NaN for n < 3."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 3:  # two values give three possible resampled means: no interval worth the name
        return NAN, NAN
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def welch(a, b, level: float = 0.95) -> Paired:
    """Unpaired difference mean(a) − mean(b) (two grids, no shared seeds assumed): Welch's t-test
    and its Welch–Satterthwaite t-interval; no bootstrap (boot_* are NaN)."""
    x = np.asarray([v for v in a if v is not None and not math.isnan(v)], dtype=float)
    y = np.asarray([v for v in b if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0 or len(y) == 0:
        return Paired(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Paired(min(len(x), len(y)), diff, NAN, NAN, NAN, NAN, NAN, NAN)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    if se == 0:
        return Paired(min(len(x), len(y)), diff, 0.0, diff, diff, 1.0 if diff == 0 else 0.0, NAN, NAN)
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    q = float(_st.t.ppf(0.5 + level / 2, df))
    p = float(2 * _st.t.sf(abs(diff) / se, df))
    return Paired(min(len(x), len(y)), diff, se, diff - q * se, diff + q * se, p, NAN, NAN)
