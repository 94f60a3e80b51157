"""Self-tests of reference.init: fans, laws, sampling and the init rules."""

import math
import warnings

import numpy as np
import pytest

from reference import init
from reference.stats import check_law

# 1. Fans ----------------------------------------------------------------


@pytest.mark.rule("INIT-FANS")
@pytest.mark.parametrize(
    ("shape", "layout", "expected"),
    [
        # Dense (out=25, in=5): fan_in 5, fan_out 25; Keras stores it as (in, out).
        ((25, 5), "OI", (5, 25)),
        ((5, 25), "IO", (5, 25)),
        # Conv 16 -> 32 with a 3x3 window: 16*9 = 144 in, 32*9 = 288 out.
        ((32, 16, 3, 3), "OIHW", (144, 288)),
        ((3, 3, 16, 32), "HWIO", (144, 288)),
        # Grouped conv, groups=4: the kernel has 16/4 = 4 input channels per
        # group, so fan_in = 4*9 = 36; fan_out counts all 32 outputs: 288.
        ((32, 4, 3, 3), "OIHW", (36, 288)),
        ((3, 3, 4, 32), "HWIO", (36, 288)),
        # Depthwise 8 channels, multiplier 2, 5x5: each output reads 25 inputs;
        # fan_out = 8*2*25 = 400. OIHW form is (16, 1, 5, 5).
        ((16, 1, 5, 5), "OIHW", (25, 400)),
        ((5, 5, 8, 2), "HWIM", (25, 400)),
        # 1-D and 3-D convolutions: the receptive field is the product of all
        # spatial axes. 3 -> 6 with width 7: 21 in, 42 out.
        ((6, 3, 7), "OIHW", (21, 42)),
        ((2, 2, 2, 3, 4), "HWIO", (24, 32)),
        # A dense weight in OIHW form has no spatial axes.
        ((25, 5), "OIHW", (5, 25)),
    ],
)
def test_fans_by_layout(shape, layout, expected):
    assert init.fans(shape, layout) == expected


@pytest.mark.rule("INIT-FANS")
def test_fans_invalid_layout():
    with pytest.raises(ValueError, match="invalid layout 'NCHW'.*'OI'"):
        init.fans((2, 3), "NCHW")


@pytest.mark.rule("INIT-FANS")
@pytest.mark.parametrize(("shape", "layout"), [((2, 3, 4), "OI"), ((3, 4), "HWIO"), ((5,), "OIHW")])
def test_fans_invalid_rank(shape, layout):
    with pytest.raises(ValueError, match="invalid shape"):
        init.fans(shape, layout)


# 2. Laws ----------------------------------------------------------------


@pytest.mark.rule("INIT-UNIFORM")
def test_uniform_law():
    law = init.Uniform(0.3).law((4, 4))

    # U(-0.3, 0.3): mean 0, std 0.3 / sqrt(3).
    assert (law.kind, law.low, law.high, law.mean) == ("uniform", -0.3, 0.3, 0.0)
    assert law.std == pytest.approx(0.3 / math.sqrt(3), rel=1e-15)


@pytest.mark.rule("INIT-DEFAULT")
def test_default_uniform_scale():
    assert init.Uniform().scale == 0.07


@pytest.mark.rule("INIT-NORMAL")
def test_normal_law_default_sigma():
    law = init.Normal().law((3,))
    assert (law.kind, law.mean, law.std) == ("normal", 0.0, 0.01)


@pytest.mark.rule("INIT-CONSTANT")
def test_constant_zero_one_fill_exactly():
    assert np.array_equal(init.Constant(3).sample((2, 3)), np.full((2, 3), 3.0))
    assert np.array_equal(init.Zero().sample((4,)), np.zeros(4))
    assert np.array_equal(init.One().sample((4,)), np.ones(4))


@pytest.mark.rule("INIT-XAVIER")
@pytest.mark.parametrize(
    ("factor_type", "factor"),
    # Weight (25, 5): fan_in 5, fan_out 25, average 15.
    [("avg", 15.0), ("in", 5.0), ("out", 25.0)],
)
@pytest.mark.parametrize("rnd_type", ["uniform", "gaussian"])
def test_xavier_scale_closed_form(rnd_type, factor_type, factor):
    xavier = init.Xavier(rnd_type, factor_type, magnitude=3.0)
    law = xavier.law((25, 5), "OI")

    # scale = sqrt(3 / factor): the bound of the uniform, the std of the gaussian.
    scale = math.sqrt(3.0 / factor)
    if rnd_type == "uniform":
        assert law.high == pytest.approx(scale, rel=1e-15)
        assert law.std == pytest.approx(scale / math.sqrt(3.0), rel=1e-15)
    else:
        assert law.kind == "normal"
        assert law.std == pytest.approx(scale, rel=1e-15)


@pytest.mark.rule("INIT-XAVIER")
def test_xavier_same_law_in_every_layout():
    oihw = init.Xavier().law((32, 4, 3, 3), "OIHW")
    hwio = init.Xavier().law((3, 3, 4, 32), "HWIO")
    assert oihw == hwio


@pytest.mark.rule("INIT-MSRAPRELU")
def test_msraprelu_closed_form():
    # Weight (25, 5), avg factor 15, slope 0.25: std = sqrt(2 / (1.0625 * 15)).
    law = init.MSRAPrelu().law((25, 5), "OI")
    assert law.kind == "normal"
    assert law.std == pytest.approx(math.sqrt(2.0 / (1.0625 * 15.0)), rel=1e-15)


@pytest.mark.rule("INIT-MSRAPRELU")
def test_msraprelu_differs_from_he():
    # He normal: std = sqrt(2 / fan_in) = sqrt(2 / 5) for weight (25, 5).
    he_std = math.sqrt(2.0 / 5.0)
    assert init.MSRAPrelu().law((25, 5), "OI").std < 0.6 * he_std
    assert init.MSRAPrelu("in", 0.0).law((25, 5), "OI").std == pytest.approx(he_std, rel=1e-15)


@pytest.mark.rule("INIT-XAVIER")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: init.Xavier(rnd_type="normal"), "invalid rnd_type 'normal'.*'uniform', 'gaussian'"),
        (lambda: init.Xavier(factor_type="mean"), "invalid factor_type 'mean'.*'avg', 'in', 'out'"),
        (lambda: init.MSRAPrelu(factor_type="fan"), "invalid factor_type 'fan'"),
        (lambda: init.Uniform(-0.1), "invalid scale -0.1"),
        (lambda: init.Normal(sigma=-1.0), "invalid sigma -1.0"),
        (lambda: init.Xavier(magnitude=float("nan")), "invalid magnitude nan"),
    ],
)
def test_initializer_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# 3. Sampling: the reference sampler follows its own law -----------------


@pytest.mark.rule("INIT-UNIFORM", "INIT-NORMAL", "INIT-XAVIER", "INIT-MSRAPRELU")
@pytest.mark.parametrize(
    "initializer",
    [init.Uniform(0.07), init.Normal(0.2), init.Xavier(), init.Xavier("gaussian", "in", 2.0), init.MSRAPrelu()],
    ids=repr,
)
def test_samples_fit_law(initializer):
    shape = (400, 250)
    samples = initializer.sample(shape, "OI", seed=1234)
    result = check_law(samples, initializer.law(shape, "OI"))
    assert result.passed, result.summary()


@pytest.mark.rule("INIT-UNIFORM", "INIT-XAVIER")
@pytest.mark.parametrize(
    ("drawn", "claimed"),
    [
        # A bound 2% too wide, as from a wrong fan.
        (init.Uniform(0.0714), init.Uniform(0.07)),
        # Xavier uniform with fan_out where fan_in was asked.
        (init.Xavier(factor_type="out"), init.Xavier(factor_type="in")),
        # Normal where uniform was asked, same standard deviation.
        (init.Normal(0.07 / math.sqrt(3)), init.Uniform(0.07)),
    ],
    ids=["bound", "fan", "kind"],
)
def test_wrong_law_detected(drawn, claimed):
    shape = (400, 250)
    result = check_law(drawn.sample(shape, "OI", seed=99), claimed.law(shape, "OI"))
    assert not result.passed


# 4. Initialization rules ----------------------------------------------------


@pytest.mark.rule("INIT-DEFAULT", "INIT-PRECEDENCE")
def test_effective_initializer_defaults():
    assert init.effective_initializer("weight") == init.Uniform(0.07)
    assert init.effective_initializer("bias") == init.Zero()


@pytest.mark.rule("INIT-PRECEDENCE")
def test_own_initializer_wins():
    own = init.Constant(5.0)
    assert init.effective_initializer("weight", own, init.Xavier()) is own
    assert init.effective_initializer("bias", own, init.Xavier()) is own
    assert init.effective_initializer("bias", None, init.Xavier()) == init.Zero()
    assert init.effective_initializer("weight", None, init.Xavier()) == init.Xavier()


@pytest.mark.rule("INIT-DEFERRED")
def test_deferred_parameter_draws_at_shape_inference():
    weight = init.Parameter("1.weight", "weight", (25, None))
    weight.initialize(init.Constant(2.0))

    # Before the first forward pass: no values, an unknown input dimension.
    assert weight.data is None
    assert weight.shape == (25, None)

    # The forward pass fixes the shape and draws from the recorded initializer.
    weight.infer_shape((25, 5))
    assert weight.shape == (25, 5)
    assert np.array_equal(weight.data, np.full((25, 5), 2.0))


@pytest.mark.rule("INIT-DEFERRED")
def test_infer_shape_rejects_conflicting_shape():
    weight = init.Parameter("w", "weight", (25, None))
    with pytest.raises(ValueError, match="does not match the declared shape"):
        weight.infer_shape((24, 5))


@pytest.mark.rule("INIT-REINIT")
def test_reinitialize_warns_and_keeps_values():
    weight = init.Parameter("w", "weight", (3, 4))
    weight.initialize(init.Constant(1.0))
    before = weight.data.copy()

    with pytest.warns(init.AlreadyInitializedWarning, match="already initialized"):
        weight.initialize(init.Constant(3.0))
    assert np.array_equal(weight.data, before)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weight.initialize(init.Constant(3.0), force_reinit=True)
    assert np.array_equal(weight.data, np.full((3, 4), 3.0))


@pytest.mark.rule("INIT-PRECEDENCE")
def test_bias_stays_zero_under_global_initializer():
    bias = init.Parameter("b", "bias", (5,))
    bias.initialize(init.Constant(3.0))
    assert np.array_equal(bias.data, np.zeros(5))


# 5. Truncated normal and variance scaling -------------------------------------


@pytest.mark.rule("INIT-TRUNCATED-NORMAL")
def test_truncated_normal_standard_moments():
    # N(0, 1) on [-2, 2]: mean 0 by symmetry, variance 1 - 4 phi(2) / (2 Phi(2) - 1)
    # with phi(2) = 0.05399096651 and Phi(2) = 0.97724986805: 0.7737413.
    law = init.TruncatedNormal().law((3,))
    assert law.mean == pytest.approx(0.0, abs=1e-15)
    assert law.std**2 == pytest.approx(1 - 4 * 0.05399096651 / (2 * 0.97724986805 - 1), rel=1e-9)
    assert init.TRUNCATION_STD_AT_2 == pytest.approx(0.87962566103423978, rel=1e-14)


@pytest.mark.rule("INIT-TRUNCATED-NORMAL")
def test_truncated_normal_bounds_are_absolute():
    # std 0.01 with the default bounds +-2: the cut is 200 standard deviations
    # away, so the law is N(0, 0.01^2) in practice.
    law = init.TruncatedNormal(std=0.01).law((3,))
    assert (law.low, law.high) == (-2.0, 2.0)
    assert law.std == pytest.approx(0.01, rel=1e-12)


@pytest.mark.rule("INIT-TRUNCATED-NORMAL")
def test_truncated_normal_one_sided_mean():
    # N(0, 1) on [0, inf): mean sqrt(2 / pi), variance 1 - 2 / pi.
    law = init.TruncatedNormal(low=0.0, high=math.inf).law((3,))
    assert law.mean == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    assert law.std == pytest.approx(math.sqrt(1 - 2 / math.pi), rel=1e-12)


@pytest.mark.rule("INIT-VARIANCE-SCALING")
@pytest.mark.parametrize(
    ("initializer", "kind", "std"),
    [
        # Weight (300, 200): fan_in 200, fan_out 300, average 250.
        (init.VarianceScaling(2.0, "fan_in", "truncated_normal"), "truncated_normal", math.sqrt(2 / 200)),
        (init.VarianceScaling(1.0, "fan_avg", "uniform"), "uniform", math.sqrt(1 / 250)),
        (init.VarianceScaling(1.0, "fan_out", "untruncated_normal"), "normal", math.sqrt(1 / 300)),
    ],
    ids=["he_normal", "glorot_uniform", "untruncated_fan_out"],
)
def test_variance_scaling_std(initializer, kind, std):
    law = initializer.law((300, 200), "OI")
    assert law.kind == kind
    assert law.std == pytest.approx(std, rel=1e-12)


@pytest.mark.rule("INIT-VARIANCE-SCALING")
def test_glorot_uniform_equals_xavier_default():
    shape = (300, 200)
    assert init.VarianceScaling(1.0, "fan_avg", "uniform").law(shape, "OI").high == pytest.approx(
        init.Xavier().law(shape, "OI").high, rel=1e-15
    )


@pytest.mark.rule("INIT-TRUNCATED-NORMAL", "INIT-VARIANCE-SCALING")
@pytest.mark.parametrize(
    "initializer",
    [
        init.TruncatedNormal(0.5, 1.0, -1.0, 3.0),
        init.VarianceScaling(),
        init.VarianceScaling(3.0, "fan_avg", "uniform"),
    ],
    ids=repr,
)
def test_truncated_samples_fit_law(initializer):
    samples = initializer.sample((300, 200), "OI", seed=11)
    result = check_law(samples, initializer.law((300, 200), "OI"))
    assert result.passed, result.summary()


@pytest.mark.rule("INIT-TRUNCATED-NORMAL", "INIT-VARIANCE-SCALING")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: init.TruncatedNormal(low=1.0, high=-1.0), "invalid bounds low=1.0, high=-1.0"),
        (lambda: init.TruncatedNormal(std=-1.0), "invalid std -1.0"),
        (lambda: init.VarianceScaling(mode="avg"), "invalid mode 'avg'.*'fan_in', 'fan_out', 'fan_avg'"),
        (lambda: init.VarianceScaling(distribution="normal"), "invalid distribution 'normal'"),
        (lambda: init.VarianceScaling(scale=0.0), "invalid scale 0.0"),
    ],
)
def test_truncated_invalid_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
