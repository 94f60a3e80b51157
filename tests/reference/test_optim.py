"""Self-tests of reference.optim: first steps in closed form, trajectories
recomputed element by element from the written formulas, and the Trainer
rules."""

import math

import numpy as np
import pytest

from reference import optim
from reference.errors import StaleGradientError

WEIGHTS = np.array([0.5, -1.5, 2.0, 0.01])
GRADS = [
    np.array([4.0, -2.0, 0.5, 12.0]),
    np.array([-1.0, 3.0, 0.25, 8.0]),
    np.array([2.0, 2.0, -6.0, -1.0]),
    np.array([0.5, -0.5, 1.0, 3.0]),
    np.array([3.0, 1.0, -2.0, 0.0]),
    np.array([-2.5, 4.0, 0.1, -9.0]),
]
BATCH = 4
LEARNING_RATES = [0.1, 0.1, 0.1, 0.02, 0.02, 0.02]


def clip(x, c):
    return x if c is None else max(-c, min(c, x))


def run_trainer(optimizer, grads=GRADS, learning_rates=LEARNING_RATES, batch_size=BATCH):
    trainer = optim.Trainer({"w": WEIGHTS}, optimizer)
    for grad, lr in zip(grads, learning_rates):
        trainer.set_learning_rate(lr)
        trainer.backward({"w": grad})
        trainer.step(batch_size)
    return trainer.weights()["w"]


# 1. SGD ---------------------------------------------------------------------


@pytest.mark.rule("SGD-UPDATE")
def test_sgd_first_step_closed_form():
    # w - lr * (g / 4 + wd * w) with lr 0.1, wd 0.01:
    # 0.5 - 0.1 * (1.0 + 0.005) = 0.3995.
    weight = run_trainer(optim.SGD(wd=0.01), GRADS[:1], [0.1])
    assert weight[0] == pytest.approx(0.3995, rel=1e-14)


def sgd_by_hand(momentum, wd, clip_gradient, momentum_form, clip_order):
    """SGD written element by element from the formula in spec/optimizers.md."""
    out = []
    for i, w in enumerate(WEIGHTS):
        buffer = 0.0
        for grad, lr in zip(GRADS, LEARNING_RATES):
            g = grad[i] / BATCH
            g = clip(g, clip_gradient) + wd * w if clip_order == "clip_then_wd" else clip(g + wd * w, clip_gradient)
            if momentum == 0:
                w = w - lr * g
            elif momentum_form == "lr_inside":
                buffer = momentum * buffer - lr * g
                w = w + buffer
            else:
                buffer = momentum * buffer + g
                w = w - lr * buffer
        out.append(w)
    return np.array(out)


@pytest.mark.rule("SGD-TRAJECTORY", "SGD-MOMENTUM", "SGD-CLIP-ORDER", "OPTIM-IMPLEMENTATIONS")
@pytest.mark.parametrize("momentum_form", optim.MOMENTUM_FORMS)
@pytest.mark.parametrize("clip_order", optim.CLIP_ORDERS)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_trajectory_by_hand(momentum, clip_order, momentum_form):
    optimizer = optim.SGD(
        momentum=momentum, wd=0.05, clip_gradient=1.5, clip_order=clip_order, momentum_form=momentum_form
    )
    expected = sgd_by_hand(0.9 if momentum else 0.0, 0.05, 1.5, momentum_form, clip_order)
    np.testing.assert_allclose(run_trainer(optimizer), expected, rtol=1e-14)


@pytest.mark.rule("SGD-MOMENTUM")
def test_momentum_forms_agree_at_constant_rate():
    inside = run_trainer(optim.SGD(momentum=0.9), learning_rates=[0.1] * 6)
    outside = run_trainer(optim.SGD(momentum=0.9, momentum_form="lr_outside"), learning_rates=[0.1] * 6)
    np.testing.assert_allclose(inside, outside, rtol=1e-13)


@pytest.mark.rule("SGD-MOMENTUM")
def test_momentum_forms_differ_after_rate_change():
    inside = run_trainer(optim.SGD(momentum=0.9))
    outside = run_trainer(optim.SGD(momentum=0.9, momentum_form="lr_outside"))
    assert np.max(np.abs(inside - outside)) > 0.01


@pytest.mark.rule("SGD-CLIP-ORDER")
def test_sgd_clip_order_matters():
    # g / 4 = 3 clipped to 1, then wd * w = 0.5 * 0.01 added: step 1.005 * lr.
    # Clipping after adding 0.005 gives 1 instead.
    grads, rates = [np.array([0.0, 0.0, 0.0, 12.0])], [1.0]
    first = run_trainer(optim.SGD(wd=0.5), grads, rates)[3]
    second = run_trainer(optim.SGD(wd=0.5, clip_gradient=1.0), grads, rates)[3]
    third = run_trainer(optim.SGD(wd=0.5, clip_gradient=1.0, clip_order="wd_then_clip"), grads, rates)[3]
    assert first == pytest.approx(0.01 - 3.005, rel=1e-14)
    assert second == pytest.approx(0.01 - 1.005, rel=1e-14)
    assert third == pytest.approx(0.01 - 1.0, rel=1e-14)


@pytest.mark.rule("SGD-DEFAULTS")
def test_sgd_defaults():
    sgd = optim.SGD()
    assert (sgd.learning_rate, sgd.momentum, sgd.wd, sgd.clip_gradient) == (0.01, 0.0, 0.0, None)
    assert (sgd.clip_order, sgd.momentum_form, sgd.wd_mode) == ("clip_then_wd", "lr_inside", "coupled")


# 2. Adam ----------------------------------------------------------------------


def adam_by_hand(wd, clip_gradient, epsilon_placement, wd_mode, clip_order, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """Adam written element by element from the formula in spec/optimizers.md."""
    out = []
    for i, w in enumerate(WEIGHTS):
        m = v = 0.0
        for t, (grad, lr) in enumerate(zip(GRADS, LEARNING_RATES), start=1):
            g = grad[i] / BATCH
            if wd_mode == "decoupled":
                g = clip(g, clip_gradient)
                w = w - lr * wd * w
            elif clip_order == "wd_then_clip":
                g = clip(g + wd * w, clip_gradient)
            else:
                g = clip(g, clip_gradient) + wd * w
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            if epsilon_placement == "before_correction":
                w = w - lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (math.sqrt(v) + epsilon)
            else:
                w = w - lr * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + epsilon)
        out.append(w)
    return np.array(out)


@pytest.mark.rule(
    "ADAM-TRAJECTORY", "ADAM-UPDATE", "ADAM-EPSILON", "ADAM-WEIGHT-DECAY", "ADAM-CLIP-ORDER", "OPTIM-IMPLEMENTATIONS"
)
@pytest.mark.parametrize("epsilon_placement", optim.EPSILON_PLACEMENTS)
@pytest.mark.parametrize("wd_mode", optim.WD_MODES)
@pytest.mark.parametrize("clip_order", optim.CLIP_ORDERS)
def test_adam_trajectory_by_hand(epsilon_placement, wd_mode, clip_order):
    optimizer = optim.Adam(
        wd=0.05,
        clip_gradient=1.5,
        epsilon=1e-3,
        epsilon_placement=epsilon_placement,
        wd_mode=wd_mode,
        clip_order=clip_order,
    )
    expected = adam_by_hand(0.05, 1.5, epsilon_placement, wd_mode, clip_order, epsilon=1e-3)
    np.testing.assert_allclose(run_trainer(optimizer), expected, rtol=1e-13)


@pytest.mark.rule("ADAM-UPDATE")
def test_adam_first_step_is_about_lr_times_sign():
    # Step 1 with tiny epsilon: m_hat / sqrt(v_hat) = g / |g| = sign(g).
    weight = run_trainer(optim.Adam(learning_rate=0.1, epsilon=1e-12), GRADS[:1], [0.1])
    np.testing.assert_allclose(weight, WEIGHTS - 0.1 * np.sign(GRADS[0]), rtol=1e-9)


@pytest.mark.rule("ADAM-EPSILON")
def test_adam_epsilon_placement_factor():
    # beta2 0.999, g 1e-4, epsilon 1e-3. After the correction the step is
    # lr * g / (g + eps) = lr / 11. Before it: lr * sqrt(0.001) * g / (sqrt(0.001) g + eps)
    # = lr * 3.1623e-6 / 1.0031623e-3. The ratio is 28.8.
    def first_step(placement):
        trainer = optim.Trainer(
            {"w": np.zeros(1)}, optim.Adam(learning_rate=1.0, epsilon=1e-3, epsilon_placement=placement)
        )
        trainer.backward({"w": np.array([1e-4])})
        trainer.step(1)
        return -trainer.weights()["w"][0]

    after, before = first_step("after_correction"), first_step("before_correction")
    assert after == pytest.approx(1e-4 / 1.1e-3, rel=1e-12)
    assert before == pytest.approx(math.sqrt(1e-3) * 1e-4 / (math.sqrt(1e-3) * 1e-4 + 1e-3), rel=1e-12)
    assert 28.5 < after / before < 29.0


@pytest.mark.rule("ADAM-EPSILON")
@pytest.mark.parametrize("steps", [1, 3])
def test_epsilon_before_equals_after_with_larger_epsilon(steps):
    # Before the correction with epsilon equals after it with epsilon / sqrt(1 - beta2^t),
    # so a per-step epsilon turns one placement into the other.
    epsilon = 1e-3
    before = optim.Trainer({"w": WEIGHTS}, optim.Adam(learning_rate=0.1, epsilon=epsilon))
    after = optim.Trainer({"w": WEIGHTS}, optim.Adam(learning_rate=0.1, epsilon_placement="after_correction"))
    for t, grad in enumerate(GRADS[:steps], start=1):
        after.optimizer.epsilon = epsilon / math.sqrt(1 - 0.999**t)
        for trainer in (before, after):
            trainer.backward({"w": grad * 1e-3})
            trainer.step(BATCH)
    np.testing.assert_allclose(after.weights()["w"], before.weights()["w"], rtol=1e-13)


@pytest.mark.rule("ADAM-WEIGHT-DECAY")
def test_adam_decoupled_decay_shrinks_weight():
    # With a zero gradient, coupled decay still moves the moments; decoupled
    # decay scales the weight by (1 - lr * wd) and the Adam step is 0.
    zero = [np.zeros(4)]
    decoupled = run_trainer(optim.Adam(learning_rate=0.1, wd=0.5, wd_mode="decoupled"), zero, [0.1])
    np.testing.assert_allclose(decoupled, WEIGHTS * (1 - 0.05), rtol=1e-15)
    coupled = run_trainer(optim.Adam(learning_rate=0.1, wd=0.5), zero, [0.1])
    assert np.all(np.abs(coupled - WEIGHTS) > 0.09)


@pytest.mark.rule("ADAM-DEFAULTS")
def test_adam_defaults():
    adam = optim.Adam()
    assert (adam.learning_rate, adam.beta1, adam.beta2, adam.epsilon, adam.wd) == (0.001, 0.9, 0.999, 1e-8, 0.0)
    assert (adam.clip_order, adam.wd_mode, adam.epsilon_placement) == ("wd_then_clip", "coupled", "before_correction")


@pytest.mark.rule("ADAM-UPDATE")
def test_adam_without_bias_correction():
    # m = 0.1 g, v = 0.001 g^2: step = lr * 0.1 g / (sqrt(0.001) |g|) = lr * 3.16228 sign(g).
    weight = run_trainer(
        optim.Adam(learning_rate=0.01, epsilon=0.0, bias_correction=False), [np.array([1.0] * 4)], [0.01]
    )
    np.testing.assert_allclose(weight, WEIGHTS - 0.01 * 0.1 / math.sqrt(0.001), rtol=1e-14)


# 3. Trainer ---------------------------------------------------------------------


@pytest.mark.rule("TRAINER-RESCALE")
def test_step_rescales_by_batch_size():
    # Sum of per-sample gradients 8 over batch 4: the SGD step uses 2.
    trainer = optim.Trainer({"w": np.array([1.0])}, optim.SGD(learning_rate=0.5))
    trainer.backward({"w": np.array([8.0])})
    trainer.step(4)
    assert trainer.weights()["w"][0] == 0.0


@pytest.mark.rule("TRAINER-RESCALE")
def test_mean_loss_then_step_divides_twice():
    # A loss already averaged over the batch has gradient 8 / 4 = 2, and
    # step(4) divides again: the update uses 0.5, a quarter of the mean gradient.
    trainer = optim.Trainer({"w": np.array([1.0])}, optim.SGD(learning_rate=0.5))
    trainer.backward({"w": np.array([8.0 / 4])})
    trainer.step(4)
    assert trainer.weights()["w"][0] == 0.75


@pytest.mark.rule("TRAINER-STALE-GRAD")
def test_step_without_backward_raises():
    trainer = optim.Trainer({"a": np.ones(2), "b": np.ones(2)}, optim.SGD())
    with pytest.raises(StaleGradientError, match="a, b.*ignore_stale_grad=True"):
        trainer.step(1)


@pytest.mark.rule("TRAINER-STALE-GRAD")
def test_ignore_stale_grad_skips_parameter():
    trainer = optim.Trainer({"a": np.ones(2), "b": np.ones(2)}, optim.Adam(learning_rate=0.1))
    trainer.backward({"a": np.ones(2), "b": np.ones(2)})
    trainer.step(1)

    # Only "a" gets a new gradient: "b" keeps its values and its update count.
    trainer.backward({"a": np.ones(2)})
    b_before = trainer.weights()["b"]
    trainer.step(1, ignore_stale_grad=True)
    np.testing.assert_array_equal(trainer.weights()["b"], b_before)
    assert trainer.slots["a"].count == 2
    assert trainer.slots["b"].count == 1

    # A second step with no backward at all raises again.
    with pytest.raises(StaleGradientError):
        trainer.step(1)


@pytest.mark.rule("TRAINER-GRAD-ACCUMULATE")
def test_grad_req_add_accumulates_until_zeroed():
    trainer = optim.Trainer({"w": np.zeros(2)}, optim.SGD(), grad_req="add")
    trainer.backward({"w": np.array([1.0, 2.0])})
    trainer.backward({"w": np.array([10.0, 20.0])})
    np.testing.assert_array_equal(trainer.grads()["w"], [11.0, 22.0])

    trainer.zero_grad()
    trainer.backward({"w": np.array([3.0, 4.0])})
    np.testing.assert_array_equal(trainer.grads()["w"], [3.0, 4.0])


@pytest.mark.rule("TRAINER-GRAD-ACCUMULATE")
def test_grad_req_write_replaces():
    trainer = optim.Trainer({"w": np.zeros(2)}, optim.SGD())
    trainer.backward({"w": np.array([1.0, 2.0])})
    trainer.backward({"w": np.array([10.0, 20.0])})
    np.testing.assert_array_equal(trainer.grads()["w"], [10.0, 20.0])


@pytest.mark.rule("TRAINER-LIVE-DATA")
def test_weights_returns_copies():
    # The reference returns copies; live views are a framework property that
    # the conformance test checks through the adapter.
    trainer = optim.Trainer({"w": np.ones(2)}, optim.SGD(learning_rate=1.0))
    before = trainer.weights()["w"]
    trainer.backward({"w": np.ones(2)})
    trainer.step(1)
    np.testing.assert_array_equal(before, [1.0, 1.0])
    np.testing.assert_array_equal(trainer.weights()["w"], [0.0, 0.0])


# 4. Invalid arguments ---------------------------------------------------------------


@pytest.mark.rule("TRAINER-RESCALE")
@pytest.mark.parametrize("batch_size", [0, -3, float("nan")])
def test_invalid_batch_size(batch_size):
    trainer = optim.Trainer({"w": np.ones(1)}, optim.SGD())
    trainer.backward({"w": np.ones(1)})
    with pytest.raises(ValueError, match=f"invalid batch_size {batch_size!r}: expected a number > 0"):
        trainer.step(batch_size)


@pytest.mark.rule("SGD-UPDATE", "ADAM-UPDATE")
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: optim.SGD(learning_rate=-0.1), "invalid learning_rate -0.1"),
        (lambda: optim.Adam(learning_rate=-1.0), "invalid learning_rate -1.0"),
        (lambda: optim.Adam(epsilon=-1e-8), "invalid epsilon -1e-08"),
        (lambda: optim.Adam(beta1=1.0), r"invalid beta1 1.0: expected a number in \[0, 1\)"),
        (lambda: optim.Adam(beta2=-0.1), "invalid beta2 -0.1"),
        (lambda: optim.SGD(momentum=1.5), "invalid momentum 1.5"),
        (lambda: optim.SGD(clip_gradient=0.0), "invalid clip_gradient 0.0"),
        (lambda: optim.SGD(clip_order="never"), "invalid clip_order 'never'.*'clip_then_wd', 'wd_then_clip'"),
        (lambda: optim.Adam(epsilon_placement="inside"), "invalid epsilon_placement 'inside'"),
        (lambda: optim.make_optimizer("rmsprop"), "invalid optimizer 'rmsprop'.*'sgd', 'adam'"),
        (lambda: optim.Trainer({}, optim.SGD(), grad_req="null"), "invalid grad_req 'null'"),
    ],
)
def test_invalid_optimizer_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# 5. Norm clipping ------------------------------------------------------------------


@pytest.mark.rule("OPTIM-CLIP-NORM")
def test_clip_norm_per_tensor_and_global():
    # ||a|| = 5 and ||b|| = 12: clip_norm 1 scales a by 1/5 and b by 1/12.
    grads = {"a": np.array([3.0, 4.0]), "b": np.array([12.0, 0.0])}
    per_tensor = optim.clip_by_norm(grads, clip_norm=1.0)
    np.testing.assert_allclose(per_tensor["a"], [0.6, 0.8], rtol=1e-15)
    np.testing.assert_allclose(per_tensor["b"], [1.0, 0.0], rtol=1e-15)

    # The global norm is sqrt(25 + 144) = 13: global_clip_norm 6.5 halves both.
    both = optim.clip_by_norm(grads, global_clip_norm=6.5)
    np.testing.assert_allclose(both["a"], [1.5, 2.0], rtol=1e-15)
    np.testing.assert_allclose(both["b"], [6.0, 0.0], rtol=1e-15)

    # Norms under the limit leave the gradients unchanged.
    np.testing.assert_array_equal(optim.clip_by_norm(grads, clip_norm=100.0)["a"], grads["a"])


@pytest.mark.rule("OPTIM-CLIP-NORM")
def test_trainer_clips_norm_after_rescale_before_wd():
    # Gradient [30, 40] over batch 10 -> [3, 4], norm 5, clipped to norm 1:
    # [0.6, 0.8]; then wd 0.5 * w adds [0.5, 0.5]; SGD lr 1.
    trainer = optim.Trainer({"w": np.ones(2)}, optim.SGD(learning_rate=1.0, wd=0.5, clip_norm=1.0))
    trainer.backward({"w": np.array([30.0, 40.0])})
    trainer.step(10)
    np.testing.assert_allclose(trainer.weights()["w"], [1 - 1.1, 1 - 1.3], rtol=1e-14)


@pytest.mark.rule("OPTIM-CLIP-NORM")
def test_invalid_clip_norm():
    with pytest.raises(ValueError, match="invalid global_clip_norm -1.0"):
        optim.Adam(global_clip_norm=-1.0)
