"""Conformance of the L1 and L2 losses, their gradients and custom losses.

Each case draws a prediction and a label from the case's seed, rounds them
to the run's dtype, and compares the framework's loss and the gradient of
its sum with the reference computed in float64 from the rounded values.
"""

import numpy as np
import pytest

from harness.cases import QUESTIONS, adapter_mode, quantize, reference_loss
from reference import losses
from reference.errors import LabelShapeError

SHAPES = {"column": (8, 1), "matrix": (16, 10), "rank3": (4, 5, 6)}


def make_inputs(check, shape, label_shape=None):
    """Draw pred and label with |pred - label| >= 0.05, away from the L1 kink."""
    rng = check.rng()
    pred = quantize(rng.normal(size=shape), check.dtype)
    gap = rng.uniform(0.05, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    label = quantize(pred - gap, check.dtype)
    if label_shape is not None:
        label = label.reshape(label_shape)
    check.record_inputs(pred=pred, label=label)
    return pred, label


def elements_per_sample(shape, batch_axis=0):
    return int(np.prod(shape)) // shape[batch_axis]


def check_loss(check, name, actual_loss, actual_grad, pred, label, question, profile, **kwargs):
    """Compare a framework's loss and gradient with the reference for one question."""
    loss, grad, choices = reference_loss(name, question, profile, check)
    arguments = {**kwargs, **choices}
    expected_loss = loss(pred, label, **arguments)
    expected_grad = grad(pred, label, **arguments)

    # The reduction sums at most all elements of the prediction.
    check.close("loss", actual_loss, expected_loss, "reduction", n=pred.size)
    check.close("gradient", actual_grad, expected_grad, "elementwise")

    # A native result is also measured against the canonical semantics.
    if question == "native":
        check.versus_canonical("loss", actual_loss, loss(pred, label, **kwargs), "reduction", n=pred.size)
        check.versus_canonical("gradient", actual_grad, grad(pred, label, **kwargs), "elementwise")


# 1. Normalization -------------------------------------------------------------


@pytest.mark.rule("LOSS-L1-NORMALIZATION")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_l1_normalization(adapter, check, profile, shape, question):
    pred, label = make_inputs(check, SHAPES[shape])
    actual_loss, actual_grad = adapter.loss("l1", pred, label, mode=adapter_mode(question))
    check_loss(check, "l1", actual_loss, actual_grad, pred, label, question, profile)


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_l2_normalization(adapter, check, profile, shape, question):
    pred, label = make_inputs(check, SHAPES[shape])
    actual_loss, actual_grad = adapter.loss("l2", pred, label, mode=adapter_mode(question))
    check_loss(check, "l2", actual_loss, actual_grad, pred, label, question, profile)


# 2. Weighting and batch axis ------------------------------------------------------


@pytest.mark.rule("LOSS-WEIGHTING")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("sample_weight", ["none", "per_sample", "full"])
@pytest.mark.parametrize("weight", [1.0, 0.5])
@pytest.mark.parametrize("name", ["l1", "l2"])
def test_weighting(adapter, check, profile, name, weight, sample_weight, question):
    shape = SHAPES["matrix"]
    pred, label = make_inputs(check, shape)

    # sample_weight of shape (N, 1) weights whole samples; (N, M) each element.
    weights = {
        "none": None,
        "per_sample": quantize(check.rng().uniform(0, 2, size=(shape[0], 1)), check.dtype),
        "full": quantize(check.rng().uniform(0, 2, size=shape), check.dtype),
    }[sample_weight]
    check.record_inputs(sample_weight=np.asarray(weights if weights is not None else []))

    actual_loss, actual_grad = adapter.loss(
        name, pred, label, weight=weight, sample_weight=weights, mode=adapter_mode(question)
    )
    check_loss(
        check, name, actual_loss, actual_grad, pred, label, question, profile, weight=weight, sample_weight=weights
    )


@pytest.mark.rule("LOSS-BATCH-AXIS")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize(("shape", "batch_axis"), [((5, 8), 1), ((3, 4, 2), 1), ((3, 4, 2), 2)])
@pytest.mark.parametrize("name", ["l1", "l2"])
def test_batch_axis(adapter, check, profile, name, shape, batch_axis, question):
    pred, label = make_inputs(check, shape)
    actual_loss, actual_grad = adapter.loss(name, pred, label, batch_axis=batch_axis, mode=adapter_mode(question))
    check_loss(check, name, actual_loss, actual_grad, pred, label, question, profile, batch_axis=batch_axis)


# 3. Label shape -----------------------------------------------------------------


@pytest.mark.rule("LOSS-LABEL-RESHAPE")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize(("pred_shape", "label_shape"), [((8, 1), (8,)), ((4, 6), (6, 4)), ((4, 6), (24,))])
@pytest.mark.parametrize("name", ["l1", "l2"])
def test_label_reshaped(adapter, check, profile, name, pred_shape, label_shape, question):
    # The label has the prediction's elements in another shape. Reshaping
    # pairs element i with element i; broadcasting (8, 1) with (8,) would pair
    # every prediction with every label.
    pred, label = make_inputs(check, pred_shape, label_shape)
    actual_loss, actual_grad = adapter.loss(name, pred, label, mode=adapter_mode(question))
    check_loss(check, name, actual_loss, actual_grad, pred, label, question, profile)


@pytest.mark.rule("LOSS-LABEL-RESHAPE")
@pytest.mark.parametrize(("pred_shape", "label_shape"), [((8, 1), (7,)), ((4, 6), (4, 5))])
@pytest.mark.parametrize("name", ["l1", "l2"])
def test_label_size_mismatch_raises(adapter, check, name, pred_shape, label_shape):
    rng = check.rng()
    pred = quantize(rng.normal(size=pred_shape), check.dtype)
    label = quantize(rng.normal(size=label_shape), check.dtype)
    check.record_inputs(pred=pred, label=label)
    with pytest.raises(LabelShapeError):
        adapter.loss(name, pred, label)
    check.equal("LabelShapeError raised", True, True)


# 4. Gradients, custom losses, non-scalar backward --------------------------------------


@pytest.mark.rule("LOSS-GRADIENT")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", ["l1", "l2"])
def test_gradient_of_summed_losses(adapter, check, profile, name, shape):
    pred, label = make_inputs(check, SHAPES[shape])
    _, actual_grad = adapter.loss(name, pred, label, weight=2.0)
    _, grad, _ = reference_loss(name, "canonical", profile)
    check.close("gradient", actual_grad, grad(pred, label, weight=2.0), "elementwise")


@pytest.mark.rule("LOSS-CUSTOM")
@pytest.mark.parametrize("shape", list(SHAPES))
def test_custom_l1_loss(adapter, check, shape):
    pred, label = make_inputs(check, SHAPES[shape])
    actual_loss, actual_grad = adapter.custom_l1_loss(pred, label)
    check.close("loss", actual_loss, losses.l1_loss(pred, label), "reduction", n=elements_per_sample(pred.shape))
    check.close("gradient", actual_grad, losses.l1_loss_grad(pred, label), "elementwise")


@pytest.mark.rule("LOSS-NONSCALAR-BACKWARD")
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("shape", ["column", "matrix"])
def test_nonscalar_backward(adapter, check, shape, question):
    # The gradient of a vector loss is that of its sum: head gradient ones.
    pred, label = make_inputs(check, SHAPES[shape])
    actual_grad = adapter.nonscalar_backward(pred, label, mode=adapter_mode(question))
    check.close("gradient", actual_grad, losses.l1_loss_grad(pred, label), "elementwise")
