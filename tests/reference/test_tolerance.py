"""Self-tests of tolerance classes, error measures and the law checks."""

import math

import numpy as np
import pytest

from reference import init
from reference.stats import check_law, normal_quantile
from reference.tolerance import compare, machine_epsilon, rtol_for

EPS32 = 2.0**-23

pytestmark = pytest.mark.harness


@pytest.mark.parametrize(
    ("tolerance", "kwargs", "expected"),
    [
        ("exact", {}, 0.0),
        ("elementwise", {}, 8 * EPS32),
        ("reduction", {"n": 100}, 108 * EPS32),
        ("optimizer", {"steps": 6}, 96 * EPS32),
    ],
)
def test_rtol_classes(tolerance, kwargs, expected):
    assert rtol_for(tolerance, "float32", **kwargs) == expected


def test_rtol_rejects_unknown_class_and_dtype():
    with pytest.raises(ValueError, match="invalid tolerance class 'loose'"):
        rtol_for("loose", "float32")
    with pytest.raises(ValueError, match="invalid dtype 'float16'.*'float32', 'float64'"):
        machine_epsilon("float16")


def test_compare_measures_abs_rel_ulp():
    # 1 + 2^-22 against 1: abs error 2^-22, rel error 2^-22, 2 float32 ulp at 1.
    result = compare([1.0 + 2.0**-22, 2.0], [1.0, 2.0], rtol=EPS32, dtype="float32")
    assert result.max_abs_error == 2.0**-22
    assert result.max_rel_error == 2.0**-22
    assert result.max_ulp_error == 2.0
    assert result.worst_index == (0,)
    # Allowed: eps * scale 2 = 2^-22, so the error sits exactly at the bound.
    assert result.passed
    assert result.headroom == 1.0


def test_compare_nan_fails():
    result = compare([math.nan], [1.0], rtol=1.0, dtype="float32")
    assert not result.passed
    assert result.max_abs_error == math.inf


def test_normal_quantile():
    assert normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    assert normal_quantile(0.5) == pytest.approx(0.0, abs=1e-12)


def test_false_alarm_rate_is_small():
    # 200 seeds of a correct law at alpha 0.05: about 10 false alarms
    # expected; more than 30 would mean the limits are too tight.
    law = init.Uniform(1.0).law((1,))
    alarms = sum(
        not check_law(np.random.default_rng(s).uniform(-1, 1, 2000), law, alpha=0.05).passed for s in range(200)
    )
    assert alarms <= 30


def test_constant_law_is_exact():
    law = init.Constant(3.0).law((2,))
    assert check_law(np.full(10, 3.0), law).passed
    assert not check_law(np.array([3.0] * 9 + [3.0000001]), law).passed
