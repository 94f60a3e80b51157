"""The MXNet Gluon tutorial on training components, cell by cell, in any framework.

Every cell starts from the tutorial's net.initialize(), so each test also
names INIT-DEFAULT.

The tutorial builds a Sequential net with deferred shapes, initializes it
three ways, evaluates L2, L1 and a custom L1 loss on a Dense(1) output, and
steps an Adam Trainer. Every expected value comes from the reference applied
to the values the framework actually holds.
"""

import numpy as np
import pytest

from adapters.base import LayerSpec
from harness.cases import quantize
from reference import init, losses, optim
from reference.errors import StaleGradientError

# The tutorial's data: five records of one feature and their labels.
NN_INPUT = np.array([1.2, 0.56, 3.0, 0.72, 0.89]).reshape(5, 1)
GROUNDTRUTH_LABEL = np.array([[0.0083], [0.00382], [0.02061], [0.00495], [0.00639]]).reshape(5, 1)

# nn.Dense(5, in_units=3, activation='relu'), nn.Dense(25, activation='relu'), nn.Dense(2).
SEQUENTIAL = [
    LayerSpec("dense", 5, 3, activation="relu"),
    LayerSpec("dense", 25, activation="relu"),
    LayerSpec("dense", 2),
]


def pooled_weights(values):
    # Every weight of the net follows the same law, whatever its shape.
    return np.concatenate([value.ravel() for name, value in sorted(values.items()) if name.endswith("weight")])


def check_biases_zero(check, values):
    for name, value in values.items():
        if name.endswith("bias"):
            check.close(name, value, np.zeros_like(value), "exact")


def initialized_sequential(adapter, check):
    # net.initialize(); net(x) with x uniform in (-1, 1), shape (10, 3).
    model = adapter.sequential(SEQUENTIAL)
    model.initialize(seed=check.seed)
    x = quantize(check.rng().uniform(-1, 1, size=(10, 3)), check.dtype)
    check.record_inputs(x=x)
    return model, model.forward(x)


@pytest.mark.rule("INIT-DEFERRED", "INIT-DEFAULT")
def test_sequential_deferred_shapes(adapter, check):
    model = adapter.sequential(SEQUENTIAL)
    model.initialize(seed=check.seed)

    # Only the first layer has its input size before the forward pass.
    check.equal(
        "shapes after initialize()",
        model.param_shapes(),
        {
            "0.weight": (5, 3),
            "0.bias": (5,),
            "1.weight": (25, None),
            "1.bias": (25,),
            "2.weight": (2, None),
            "2.bias": (2,),
        },
    )

    x = quantize(check.rng().uniform(-1, 1, size=(10, 3)), check.dtype)
    output = model.forward(x)
    check.equal("output shape", output.shape, (10, 2))
    check.equal(
        "shapes after forward",
        model.param_shapes(),
        {
            "0.weight": (5, 3),
            "0.bias": (5,),
            "1.weight": (25, 5),
            "1.bias": (25,),
            "2.weight": (2, 25),
            "2.bias": (2,),
        },
    )

    # initialize() with no argument: weights U(-0.07, 0.07), biases 0.
    values = model.params()
    check.law("weights", pooled_weights(values), init.Uniform(0.07).law((1,)))
    check_biases_zero(check, values)


@pytest.mark.rule("INIT-REINIT")
def test_constant_after_default_is_noop(adapter, check):
    model, _ = initialized_sequential(adapter, check)
    before = model.params()

    # net.initialize(init=init.Constant(3)) without force_reinit.
    messages = model.initialize(init.Constant(3.0))
    check.equal("warned", len(messages) > 0, True)
    after = model.params()
    for name in before:
        check.close(name, after[name], before[name], "exact")


@pytest.mark.rule("INIT-REINIT", "INIT-NORMAL")
def test_normal_with_force_reinit(adapter, check):
    model, _ = initialized_sequential(adapter, check)

    # net.initialize(init=init.Normal(sigma=0.2), force_reinit=True).
    model.initialize(init.Normal(0.2), force_reinit=True, seed=check.seed + 1)
    values = model.params()
    check.law("weights", pooled_weights(values), init.Normal(0.2).law((1,)))
    check_biases_zero(check, values)


def dense1(adapter, check):
    # net = gluon.nn.Dense(1); net.initialize(); nn_output = net(nn_input).
    model = adapter.sequential([LayerSpec("dense", 1)])
    model.initialize(seed=check.seed)
    x = quantize(NN_INPUT, check.dtype)
    label = quantize(GROUNDTRUTH_LABEL, check.dtype)
    check.record_inputs(x=x, label=label)
    output = model.forward(x)
    return model, x, label, output


@pytest.mark.rule("LOSS-L2-NORMALIZATION", "LOSS-L1-NORMALIZATION", "LOSS-CUSTOM", "INIT-DEFAULT")
def test_losses_on_dense_output(adapter, check):
    model, x, label, output = dense1(adapter, check)
    values = model.params()

    # The forward pass itself: x @ w.T + b, one product and one sum each.
    check.close(
        "nn_output",
        output,
        x @ values["0.weight"].T + values["0.bias"],
        "elementwise",
        scale=np.max(np.abs(x)) * np.max(np.abs(values["0.weight"])) + np.max(np.abs(values["0.bias"])),
    )

    # gloss.L2Loss()(nn_output, groundtruth_label) and the tutorial's own
    # np.mean((output - label)**2, axis=1) / 2, which is the same formula.
    l2, _ = adapter.loss("l2", output, label)
    check.close("L2Loss", l2, losses.l2_loss(output, label), "reduction", n=1)

    # gloss.L1Loss() and the custom L1 loss made by subclassing Loss.
    l1, _ = adapter.loss("l1", output, label)
    check.close("L1Loss", l1, losses.l1_loss(output, label), "reduction", n=1)
    custom, _ = adapter.custom_l1_loss(output, label)
    check.close("custom_L1_loss", custom, losses.l1_loss(output, label), "reduction", n=1)


def adam_trainer_after_step(adapter, check):
    model, x, label, _ = dense1(adapter, check)
    initial = model.params()

    # Trainer(..., 'Adam', {'learning_rate': 0.1, 'wd': 0.001}); the
    # tutorial's curr_weight = net.weight.data() is taken before the step.
    optimizer = optim.Adam(learning_rate=0.1, wd=0.001)
    trainer = adapter.trainer(model, optimizer)
    curr_weight = trainer.live_view("0.weight")

    # A backward pass of the summed L2 losses, then trainer.step(batch_size=5).
    model.forward_backward(x, label, "l2")
    trainer.step(len(x))
    return trainer, curr_weight, initial, optimizer, x, label


@pytest.mark.rule("TRAINER-RESCALE", "ADAM-UPDATE", "ADAM-WEIGHT-DECAY", "INIT-DEFAULT")
def test_adam_trainer_step(adapter, check):
    trainer, _, initial, optimizer, x, label = adam_trainer_after_step(adapter, check)

    # Reference: the gradient of the summed losses through Dense(1).
    pred = x @ initial["0.weight"].T + initial["0.bias"]
    dpred = losses.l2_loss_grad(pred, label)
    expected = optim.Trainer(initial, optimizer)
    expected.backward({"0.weight": dpred.T @ x, "0.bias": dpred.sum(axis=0)})
    expected.step(len(x))

    for name, value in expected.weights().items():
        check.close(name, trainer.weights()[name], value, "optimizer", scale=np.max(np.abs(value)) + 0.1)


@pytest.mark.rule("TRAINER-LIVE-DATA", "INIT-DEFAULT")
def test_curr_weight_shows_step(adapter, check):
    trainer, curr_weight, initial, _, _, _ = adam_trainer_after_step(adapter, check)

    # print(curr_weight) after the step shows the new weight, not the old one.
    check.close("curr_weight", trainer.read_live_view(curr_weight), trainer.weights()["0.weight"], "exact")
    check.equal("weight changed", bool(np.any(trainer.weights()["0.weight"] != initial["0.weight"])), True)


@pytest.mark.rule("TRAINER-STALE-GRAD", "INIT-DEFAULT")
def test_step_in_tutorial_order_raises(adapter, check):
    # The tutorial's own order: a forward pass outside autograd, no
    # backward, then trainer.step(5). Gluon raises the stale-gradient error.
    model, x, _, _ = dense1(adapter, check)
    trainer = adapter.trainer(model, optim.Adam(learning_rate=0.1, wd=0.001))
    with pytest.raises(StaleGradientError):
        trainer.step(len(x))
    check.equal("StaleGradientError raised", True, True)
