"""Self-tests of reference.losses: closed forms, hand-derived numbers and
central finite differences of every gradient."""

import numpy as np
import pytest

from reference import losses
from reference.errors import LabelShapeError

# The tutorial's Dense(1) input and label. With weight 0.01 and bias 0 the
# prediction is 0.01 * x = [0.012, 0.0056, 0.03, 0.0072, 0.0089], and
# pred - label = [0.0037, 0.00178, 0.00939, 0.00225, 0.00251].
TUTORIAL_X = np.array([1.2, 0.56, 3.0, 0.72, 0.89]).reshape(5, 1)
TUTORIAL_LABEL = np.array([0.0083, 0.00382, 0.02061, 0.00495, 0.00639]).reshape(5, 1)
TUTORIAL_PRED = 0.01 * TUTORIAL_X
TUTORIAL_DIFF = np.array([0.0037, 0.00178, 0.00939, 0.00225, 0.00251])


def central_difference(function, x, h=1e-6):
    """Return the gradient of the scalar ``function`` at ``x`` by central differences."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        grad[index] = (function(x + step) - function(x - step)) / (2 * h)
    return grad


def random_case(shape, seed):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=shape)
    # Keep |pred - label| >= 0.05 so the L1 kink at 0 lies outside the h-ball.
    gap = rng.uniform(0.05, 1.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return pred, pred - gap


# 1. Tutorial numbers, derived by hand -------------------------------------


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
def test_l2_tutorial_numbers():
    # (pred - label)^2 / 2, one value per sample, averaged over 1 element:
    # 0.0037^2/2 = 6.845e-6, 0.00178^2/2 = 1.5842e-6, 0.00939^2/2 = 4.408605e-5,
    # 0.00225^2/2 = 2.53125e-6, 0.00251^2/2 = 3.15005e-6.
    expected = np.array([6.845e-6, 1.5842e-6, 4.408605e-5, 2.53125e-6, 3.15005e-6])
    np.testing.assert_allclose(losses.l2_loss(TUTORIAL_PRED, TUTORIAL_LABEL), expected, rtol=1e-12)


@pytest.mark.rule("LOSS-L1-NORMALIZATION")
def test_l1_tutorial_numbers():
    np.testing.assert_allclose(losses.l1_loss(TUTORIAL_PRED, TUTORIAL_LABEL), TUTORIAL_DIFF, rtol=1e-12)


@pytest.mark.rule("LOSS-GRADIENT")
def test_l2_gradient_tutorial_numbers():
    # d/dpred of sum (pred - label)^2 / 2 = pred - label, per sample.
    grad = losses.l2_loss_grad(TUTORIAL_PRED, TUTORIAL_LABEL)
    np.testing.assert_allclose(grad.ravel(), TUTORIAL_DIFF, rtol=1e-12)


# 2. Normalization and weighting: closed forms ------------------------------


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
def test_l2_mean_over_non_batch_axes():
    # Sample 0 errors 1, 2, 3, 4 -> (1 + 4 + 9 + 16) / 4 / 2 = 3.75; sample 1 zero.
    pred = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]])
    label = np.array([[[0.0, 0.0], [0.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]])
    np.testing.assert_array_equal(losses.l2_loss(pred, label), [3.75, 0.0])
    np.testing.assert_array_equal(losses.l2_loss(pred, label, half=False), [7.5, 0.0])


@pytest.mark.rule("LOSS-L1-NORMALIZATION")
def test_l1_mean_over_non_batch_axes():
    pred = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 6.0]])
    label = np.zeros((2, 3))
    np.testing.assert_array_equal(losses.l1_loss(pred, label), [2.0, 2.0])


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
@pytest.mark.parametrize(("reduction", "expected"), [("mean", 1.875), ("sum", 7.5), ("none", [[0.5, 2.0], [4.5, 0.5]])])
def test_l2_other_reductions(reduction, expected):
    # Elementwise halves of 1, 4, 9, 1.
    pred = np.array([[1.0, 2.0], [3.0, 1.0]])
    np.testing.assert_array_equal(losses.l2_loss(pred, np.zeros((2, 2)), reduction=reduction), expected)


@pytest.mark.rule("LOSS-WEIGHTING")
def test_weight_and_sample_weight_multiply():
    pred = np.array([[2.0, 4.0], [6.0, 8.0]])
    label = np.zeros((2, 2))

    # sample_weight (2, 1) scales whole samples; weight 0.5 scales everything.
    # Sample 0: mean(2, 4) * 3 * 0.5 = 4.5; sample 1: mean(6, 8) * 0 * 0.5 = 0.
    sample_weight = np.array([[3.0], [0.0]])
    np.testing.assert_array_equal(losses.l1_loss(pred, label, weight=0.5, sample_weight=sample_weight), [4.5, 0.0])

    # sample_weight (2,) broadcasts along the last axis: per column.
    # Sample 0: (2*1 + 4*10) / 2 = 21; sample 1: (6 + 80) / 2 = 43.
    np.testing.assert_array_equal(losses.l1_loss(pred, label, sample_weight=np.array([1.0, 10.0])), [21.0, 43.0])


@pytest.mark.rule("LOSS-BATCH-AXIS")
def test_batch_axis_one():
    # Batch along axis 1: columns are samples. Column errors (1, 3) and (2, 4).
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    label = np.zeros((2, 2))
    np.testing.assert_array_equal(losses.l1_loss(pred, label, batch_axis=1), [2.0, 3.0])
    np.testing.assert_array_equal(losses.l2_loss(pred, label, batch_axis=1), [2.5, 5.0])


@pytest.mark.rule("LOSS-BATCH-AXIS")
def test_batch_axis_out_of_range():
    with pytest.raises(ValueError, match="invalid batch_axis 2"):
        losses.l1_loss(np.zeros((2, 2)), np.zeros((2, 2)), batch_axis=2)


# 3. Label shape -------------------------------------------------------------


@pytest.mark.rule("LOSS-LABEL-RESHAPE")
def test_label_same_size_is_reshaped_not_broadcast():
    # Prediction (3, 1) with label (3,): reshaped, so each sample meets its
    # own label and the loss is 0. Broadcasting would pair every prediction
    # with every label.
    pred = np.array([[1.0], [2.0], [3.0]])
    label = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(losses.l2_loss(pred, label), [0.0, 0.0, 0.0])


@pytest.mark.rule("LOSS-LABEL-RESHAPE")
def test_label_other_size_raises():
    with pytest.raises(LabelShapeError, match=r"label of shape \(4,\) \(4 elements\).*prediction of shape \(3, 1\)"):
        losses.l2_loss(np.zeros((3, 1)), np.zeros(4))
    assert issubclass(LabelShapeError, ValueError)


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
def test_invalid_reduction():
    with pytest.raises(ValueError, match="invalid reduction 'avg'.*'per_sample'"):
        losses.l2_loss(np.zeros(2), np.zeros(2), reduction="avg")


# 4. Gradients: central finite differences ----------------------------------

CASES = [
    ((4, 3), {}),
    ((4, 3), {"weight": 0.7, "sample_weight": np.array([[1.0], [2.0], [0.5], [3.0]])}),
    ((2, 3, 4), {"batch_axis": 1}),
    ((5, 1), {"reduction": "mean"}),
    ((3, 2), {"reduction": "sum", "weight": 2.0}),
]


@pytest.mark.rule("LOSS-GRADIENT", "LOSS-NONSCALAR-BACKWARD")
@pytest.mark.parametrize("name", ["l1", "l2"])
@pytest.mark.parametrize(("shape", "kwargs"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_gradient_matches_finite_differences(name, shape, kwargs):
    loss, loss_grad = losses.LOSSES[name]
    pred, label = random_case(shape, seed=len(shape) * 31 + len(kwargs))

    # The scalar whose gradient the reference returns: the sum of the losses.
    def total(p):
        return float(np.sum(loss(p, label, **kwargs)))

    numeric = central_difference(total, pred)
    np.testing.assert_allclose(loss_grad(pred, label, **kwargs), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.rule("LOSS-L2-NORMALIZATION")
def test_l2_half_variant_gradient():
    pred, label = random_case((3, 2), seed=5)
    full = losses.l2_loss_grad(pred, label, half=False)
    np.testing.assert_allclose(full, 2 * losses.l2_loss_grad(pred, label), rtol=1e-15)


@pytest.mark.rule("LOSS-CUSTOM")
def test_custom_l1_equals_l1_for_column_prediction():
    # The custom loss |label - pred| reshaped to (N,) is L1 for an (N, 1) prediction.
    custom = np.abs(TUTORIAL_LABEL - TUTORIAL_PRED).reshape(len(TUTORIAL_PRED))
    np.testing.assert_allclose(losses.l1_loss(TUTORIAL_PRED, TUTORIAL_LABEL), custom, rtol=1e-15)
