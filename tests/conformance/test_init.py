"""Conformance of parameter initialization.

Random initializers are checked by law (reference.stats, false-alarm rate
1e-4 per check at the case's fixed seed); deterministic ones exactly.
"""

import numpy as np
import pytest

from adapters.base import LayerSpec
from harness.cases import QUESTIONS
from harness.profiles import make_initializer
from reference import init

# Layers large enough that a 1-2% error in a law's scale fails the law check.
LAYERS = {
    "dense": LayerSpec("dense", 300, 200),
    "conv2d": LayerSpec("conv", 64, 48, (3, 3)),
    "conv1d": LayerSpec("conv", 96, 64, (5,)),
    "conv2d_grouped": LayerSpec("conv", 128, 64, (3, 3), groups=4),
    "depthwise": LayerSpec("conv", 512, 256, (5, 5), groups=256),
}


def weight_law(initializer, layer):
    return initializer.law(layer.weight_shape(), "OI" if layer.kind == "dense" else "OIHW")


# 1. Default and simple initializers ---------------------------------------


@pytest.mark.rule("INIT-DEFAULT")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_default_initialize(adapter, check, profile, layer, question):
    spec = LAYERS[layer]

    # Canonical: initialize() gives weights U(-0.07, 0.07) and biases 0.
    # Native: a freshly made layer has the laws the profile records.
    canonical = {"weight": init.Uniform(0.07).law(spec.weight_shape()), "bias": init.Zero().law((spec.out_channels,))}
    if question == "canonical":
        values = adapter.init_layer(spec, seed=check.seed)
        laws = canonical
    else:
        values = adapter.init_layer(spec, seed=check.seed, mode="native_defaults")
        table = profile.native_choices(f"{spec.kind}_init")
        laws = {}
        for name in ("weight", "bias"):
            initializer, fans_of = make_initializer(table[name])
            shape = spec.weight_shape() if fans_of == "weight" else values[name].shape
            laws[name] = initializer.law(shape, "OI" if spec.kind == "dense" else "OIHW")
            if laws[name] != canonical[name]:
                check.note_native_choices(f"{spec.kind}_init", {name: table[name]})

    for name in ("weight", "bias"):
        check.law(name, values[name], laws[name])
        if question == "native":
            check.law_versus_canonical(name, laws[name], canonical[name])


@pytest.mark.rule("INIT-UNIFORM")
@pytest.mark.parametrize("scale", [0.07, 0.5, 3.0])
def test_uniform(adapter, check, scale):
    spec = LAYERS["dense"]
    values = adapter.init_layer(spec, global_init=init.Uniform(scale), seed=check.seed)
    check.law("weight", values["weight"], weight_law(init.Uniform(scale), spec))


@pytest.mark.rule("INIT-NORMAL")
@pytest.mark.parametrize("sigma", [None, 0.2, 2.0])
def test_normal(adapter, check, sigma):
    # sigma None: Normal() with its default sigma 0.01.
    spec = LAYERS["dense"]
    initializer = init.Normal() if sigma is None else init.Normal(sigma)
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


@pytest.mark.rule("INIT-CONSTANT")
@pytest.mark.parametrize(
    "initializer",
    [init.Constant(3.0), init.Constant(-0.25), init.Zero(), init.One()],
    ids=["3", "-0.25", "zero", "one"],
)
def test_constant(adapter, check, initializer):
    spec = LAYERS["conv2d"]
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.close("weight", values["weight"], np.full(spec.weight_shape(), initializer.value), "exact")


# 2. Fan-based initializers ------------------------------------------------


@pytest.mark.rule("INIT-XAVIER")
@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
@pytest.mark.parametrize("rnd_type", ["uniform", "gaussian"])
@pytest.mark.parametrize("magnitude", [None, 2.0])
@pytest.mark.parametrize("layer", ["dense", "conv2d"])
def test_xavier(adapter, check, layer, magnitude, rnd_type, factor_type):
    # magnitude None: Xavier's default magnitude, 3.
    spec = LAYERS[layer]
    extra = {} if magnitude is None else {"magnitude": magnitude}
    initializer = init.Xavier(rnd_type, factor_type, **extra)
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


@pytest.mark.rule("INIT-MSRAPRELU")
@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
@pytest.mark.parametrize("slope", [0.25, 0.0])
@pytest.mark.parametrize("layer", ["dense", "conv2d"])
def test_msraprelu(adapter, check, layer, slope, factor_type):
    spec = LAYERS[layer]
    initializer = init.MSRAPrelu(factor_type, slope)
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


@pytest.mark.rule("INIT-FANS")
@pytest.mark.parametrize("factor_type", ["in", "out"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_fans_through_xavier(adapter, check, layer, factor_type):
    # Xavier uniform with magnitude 3 has the bound sqrt(3 / fan), so the
    # bound of the samples measures the fan the framework computed.
    spec = LAYERS[layer]
    initializer = init.Xavier("uniform", factor_type, 3.0)
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


@pytest.mark.rule("INIT-TRUNCATED-NORMAL")
@pytest.mark.parametrize(
    "initializer",
    [
        init.TruncatedNormal(0.0, 1.0, -2.0, 2.0),
        # Bounds far outside the spread: in effect N(0, 0.01^2).
        init.TruncatedNormal(0.0, 0.01, -2.0, 2.0),
        # Asymmetric bounds around a shifted mean.
        init.TruncatedNormal(0.5, 1.0, -1.0, 3.0),
        # Bounds at two standard deviations, as Keras' TruncatedNormal(stddev=0.05) draws.
        init.TruncatedNormal(0.0, 0.05, -0.1, 0.1),
    ],
    ids=["standard", "narrow_std", "asymmetric", "two_std"],
)
def test_truncated_normal(adapter, check, initializer):
    spec = LAYERS["dense"]
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


@pytest.mark.rule("INIT-VARIANCE-SCALING")
@pytest.mark.parametrize(
    "initializer",
    [
        init.VarianceScaling(1.0, "fan_avg", "uniform"),
        init.VarianceScaling(1.0, "fan_avg", "truncated_normal"),
        init.VarianceScaling(2.0, "fan_in", "truncated_normal"),
        init.VarianceScaling(2.0, "fan_in", "uniform"),
        init.VarianceScaling(0.5, "fan_out", "untruncated_normal"),
    ],
    ids=["glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "half_fan_out_normal"],
)
@pytest.mark.parametrize("layer", ["dense", "conv2d"])
def test_variance_scaling(adapter, check, layer, initializer):
    spec = LAYERS[layer]
    values = adapter.init_layer(spec, global_init=initializer, seed=check.seed)
    check.law("weight", values["weight"], weight_law(initializer, spec))


# 3. Initialization rules ---------------------------------------------------


@pytest.mark.rule("INIT-PRECEDENCE")
def test_own_weight_initializer_wins(adapter, check):
    spec = LAYERS["dense"]
    values = adapter.init_layer(spec, global_init=init.Constant(3.0), weight_init=init.Constant(5.0), seed=check.seed)
    check.close("weight", values["weight"], np.full(spec.weight_shape(), 5.0), "exact")
    check.close("bias", values["bias"], np.zeros(spec.out_channels), "exact")


@pytest.mark.rule("INIT-PRECEDENCE")
@pytest.mark.parametrize("global_init", [init.Constant(3.0), init.Xavier(), init.Normal(1.0)], ids=repr)
def test_bias_zero_under_global_initializer(adapter, check, global_init):
    spec = LAYERS["dense"]
    values = adapter.init_layer(spec, global_init=global_init, seed=check.seed)
    check.close("bias", values["bias"], np.zeros(spec.out_channels), "exact")


@pytest.mark.rule("INIT-PRECEDENCE")
def test_own_bias_initializer_wins(adapter, check):
    spec = LAYERS["dense"]
    values = adapter.init_layer(spec, global_init=init.Xavier(), bias_init=init.Constant(2.0), seed=check.seed)
    check.close("bias", values["bias"], np.full(spec.out_channels, 2.0), "exact")
    check.law("weight", values["weight"], weight_law(init.Xavier(), spec))


@pytest.mark.rule("INIT-DEFERRED")
def test_deferred_shapes_until_forward(adapter, check):
    model = adapter.sequential([LayerSpec("dense", 400), LayerSpec("dense", 300)])
    model.initialize(init.Xavier(), seed=check.seed)

    # Before the first forward pass the input dimensions are unknown.
    check.equal(
        "shapes before forward",
        model.param_shapes(),
        {"0.weight": (400, None), "0.bias": (400,), "1.weight": (300, None), "1.bias": (300,)},
    )

    # The forward pass fixes them and draws from the initializer given
    # before, with the fans of the inferred shapes: (400, 250) and (300, 400).
    x = check.rng().uniform(-1, 1, size=(4, 250))
    model.forward(x)
    check.equal(
        "shapes after forward",
        model.param_shapes(),
        {"0.weight": (400, 250), "0.bias": (400,), "1.weight": (300, 400), "1.bias": (300,)},
    )
    values = model.params()
    check.law("0.weight", values["0.weight"], init.Xavier().law((400, 250), "OI"))
    check.law("1.weight", values["1.weight"], init.Xavier().law((300, 400), "OI"))
    check.close("0.bias", values["0.bias"], np.zeros(400), "exact")


@pytest.mark.rule("INIT-REINIT")
def test_reinitialize_warns_and_keeps_values(adapter, check):
    model = adapter.sequential([LayerSpec("dense", 300, 200)])
    model.initialize(init.Uniform(0.07), seed=check.seed)
    before = model.params()

    # A second initialize() without force_reinit: a warning, same values.
    messages = model.initialize(init.Constant(3.0), seed=check.seed + 1)
    check.equal("warned", len(messages) > 0, True)
    after = model.params()
    for name in before:
        check.close(name, after[name], before[name], "exact")


@pytest.mark.rule("INIT-REINIT")
def test_force_reinit_draws_again(adapter, check):
    model = adapter.sequential([LayerSpec("dense", 300, 200)])
    model.initialize(init.Uniform(0.07), seed=check.seed)

    # force_reinit draws from the new law; biases stay 0.
    model.initialize(init.Normal(0.2), force_reinit=True, seed=check.seed + 1)
    values = model.params()
    check.law("0.weight", values["0.weight"], init.Normal(0.2).law((300, 200)))
    check.close("0.bias", values["0.bias"], np.zeros(300), "exact")
