"""Reference L1 and L2 losses and their gradients.

The canonical losses are Gluon's ``L1Loss`` and ``L2Loss``: the elementwise
error, multiplied by ``sample_weight`` (broadcast to the prediction's shape)
and by the scalar ``weight``, then averaged over every axis except
``batch_axis``, giving one value per sample. L2 is half the squared error.

NOTE: Semantic variants. ``half`` drops or keeps the 1/2 of L2 (Gluon keeps
it, PyTorch's ``MSELoss`` and Keras' ``MeanSquaredError`` drop it).
``reduction`` selects how the weighted elementwise loss is reduced:
``"per_sample"`` (the mean over non-batch axes, shape ``(N,)``), ``"none"``
(no reduction), ``"mean"`` (one scalar, the mean over every element) or
``"sum"`` (one scalar).
"""

from __future__ import annotations

import numpy as np

from reference.errors import LabelShapeError, check_choice

REDUCTIONS = ("per_sample", "none", "mean", "sum")


def reshape_label(pred, label):
    """Return ``label`` reshaped to ``pred``'s shape.

    A label with the same number of elements as the prediction is reshaped;
    any other label raises ``LabelShapeError``.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if label.size != pred.size:
        raise LabelShapeError(
            f"label of shape {label.shape} ({label.size} elements) does not match "
            f"prediction of shape {pred.shape} ({pred.size} elements): "
            "the label must have the same number of elements"
        )
    return label.reshape(pred.shape)


def _check_batch_axis(pred, batch_axis):
    if not -pred.ndim <= batch_axis < pred.ndim:
        raise ValueError(f"invalid batch_axis {batch_axis}: expected an axis of a {pred.ndim}-D prediction")
    return batch_axis % pred.ndim


def _weights(shape, weight, sample_weight):
    # The product weight * sample_weight, broadcast to the elementwise loss.
    factor = np.full(shape, float(weight), dtype=np.float64)
    if sample_weight is not None:
        factor = factor * np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), shape)
    return factor


def _reduce(elementwise, batch_axis, reduction):
    if reduction == "none":
        return elementwise
    if reduction == "mean":
        return elementwise.mean()
    if reduction == "sum":
        return elementwise.sum()
    other_axes = tuple(a for a in range(elementwise.ndim) if a != batch_axis)
    return elementwise.mean(axis=other_axes)


def _reduction_grad(shape, batch_axis, reduction):
    # d(sum of the reduced loss) / d(elementwise loss): the same for every element.
    if reduction in ("none", "sum"):
        return 1.0
    count = int(np.prod(shape))
    if reduction == "mean":
        return 1.0 / count
    return 1.0 / (count // shape[batch_axis])


def _prepare(pred, label, batch_axis, reduction):
    check_choice("reduction", reduction, REDUCTIONS)
    pred = np.asarray(pred, dtype=np.float64)
    label = reshape_label(pred, np.asarray(label, dtype=np.float64))
    return pred, label, _check_batch_axis(pred, batch_axis)


def l1_loss(pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, reduction="per_sample"):
    """Return the L1 loss: ``mean(|label - pred| * sample_weight * weight)``.

    With the default ``reduction`` the mean runs over every axis except
    ``batch_axis`` and the result has one value per sample.
    """
    pred, label, batch_axis = _prepare(pred, label, batch_axis, reduction)

    # Elementwise absolute error.
    error = np.abs(label - pred)

    # Weighting by sample_weight, then by weight.
    weighted = error * _weights(pred.shape, weight, sample_weight)

    # Reduction.
    return _reduce(weighted, batch_axis, reduction)


def l1_loss_grad(pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, reduction="per_sample"):
    """Return d/d(pred) of the sum of ``l1_loss(...)``.

    The derivative of ``|x|`` at 0 is taken as 0 (``sign(0) = 0``), which is
    what MXNet, PyTorch and TensorFlow use.
    """
    pred, label, batch_axis = _prepare(pred, label, batch_axis, reduction)

    # d|pred - label| / d pred = sign(pred - label).
    local = np.sign(pred - label)

    # Chain through the weights and the reduction.
    return local * _weights(pred.shape, weight, sample_weight) * _reduction_grad(pred.shape, batch_axis, reduction)


def l2_loss(pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, half=True, reduction="per_sample"):
    """Return the L2 loss: ``mean((label - pred)^2 * sample_weight * weight / 2)``.

    ``half=False`` drops the 1/2. With the default ``reduction`` the mean runs
    over every axis except ``batch_axis`` and the result has one value per sample.
    """
    pred, label, batch_axis = _prepare(pred, label, batch_axis, reduction)

    # Elementwise squared error.
    error = np.square(label - pred)

    # Weighting: sample_weight, then weight, then the 1/2.
    weighted = error * _weights(pred.shape, weight, sample_weight) * (0.5 if half else 1.0)

    # Reduction.
    return _reduce(weighted, batch_axis, reduction)


def l2_loss_grad(pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, half=True, reduction="per_sample"):
    """Return d/d(pred) of the sum of ``l2_loss(...)``."""
    pred, label, batch_axis = _prepare(pred, label, batch_axis, reduction)

    # d (pred - label)^2 / d pred = 2 (pred - label); the 1/2 cancels the 2.
    local = 2.0 * (pred - label) * (0.5 if half else 1.0)

    # Chain through the weights and the reduction.
    return local * _weights(pred.shape, weight, sample_weight) * _reduction_grad(pred.shape, batch_axis, reduction)


LOSSES = {"l1": (l1_loss, l1_loss_grad), "l2": (l2_loss, l2_loss_grad)}
