"""Tolerance classes and error measures.

A tolerance is derived from the dtype's machine epsilon and from the shape of
the computation, never tuned to make a framework pass. An actual value ``a``
matches an expected value ``e`` when, element by element,

    |a - e| <= rtol * scale,    scale = max(|e|) over the compared array,

or a caller-given scale, the magnitude of the operands that produced ``e``.
Measuring against the array's magnitude and not each element's keeps the
bound meaningful where a result cancels to near zero.

NOTE: Derivation of the classes, with u = eps / 2 the unit roundoff.
- ``exact``: rtol 0. Constants and values copied without arithmetic.
- ``elementwise``: a few correctly rounded operations per element, each
  off by at most u; rtol = 8 eps leaves room for up to 16 of them.
- ``reduction``: recursive summation of ``n`` terms is off by at most
  (n - 1) u times the sum of the terms' magnitudes, to first order in u, and
  pairwise or blocked summation by less; rtol = (8 + n) eps. For the
  non-negative terms of L1 and L2 the sum of magnitudes is the sum itself.
- ``optimizer``: ``k`` updates, each an elementwise formula of about ten
  operations whose error adds to the weight; rtol = 16 k eps.
- ``statistical``: random samples, compared by law (see ``reference.stats``).
A semantic change the suite must catch (a lost 1/2, a rescale applied
twice, epsilon on the other side of the bias correction) moves the result by
a factor, many orders of magnitude above these bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reference.errors import check_choice

DTYPES = ("float32", "float64")
CLASSES = ("exact", "elementwise", "reduction", "optimizer", "statistical")


def machine_epsilon(dtype):
    """Return the gap between 1 and the next larger number of ``dtype``."""
    check_choice("dtype", dtype, DTYPES)
    return float(np.finfo(dtype).eps)


def rtol_for(tolerance_class, dtype, *, n=1, steps=1):
    """Return the relative tolerance of ``tolerance_class`` for ``dtype``.

    ``n`` is the number of terms in a reduction, ``steps`` the number of
    optimizer updates.
    """
    check_choice("tolerance class", tolerance_class, CLASSES)
    eps = machine_epsilon(dtype)
    if tolerance_class == "exact":
        return 0.0
    if tolerance_class == "elementwise":
        return 8 * eps
    if tolerance_class == "reduction":
        return (8 + n) * eps
    if tolerance_class == "optimizer":
        return 16 * steps * eps
    raise ValueError("tolerance class 'statistical' compares laws, not values: use reference.stats")


@dataclass(frozen=True)
class Comparison:
    """The result of comparing an actual array with an expected one."""

    passed: bool
    max_abs_error: float
    max_rel_error: float
    max_ulp_error: float
    worst_index: tuple
    actual_at_worst: float
    expected_at_worst: float
    rtol: float
    scale: float

    @property
    def headroom(self):
        """Largest error divided by the allowed error (above 1 fails)."""
        allowed = self.rtol * self.scale
        if allowed == 0:
            return 0.0 if self.max_abs_error == 0 else float("inf")
        return self.max_abs_error / allowed

    def as_record(self):
        """Return the JSON-ready fields a results record stores."""
        return {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "max_ulp_error": self.max_ulp_error,
            "rtol": self.rtol,
            "scale": self.scale,
            "headroom": self.headroom,
        }


def compare(actual, expected, *, rtol, dtype, scale=None):
    """Compare ``actual`` with ``expected`` and measure the error.

    The relative error divides by ``|expected|`` per element (inf where
    expected is 0 and actual is not). The ULP error counts units in the last
    place of ``dtype`` at the expected value.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape mismatch: actual {actual.shape}, expected {expected.shape}")

    if expected.size == 0:
        return Comparison(True, 0.0, 0.0, 0.0, (), 0.0, 0.0, rtol, 0.0)

    # Absolute error per element; NaN in actual counts as infinite error.
    error = np.abs(actual - expected)
    error = np.where(np.isnan(error), np.inf, error)

    # Relative and ULP errors per element.
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(error == 0, 0.0, error / np.abs(expected))
        ulp = np.where(error == 0, 0.0, error / np.spacing(np.abs(expected).astype(dtype)).astype(np.float64))

    # The pass criterion against the array's scale.
    if scale is None:
        scale = float(np.max(np.abs(expected)))
    worst = np.unravel_index(int(np.argmax(error)), error.shape)
    max_error = float(error[worst])

    return Comparison(
        passed=bool(max_error <= rtol * scale),
        max_abs_error=max_error,
        max_rel_error=float(np.max(relative)),
        max_ulp_error=float(np.max(ulp)),
        worst_index=tuple(int(i) for i in worst),
        actual_at_worst=float(actual[worst]),
        expected_at_worst=float(expected[worst]),
        rtol=float(rtol),
        scale=float(scale),
    )
