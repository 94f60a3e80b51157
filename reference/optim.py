"""Reference SGD, Adam and a Trainer that mirrors Gluon's ``gluon.Trainer``.

Every semantic choice is a keyword argument whose default is what Gluon
(MXNet 1.9.1) does for that optimizer.

NOTE: Named choices.
- ``clip_order``: ``"clip_then_wd"`` clips the rescaled gradient, then adds
  ``wd * weight`` (Gluon SGD); ``"wd_then_clip"`` adds ``wd * weight`` first
  and clips the sum (Gluon Adam).
- ``wd_mode``: ``"coupled"`` adds ``wd * weight`` to the gradient (Gluon,
  PyTorch SGD and Adam); ``"decoupled"`` shrinks the weight by
  ``learning_rate * wd * weight`` before the update and leaves the gradient
  alone (PyTorch AdamW, every Keras 3 optimizer).
- ``momentum_form`` (SGD): ``"lr_inside"`` keeps ``v = momentum * v - lr * g``
  and adds ``v`` to the weight (Gluon, Keras); ``"lr_outside"`` keeps
  ``b = momentum * b + g`` and subtracts ``lr * b`` (PyTorch). Both give the
  same trajectory while the learning rate is constant and differ after it
  changes, because the inside form keeps old steps at their old rate.
- ``clip_norm`` and ``global_clip_norm``: the Trainer scales the rescaled
  gradients by their L2 norm, per parameter or over all parameters of the
  step, before the optimizer adds weight decay or clips values (Keras
  ``clipnorm`` and ``global_clipnorm``, PyTorch ``clip_grad_norm_``).
- ``epsilon_placement`` (Adam): ``"before_correction"`` divides by
  ``sqrt(v) + epsilon`` and scales the step by ``sqrt(1 - beta2^t) / (1 - beta1^t)``
  (Gluon, Keras); ``"after_correction"`` divides the corrected moment by
  ``sqrt(v / (1 - beta2^t)) + epsilon`` (PyTorch). The first is the second
  with epsilon divided by ``sqrt(1 - beta2^t)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from reference.errors import StaleGradientError, check_choice, check_non_negative, check_positive

CLIP_ORDERS = ("clip_then_wd", "wd_then_clip")
WD_MODES = ("coupled", "decoupled")
MOMENTUM_FORMS = ("lr_inside", "lr_outside")
EPSILON_PLACEMENTS = ("before_correction", "after_correction")
GRAD_REQS = ("write", "add")


def _check_beta(name, value):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"invalid {name} {value!r}: expected a number in [0, 1)")


def _check_clip(value):
    if value is not None:
        check_positive("clip_gradient", value)


def _check_norms(opt):
    for name in ("clip_norm", "global_clip_norm"):
        value = getattr(opt, name)
        if value is not None:
            check_positive(name, value)


def clip_by_norm(grads, clip_norm=None, global_clip_norm=None):
    """Scale rescaled gradients (name -> array) by their L2 norms.

    ``clip_norm`` scales each gradient by ``min(1, clip_norm / ||g||)``;
    ``global_clip_norm`` scales all of them by
    ``min(1, global_clip_norm / sqrt(sum ||g||^2))``. Per-tensor clipping
    comes first when both are set.
    """
    grads = dict(grads)
    if clip_norm is not None:
        for name, g in grads.items():
            norm = float(np.sqrt(np.sum(np.square(g))))
            grads[name] = g * min(1.0, clip_norm / norm) if norm > 0 else g
    if global_clip_norm is not None:
        norm = float(np.sqrt(sum(np.sum(np.square(g)) for g in grads.values())))
        factor = min(1.0, global_clip_norm / norm) if norm > 0 else 1.0
        grads = {name: g * factor for name, g in grads.items()}
    return grads


def _gradient(weight, grad, rescale, opt):
    """Return the gradient after rescale, clipping and coupled weight decay."""
    # Rescale first: Trainer.step(batch_size) sets rescale = 1 / batch_size.
    g = rescale * grad

    def clip(x):
        if opt.clip_gradient is None:
            return x
        return np.clip(x, -opt.clip_gradient, opt.clip_gradient)

    # Decoupled weight decay never enters the gradient.
    if opt.wd_mode == "decoupled" or opt.wd == 0:
        return clip(g)

    if opt.clip_order == "clip_then_wd":
        return clip(g) + opt.wd * weight
    return clip(g + opt.wd * weight)


def _decay_decoupled(weight, opt, learning_rate):
    # Decoupled weight decay: w <- w - lr * wd * w, before the update.
    if opt.wd_mode == "decoupled" and opt.wd != 0:
        return weight - learning_rate * opt.wd * weight
    return weight


@dataclass
class SGD:
    """Stochastic gradient descent with optional momentum, Gluon's defaults."""

    learning_rate: float = 0.01
    momentum: float = 0.0
    wd: float = 0.0
    clip_gradient: float | None = None
    clip_norm: float | None = None
    global_clip_norm: float | None = None
    clip_order: str = "clip_then_wd"
    wd_mode: str = "coupled"
    momentum_form: str = "lr_inside"
    given: tuple = field(default=(), compare=False, repr=False)

    name = "sgd"

    def __post_init__(self):
        check_non_negative("learning_rate", self.learning_rate)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"invalid momentum {self.momentum!r}: expected a number in [0, 1)")
        check_non_negative("wd", self.wd)
        _check_clip(self.clip_gradient)
        _check_norms(self)
        check_choice("clip_order", self.clip_order, CLIP_ORDERS)
        check_choice("wd_mode", self.wd_mode, WD_MODES)
        check_choice("momentum_form", self.momentum_form, MOMENTUM_FORMS)

    def create_state(self, weight):
        """Return the state of one parameter: the momentum buffer, or None."""
        return np.zeros_like(weight, dtype=np.float64) if self.momentum > 0 else None

    def update(self, weight, grad, state, rescale, t):
        """Return ``(new_weight, new_state)`` after update number ``t`` (from 1)."""
        lr = self.learning_rate

        # Gradient after rescale, clip and coupled weight decay.
        g = _gradient(weight, grad, rescale, self)

        # Decoupled weight decay acts on the weight itself.
        weight = _decay_decoupled(weight, self, lr)

        # Plain SGD.
        if state is None:
            return weight - lr * g, None

        # Momentum with the learning rate inside the buffer: v = mu v - lr g.
        if self.momentum_form == "lr_inside":
            velocity = self.momentum * state - lr * g
            return weight + velocity, velocity

        # Momentum with the learning rate outside the buffer: b = mu b + g.
        buffer = self.momentum * state + g
        return weight - lr * buffer, buffer


@dataclass
class Adam:
    """Adam with bias correction, Gluon's defaults."""

    learning_rate: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    wd: float = 0.0
    clip_gradient: float | None = None
    clip_norm: float | None = None
    global_clip_norm: float | None = None
    bias_correction: bool = True
    clip_order: str = "wd_then_clip"
    wd_mode: str = "coupled"
    epsilon_placement: str = "before_correction"
    given: tuple = field(default=(), compare=False, repr=False)

    name = "adam"

    def __post_init__(self):
        check_non_negative("learning_rate", self.learning_rate)
        _check_beta("beta1", self.beta1)
        _check_beta("beta2", self.beta2)
        check_non_negative("epsilon", self.epsilon)
        check_non_negative("wd", self.wd)
        _check_clip(self.clip_gradient)
        _check_norms(self)
        check_choice("clip_order", self.clip_order, CLIP_ORDERS)
        check_choice("wd_mode", self.wd_mode, WD_MODES)
        check_choice("epsilon_placement", self.epsilon_placement, EPSILON_PLACEMENTS)

    def create_state(self, weight):
        """Return the state of one parameter: ``(mean, variance)``, both zero."""
        return np.zeros_like(weight, dtype=np.float64), np.zeros_like(weight, dtype=np.float64)

    def update(self, weight, grad, state, rescale, t):
        """Return ``(new_weight, new_state)`` after update number ``t`` (from 1)."""
        lr = self.learning_rate
        mean, variance = state

        # Gradient after rescale, clip and coupled weight decay.
        g = _gradient(weight, grad, rescale, self)

        # Decoupled weight decay acts on the weight itself.
        weight = _decay_decoupled(weight, self, lr)

        # Moment estimates.
        mean = self.beta1 * mean + (1.0 - self.beta1) * g
        variance = self.beta2 * variance + (1.0 - self.beta2) * np.square(g)

        # Without bias correction: w -= lr * m / (sqrt(v) + eps).
        if not self.bias_correction:
            return weight - lr * mean / (np.sqrt(variance) + self.epsilon), (mean, variance)

        correction1 = 1.0 - self.beta1**t
        correction2 = 1.0 - self.beta2**t

        # Epsilon before the correction: the step size carries the correction.
        if self.epsilon_placement == "before_correction":
            step_size = lr * math.sqrt(correction2) / correction1
            return weight - step_size * mean / (np.sqrt(variance) + self.epsilon), (mean, variance)

        # Epsilon after the correction: both moments are corrected first.
        denominator = np.sqrt(variance / correction2) + self.epsilon
        return weight - lr * (mean / correction1) / denominator, (mean, variance)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


@dataclass
class _Slot:
    weight: np.ndarray
    grad: np.ndarray
    state: object
    fresh: bool = False
    count: int = 0


@dataclass
class Trainer:
    """Gluon's ``Trainer`` over named float64 parameters.

    ``backward`` replaces an autograd backward pass: it writes (or, with
    ``grad_req="add"``, adds) each given gradient and marks it fresh.
    ``step(batch_size)`` rescales every fresh gradient by ``1 / batch_size``
    and applies one optimizer update to its parameter.
    """

    params: dict
    optimizer: object
    grad_req: str = "write"
    slots: dict = field(init=False)

    def __post_init__(self):
        check_choice("grad_req", self.grad_req, GRAD_REQS)
        self.optimizer = replace(self.optimizer)
        self.slots = {}
        for name, value in self.params.items():
            weight = np.array(value, dtype=np.float64)
            self.slots[name] = _Slot(weight, np.zeros_like(weight), self.optimizer.create_state(weight))

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    def set_learning_rate(self, learning_rate):
        """Change the learning rate for the following steps."""
        check_non_negative("learning_rate", learning_rate)
        self.optimizer.learning_rate = learning_rate

    def backward(self, grads):
        """Record one backward pass that produced ``grads`` (name -> array)."""
        for name, grad in grads.items():
            slot = self.slots[name]
            grad = np.asarray(grad, dtype=np.float64)
            slot.grad = slot.grad + grad if self.grad_req == "add" else grad.copy()
            slot.fresh = True

    def zero_grad(self):
        """Set every gradient to zero; freshness is unchanged, as in Gluon."""
        for slot in self.slots.values():
            slot.grad = np.zeros_like(slot.grad)

    def step(self, batch_size, ignore_stale_grad=False):
        """Rescale fresh gradients by ``1 / batch_size`` and update their parameters.

        A parameter whose gradient is not fresh raises ``StaleGradientError``
        unless ``ignore_stale_grad`` is set, in which case it is skipped and
        its update count does not advance.
        """
        if not (isinstance(batch_size, (int, float, np.integer, np.floating)) and batch_size > 0):
            raise ValueError(f"invalid batch_size {batch_size!r}: expected a number > 0")

        stale = [name for name, slot in self.slots.items() if not slot.fresh]
        if stale and not ignore_stale_grad:
            raise StaleGradientError(
                f"gradient of parameter(s) {', '.join(stale)} has not been updated by backward "
                "since the last step; call step with ignore_stale_grad=True to skip them"
            )

        # Rescale, then norm clipping across the parameters being updated.
        rescale = 1.0 / batch_size
        fresh = {name: slot for name, slot in self.slots.items() if slot.fresh}
        clipped = clip_by_norm(
            {name: rescale * slot.grad for name, slot in fresh.items()},
            self.optimizer.clip_norm,
            self.optimizer.global_clip_norm,
        )

        for name, slot in fresh.items():
            slot.count += 1
            slot.weight, slot.state = self.optimizer.update(slot.weight, clipped[name], slot.state, 1.0, slot.count)
            slot.fresh = False

    def weights(self):
        """Return a copy of every parameter, by name."""
        return {name: slot.weight.copy() for name, slot in self.slots.items()}

    def grads(self):
        """Return a copy of every gradient, by name."""
        return {name: slot.grad.copy() for name, slot in self.slots.items()}


def make_optimizer(name, **kwargs):
    """Create a reference optimizer by name (``"sgd"`` or ``"adam"``).

    ``given`` records the names of the arguments passed, so that an adapter
    in native mode passes exactly those to the framework and leaves the rest
    at the framework's defaults.
    """
    check_choice("optimizer", name, tuple(OPTIMIZERS))
    return OPTIMIZERS[name](**kwargs, given=tuple(sorted(kwargs)))
