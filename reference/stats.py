"""Goodness-of-fit checks of random samples against a reference law.

Four tests run on the flattened samples, each at ``alpha / 4`` so that the
false-alarm rate of the whole check is at most ``alpha`` (Bonferroni):

1. support: every sample lies inside the law's bounds, and for a uniform law
   the sample minimum and maximum come within the distance that ``n``
   samples reach with probability ``1 - alpha / 4`` at each end;
2. mean: a z-test of the sample mean against the law's mean;
3. variance: a z-test of the sample variance against the law's variance,
   using the law's fourth moment for the variance of the estimate;
4. Kolmogorov-Smirnov: the largest gap between the empirical and the law's
   distribution function, against the asymptotic critical value
   ``sqrt(-ln(alpha / 8) / 2) / sqrt(n)``.

Samples are drawn once at a fixed seed, so a check that passes keeps passing
for the same framework build; ``alpha`` is the probability, over seeds, that a
framework with the correct law fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 1e-4

# NumPy 2 renamed trapz to trapezoid; MXNet 1.9 needs NumPy < 1.24, which has only trapz.
_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def normal_quantile(p):
    """Return z with P(Z <= z) = p for a standard normal Z, by bisection on erf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"invalid probability {p!r}: expected a number in (0, 1)")
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if 0.5 * (1.0 + math.erf(middle / math.sqrt(2.0))) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _fourth_central_moment(law):
    # Uniform on [-a, a] (shifted): a^4 / 5. Normal: 3 sigma^4.
    if law.kind == "uniform":
        half_width = (law.high - law.low) / 2.0
        return half_width**4 / 5.0
    if law.kind == "normal":
        return 3.0 * law.std**4

    # Truncated normal: integrate (x - mean)^4 against the density on a fine
    # grid (trapezoid rule, 20,001 points), accurate to far below the test's noise.
    x = np.linspace(law.low, law.high, 20001)
    density = np.exp(-0.5 * ((x - law.parent_mean) / law.parent_std) ** 2)
    density /= _trapezoid(density, x)
    return float(_trapezoid((x - law.mean) ** 4 * density, x))


@dataclass(frozen=True)
class FitResult:
    """The outcome of ``check_law`` with every statistic and its limit."""

    passed: bool
    n: int
    alpha: float
    failures: tuple
    statistics: dict

    def summary(self):
        """Return a one-line description of every statistic."""
        parts = [f"{name}={value:.4g} (limit {limit:.4g})" for name, (value, limit) in self.statistics.items()]
        return f"n={self.n}, alpha={self.alpha:g}: " + ", ".join(parts)


def check_law(samples, law, *, alpha=DEFAULT_ALPHA, dtype_eps=0.0):
    """Check that ``samples`` are drawn from ``law``.

    ``dtype_eps`` widens the support bounds by the rounding of the sample
    dtype (a float32 sample of U(-a, a) may round to a value just past a).
    Constant laws require every sample to equal the constant exactly.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    n = x.size
    if n < 2:
        raise ValueError(f"invalid sample count {n}: expected at least 2 samples")
    failures = []
    statistics = {}

    # A constant law is deterministic: every element must equal it.
    if law.kind == "constant":
        worst = float(np.max(np.abs(x - law.mean)))
        statistics["max |x - value|"] = (worst, 0.0)
        if worst != 0.0:
            failures.append("constant")
        return FitResult(not failures, n, alpha, tuple(failures), statistics)

    each = alpha / 4.0
    z = normal_quantile(1.0 - each / 2.0)

    # 1. Support: inside the bounds; a uniform law's ends are reached.
    slack = dtype_eps * max(abs(law.low), abs(law.high)) if math.isfinite(law.low) else 0.0
    below = float(np.sum(x < law.low - slack))
    above = float(np.sum(x > law.high + slack))
    statistics["samples outside bounds"] = (below + above, 0.0)
    if below or above:
        failures.append("support")
    if law.kind == "uniform":
        # P(max < high - w) = (1 - w / width)^n = each / 2 at each end.
        width = law.high - law.low
        reach = width * (1.0 - (each / 2.0) ** (1.0 / n)) + slack
        gap = max(float(x.min()) - law.low, law.high - float(x.max()))
        statistics["gap to nearest bound"] = (gap, reach)
        if gap > reach:
            failures.append("range")

    # 2. Mean: z-test with the law's standard deviation.
    mean_limit = z * law.std / math.sqrt(n)
    mean_gap = abs(float(x.mean()) - law.mean)
    statistics["|mean - law mean|"] = (mean_gap, mean_limit)
    if mean_gap > mean_limit:
        failures.append("mean")

    # 3. Variance: Var(s^2) is about (mu4 - sigma^4) / n for large n.
    variance = law.std**2
    variance_limit = z * math.sqrt((_fourth_central_moment(law) - variance**2) / n)
    variance_gap = abs(float(x.var(ddof=1)) - variance)
    statistics["|var - law var|"] = (variance_gap, variance_limit)
    if variance_gap > variance_limit:
        failures.append("variance")

    # 4. Kolmogorov-Smirnov distance to the law's CDF.
    ordered = np.sort(x)
    cdf = law.cdf(ordered)
    steps = np.arange(1, n + 1) / n
    distance = float(max(np.max(steps - cdf), np.max(cdf - (steps - 1.0 / n))))
    ks_limit = math.sqrt(-math.log(each / 2.0) / 2.0) / math.sqrt(n)
    statistics["KS distance"] = (distance, ks_limit)
    if distance > ks_limit:
        failures.append("ks")

    return FitResult(not failures, n, alpha, tuple(failures), statistics)
