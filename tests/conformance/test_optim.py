"""Conformance of SGD, Adam and the Trainer step.

Gradients are injected through the framework's autograd (the adapter
back-propagates ``sum(param * grad)``), so the optimizer receives exactly the
drawn gradient. After every step the parameters are compared with the
reference Trainer fed the same gradients.
"""

import numpy as np
import pytest

from adapters.base import LayerSpec
from harness.cases import QUESTIONS, adapter_mode, quantize, reference_optimizer
from reference import init, losses, optim
from reference.errors import StaleGradientError

SHAPES = {"w": (4, 5), "b": (5,)}
BATCH_SIZE = 4
# A learning-rate change after the third step separates the momentum forms.
SCHEDULE = [0.1, 0.1, 0.1, 0.02, 0.02, 0.02]


def draw_params(check, scale=1.0):
    rng = check.rng()
    params = {name: quantize(rng.normal(scale=scale, size=shape), check.dtype) for name, shape in SHAPES.items()}
    check.record_inputs(**{f"param_{name}": value for name, value in params.items()})
    return params


def draw_grads(check, steps, scale=1.0):
    rng = np.random.default_rng(check.seed + 1)
    grads = [
        {name: quantize(rng.normal(scale=scale, size=shape), check.dtype) for name, shape in SHAPES.items()}
        for _ in range(steps)
    ]
    check.record_inputs(**{f"grad{step}_{name}": g[name] for step, g in enumerate(grads) for name in g})
    return grads


def run_both(adapter, check, optimizer_name, question, profile, hyperparameters, *, schedule, grad_scale=1.0):
    """Step the framework and the reference side by side and compare after each step."""
    params = draw_params(check)
    grads = draw_grads(check, len(schedule), grad_scale)

    # The reference optimizer for the question; the adapter gets the same hyperparameters.
    expected_optimizer = reference_optimizer(optimizer_name, question, profile, check, **hyperparameters)
    requested = optim.make_optimizer(optimizer_name, **hyperparameters)
    trainer = adapter.trainer(params, requested, mode=adapter_mode(question))
    expected = optim.Trainer(params, expected_optimizer)
    canonical = optim.Trainer(params, requested) if question == "native" else None
    step_all(check, trainer, expected, canonical, params, grads, schedule)
    return trainer, expected


def step_all(check, trainer, expected, canonical, params, grads, schedule):
    """Step the framework and the references together, comparing after each step.

    ``canonical`` (native questions only) is measured against without failing.
    """
    references = [expected] if canonical is None else [expected, canonical]
    for step, (lr, grad) in enumerate(zip(schedule, grads), start=1):
        if lr is not None and lr != expected.learning_rate:
            trainer.set_learning_rate(lr)
            for reference in references:
                reference.set_learning_rate(lr)
        trainer.backward(grad)
        trainer.step(BATCH_SIZE)
        for reference in references:
            reference.backward(grad)
            reference.step(BATCH_SIZE)

        actual_weights, expected_weights = trainer.weights(), expected.weights()
        for name in SHAPES:
            scale = max(np.max(np.abs(expected_weights[name])), np.max(np.abs(params[name])))
            what = f"{name} after step {step}"
            check.close(what, actual_weights[name], expected_weights[name], "optimizer", steps=step, scale=scale)
            if canonical is not None:
                canonical_weights = canonical.weights()[name]
                check.versus_canonical(
                    what, actual_weights[name], canonical_weights, "optimizer", steps=step, scale=scale
                )


def defaults_question(adapter, check, profile, optimizer_name, question):
    """Run three steps with every hyperparameter at its default."""
    params = draw_params(check)
    # Adam's rescaled gradients of about 1e-8 sit at the default epsilon, so
    # a different default epsilon (Keras: 1e-7) changes the step visibly.
    grads = draw_grads(check, 3, 4e-8 if optimizer_name == "adam" else 1.0)
    canonical_optimizer = optim.make_optimizer(optimizer_name)
    if question == "canonical":
        trainer = adapter.trainer(params, canonical_optimizer)
        expected, canonical = optim.Trainer(params, canonical_optimizer), None
    else:
        optimizer = reference_optimizer(optimizer_name, "native", profile, check)
        trainer = adapter.trainer(params, canonical_optimizer, mode="native_defaults")
        expected, canonical = optim.Trainer(params, optimizer), optim.Trainer(params, canonical_optimizer)
    step_all(check, trainer, expected, canonical, params, grads, [None] * len(grads))


# 1. SGD -----------------------------------------------------------------------------


@pytest.mark.rule("SGD-UPDATE")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_update(adapter, check, profile, wd, question):
    run_both(adapter, check, "sgd", question, profile, {"learning_rate": 0.1, "wd": wd}, schedule=[0.1, 0.1])


@pytest.mark.rule("SGD-MOMENTUM")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("schedule", ["constant", "changed"])
def test_sgd_momentum(adapter, check, profile, schedule, question):
    rates = [0.1] * 6 if schedule == "constant" else SCHEDULE
    run_both(adapter, check, "sgd", question, profile, {"learning_rate": 0.1, "momentum": 0.9}, schedule=rates)


@pytest.mark.rule("SGD-CLIP-ORDER")
@pytest.mark.parametrize("question", QUESTIONS)
def test_sgd_clip_order(adapter, check, profile, question):
    # Rescaled gradients of size ~1 clipped to 0.3, weight decay 0.5 of
    # weights of size ~1: the two orders differ by about lr * 0.5.
    hyperparameters = {"learning_rate": 0.1, "wd": 0.5, "clip_gradient": 0.3}
    run_both(adapter, check, "sgd", question, profile, hyperparameters, schedule=[0.1, 0.1], grad_scale=4.0)


@pytest.mark.rule("SGD-TRAJECTORY")
@pytest.mark.parametrize("question", QUESTIONS)
def test_sgd_trajectory(adapter, check, profile, question):
    hyperparameters = {"learning_rate": 0.1, "momentum": 0.9, "wd": 0.01, "clip_gradient": 0.5}
    run_both(adapter, check, "sgd", question, profile, hyperparameters, schedule=SCHEDULE, grad_scale=2.0)


@pytest.mark.rule("SGD-DEFAULTS")
@pytest.mark.parametrize("question", QUESTIONS)
def test_sgd_defaults(adapter, check, profile, question):
    defaults_question(adapter, check, profile, "sgd", question)


# 2. Adam ----------------------------------------------------------------------------


@pytest.mark.rule("ADAM-UPDATE")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)], ids=["default_betas", "low_betas"])
def test_adam_update(adapter, check, profile, betas, question):
    hyperparameters = {"learning_rate": 0.01, "beta1": betas[0], "beta2": betas[1]}
    trainer, expected = run_both(adapter, check, "adam", question, profile, hyperparameters, schedule=[0.01] * 3)

    # The moment estimates are part of the rule: compare them too.
    states = trainer.states()
    for name in SHAPES:
        mean, variance = expected.slots[name].state
        check.close(f"{name} mean", states[name]["mean"], mean, "optimizer", steps=3)
        check.close(f"{name} variance", states[name]["variance"], variance, "optimizer", steps=3)


@pytest.mark.rule("ADAM-EPSILON")
@pytest.mark.parametrize("question", QUESTIONS)
def test_adam_epsilon_placement(adapter, check, profile, question):
    # Gradients of ~1e-4 (after rescale by 1/4) with epsilon 1e-3: the two
    # placements differ by a factor of up to ~29 in the first step.
    hyperparameters = {"learning_rate": 0.1, "epsilon": 1e-3}
    run_both(adapter, check, "adam", question, profile, hyperparameters, schedule=[0.1] * 3, grad_scale=4e-4)


@pytest.mark.rule("ADAM-WEIGHT-DECAY")
@pytest.mark.parametrize("question", QUESTIONS)
def test_adam_weight_decay(adapter, check, profile, question):
    run_both(adapter, check, "adam", question, profile, {"learning_rate": 0.1, "wd": 0.1}, schedule=[0.1] * 3)


@pytest.mark.rule("ADAM-WEIGHT-DECAY")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_decoupled_weight_decay(adapter, check, optimizer_name):
    # Not the canonical choice: the variant that AdamW and Keras 3 use. The
    # case shows which frameworks can express it and how.
    optimizer = optim.make_optimizer(optimizer_name, learning_rate=0.1, wd=0.1, wd_mode="decoupled")
    params = draw_params(check)
    grads = draw_grads(check, 3)
    trainer = adapter.trainer(params, optimizer)
    expected = optim.Trainer(params, optimizer)
    for step, grad in enumerate(grads, start=1):
        trainer.backward(grad)
        expected.backward(grad)
        trainer.step(BATCH_SIZE)
        expected.step(BATCH_SIZE)
        for name in SHAPES:
            check.close(
                f"{name} after step {step}",
                trainer.weights()[name],
                expected.weights()[name],
                "optimizer",
                steps=step,
                scale=np.max(np.abs(params[name])),
            )


@pytest.mark.rule("ADAM-CLIP-ORDER")
@pytest.mark.parametrize("question", QUESTIONS)
def test_adam_clip_order(adapter, check, profile, question):
    hyperparameters = {"learning_rate": 0.1, "wd": 0.5, "clip_gradient": 0.3}
    run_both(adapter, check, "adam", question, profile, hyperparameters, schedule=[0.1] * 3, grad_scale=4.0)


@pytest.mark.rule("ADAM-TRAJECTORY")
@pytest.mark.parametrize("question", QUESTIONS)
def test_adam_trajectory(adapter, check, profile, question):
    hyperparameters = {"learning_rate": 0.1, "wd": 0.01, "clip_gradient": 0.5}
    run_both(adapter, check, "adam", question, profile, hyperparameters, schedule=SCHEDULE, grad_scale=2.0)


@pytest.mark.rule("ADAM-DEFAULTS")
@pytest.mark.parametrize("question", QUESTIONS)
def test_adam_defaults(adapter, check, profile, question):
    defaults_question(adapter, check, profile, "adam", question)


# 3. Norm clipping and implementations -------------------------------------------------


@pytest.mark.rule("OPTIM-CLIP-NORM")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("clip", ["clip_norm", "global_clip_norm"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_clip_norm(adapter, check, profile, optimizer_name, clip, question):
    # Gradients of norm ~4 * sqrt(20) / 4 after rescale, clipped to norm 0.5.
    hyperparameters = {"learning_rate": 0.1, "wd": 0.01, clip: 0.5}
    run_both(adapter, check, optimizer_name, question, profile, hyperparameters, schedule=[0.1] * 3, grad_scale=4.0)


@pytest.mark.rule("OPTIM-IMPLEMENTATIONS")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_every_implementation(adapter, check, optimizer_name):
    # Each native implementation runs the same trajectory as the reference.
    hyperparameters = {"learning_rate": 0.1, "wd": 0.01}
    if optimizer_name == "sgd":
        hyperparameters["momentum"] = 0.9
    params = draw_params(check)
    grads = draw_grads(check, len(SCHEDULE))
    for implementation in adapter.optimizer_implementations(optimizer_name):
        optimizer = optim.make_optimizer(optimizer_name, **hyperparameters)
        trainer = adapter.trainer(params, optimizer, implementation=implementation)
        expected = optim.Trainer(params, optimizer)
        for lr, grad in zip(SCHEDULE, grads):
            trainer.set_learning_rate(lr)
            expected.set_learning_rate(lr)
            trainer.backward(grad)
            expected.backward(grad)
            trainer.step(BATCH_SIZE)
            expected.step(BATCH_SIZE)
        for name in SHAPES:
            check.close(
                f"{implementation}: {name} after {len(SCHEDULE)} steps",
                trainer.weights()[name],
                expected.weights()[name],
                "optimizer",
                steps=len(SCHEDULE),
                scale=np.max(np.abs(params[name])),
            )


# 4. Trainer -------------------------------------------------------------------------


@pytest.mark.rule("TRAINER-RESCALE")
@pytest.mark.parametrize("batch_size", [1, 5, 32])
def test_step_rescales_summed_gradient(adapter, check, batch_size):
    # Dense(1) with fixed weights; the loss is summed over the batch by the
    # backward pass, and step(batch_size) turns the sum into the mean.
    rng = check.rng()
    x = quantize(rng.normal(size=(batch_size, 3)), check.dtype)
    label = quantize(rng.normal(size=(batch_size, 1)), check.dtype)
    weight = quantize(rng.normal(size=(1, 3)), check.dtype)
    bias = quantize(rng.normal(size=(1,)), check.dtype)
    check.record_inputs(x=x, label=label, weight=weight, bias=bias)

    # Zero, then the drawn values: the case does not depend on random initialization.
    model = adapter.sequential([LayerSpec("dense", 1, 3)])
    model.initialize(init.Zero())
    model.set_params({"0.weight": weight, "0.bias": bias})
    trainer = adapter.trainer(model, optim.SGD(learning_rate=0.1))
    model.forward_backward(x, label, "l2")
    trainer.step(batch_size)

    # Reference: dL/dpred of the summed L2 losses, chained through the layer.
    pred = x @ weight.T + bias
    dpred = losses.l2_loss_grad(pred, label)
    expected = optim.Trainer({"0.weight": weight, "0.bias": bias}, optim.SGD(learning_rate=0.1))
    expected.backward({"0.weight": dpred.T @ x, "0.bias": dpred.sum(axis=0)})
    expected.step(batch_size)
    # The gradient sums batch_size products of 3-term dot products, so the
    # error is that of a reduction of about batch_size + 3 terms, relative to
    # the weights and the update (both of size ~1).
    for name, value in expected.weights().items():
        check.close(
            name, trainer.weights()[name], value, "reduction", n=batch_size + 3, scale=np.max(np.abs(value)) + 1
        )


@pytest.mark.rule("TRAINER-STALE-GRAD")
def test_step_without_backward_raises(adapter, check):
    trainer = adapter.trainer(draw_params(check), optim.SGD(learning_rate=0.1))
    with pytest.raises(StaleGradientError):
        trainer.step(BATCH_SIZE)
    check.equal("StaleGradientError raised", True, True)


def run_plan(adapter, check, optimizer_name, plan):
    """Run steps of ``(parameters with a backward pass, ignore_stale_grad)``
    on the framework and the reference, comparing after each step."""
    params = draw_params(check)
    grads = draw_grads(check, len(plan))
    optimizer = optim.make_optimizer(optimizer_name, learning_rate=0.1)
    trainer = adapter.trainer(params, optimizer)
    expected = optim.Trainer(params, optimizer)
    for step, ((names, ignore), grad) in enumerate(zip(plan, grads), start=1):
        subset = {name: grad[name] for name in names}
        trainer.backward(subset)
        expected.backward(subset)
        yield trainer, step, ignore
        trainer.step(BATCH_SIZE, ignore_stale_grad=ignore)
        expected.step(BATCH_SIZE, ignore_stale_grad=ignore)
        for name in SHAPES:
            check.close(
                f"{name} after step {step}",
                trainer.weights()[name],
                expected.weights()[name],
                "optimizer",
                steps=step,
                scale=np.max(np.abs(params[name])),
            )


@pytest.mark.rule("TRAINER-STALE-GRAD")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_ignore_stale_grad_skips(adapter, check, optimizer_name):
    # Step 2 has a fresh gradient for "w" only, so it skips "b". At step 3
    # Adam is at its second update of "b" and its third of "w".
    plan = [(("w", "b"), False), (("w",), True), (("w", "b"), False)]
    for _ in run_plan(adapter, check, optimizer_name, plan):
        pass


@pytest.mark.rule("TRAINER-STALE-GRAD")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_failed_step_changes_nothing(adapter, check, optimizer_name):
    # A step that raises the stale-gradient error must leave everything as
    # it was, so a retry with ignore_stale_grad=True still updates "w".
    plan = [(("w", "b"), False), (("w",), True)]
    for trainer, step, _ in run_plan(adapter, check, optimizer_name, plan):
        if step == 2:
            with pytest.raises(StaleGradientError):
                trainer.step(BATCH_SIZE)


@pytest.mark.rule("TRAINER-GRAD-ACCUMULATE")
@pytest.mark.parametrize("grad_req", ["write", "add", "native"])
def test_gradient_accumulation(adapter, check, profile, grad_req):
    # "native": the framework's default, compared with the profile's choice.
    params = draw_params(check)
    grads = draw_grads(check, 3)
    if grad_req == "native":
        native = profile.native_choices("trainer")["grad_req"]
        check.note_native_choices("trainer", {"grad_req": native} if native != "write" else {})
        trainer = adapter.trainer(params, optim.SGD(), mode="native")
        expected = optim.Trainer(params, optim.SGD(), grad_req=native)
        canonical = optim.Trainer(params, optim.SGD())
    else:
        trainer = adapter.trainer(params, optim.SGD(), grad_req=grad_req)
        expected = optim.Trainer(params, optim.SGD(), grad_req=grad_req)
        canonical = None

    # Two backward passes, then zero, then one more.
    references = [expected] if canonical is None else [expected, canonical]
    for label, action in [("first", 0), ("second", 1), ("zeroed", None), ("after zero", 2)]:
        if action is None:
            trainer.zero_grad()
        else:
            trainer.backward(grads[action])
        for reference in references:
            if action is None:
                reference.zero_grad()
            else:
                reference.backward(grads[action])
        for name in SHAPES:
            what = f"{name} gradient, {label}"
            scale = np.max(np.abs(expected.grads()[name])) + 1
            check.close(what, trainer.grads()[name], expected.grads()[name], "elementwise", scale=scale)
            if canonical is not None:
                check.versus_canonical(what, trainer.grads()[name], canonical.grads()[name], "elementwise", scale=scale)


@pytest.mark.rule("TRAINER-LIVE-DATA")
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_data_is_updated_in_place(adapter, check, optimizer_name):
    params = draw_params(check)
    grads = draw_grads(check, 1)
    trainer = adapter.trainer(params, optim.make_optimizer(optimizer_name, learning_rate=0.1))

    # A reference taken before the step shows exactly the values after it,
    # and those differ from the values before it.
    view = trainer.live_view("w")
    trainer.backward(grads[0])
    trainer.step(BATCH_SIZE)
    check.close("w through the earlier reference", trainer.read_live_view(view), trainer.weights()["w"], "exact")
    check.equal("w changed by the step", bool(np.any(trainer.weights()["w"] != params["w"])), True)
