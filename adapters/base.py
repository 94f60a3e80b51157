"""The adapter interface: the only thing conformance tests call.

An adapter wraps one framework. Tests hand it NumPy arrays and reference
objects (initializers from ``reference.init``, optimizers from
``reference.optim``) and get NumPy arrays back, always in the canonical
layout: dense weights as (out, in), convolution kernels as (out, in / groups,
*window). The adapter converts to and from the framework's native layout.

NOTE: Two modes. ``mode="canonical"`` configures the native API so that it
reproduces the spec's semantics, composing framework operations where no
single native option does; ``mode="native"`` maps only the explicitly given
hyperparameters onto the native constructor and leaves every semantic
choice at the framework's default. ``mode="native_defaults"`` passes no
hyperparameters at all. The tests then compare native results with the
reference configured by the profile's ``[native]`` choices.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

MODES = ("canonical", "native", "native_defaults")


class Unsupported(Exception):
    """The framework's API cannot express the requested semantics."""


class FrameworkUnavailable(RuntimeError):
    """The framework failed to import."""


@dataclass(frozen=True)
class LayerSpec:
    """A dense or convolution layer, independent of any framework.

    ``in_channels`` None means the input size is left to deferred shape
    inference. ``kernel_size`` is empty for a dense layer. ``depthwise``
    makes a convolution with ``groups = in_channels`` and
    ``out_channels = in_channels * multiplier``.
    """

    kind: str
    out_channels: int
    in_channels: int | None = None
    kernel_size: tuple = ()
    groups: int = 1
    activation: str | None = None
    use_bias: bool = True

    def weight_shape(self):
        """Return the canonical weight shape: (out, in) or (out, in / groups, *window)."""
        if self.in_channels is None:
            raise ValueError(
                "the weight shape of a layer without in_channels is not known before the first forward pass"
            )
        if self.kind == "dense":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)


@dataclass(frozen=True)
class BenchmarkCall:
    """One benchmark body. ``run`` is the timed call and returns once the
    device has finished its work. ``prepare``, when given, runs untimed
    before every call of ``run``, for example to mark gradients fresh."""

    run: Callable[[], object]
    prepare: Callable[[], object] | None = None


class NativeBenchmarks(abc.ABC):
    """Benchmark bodies written directly in a framework's own API.

    They do the same work as the adapter's methods without the adapter in
    between, so that the benchmarks can report the adapter's overhead. Each
    method converts its NumPy inputs once, outside the timed call, and
    returns a ``BenchmarkCall``.
    """

    def overhead_notes(self):
        """Return, by component kind ("loss", "optimizer", "initializer",
        "trainer"), why the adapter path costs more than the native call."""
        return {}

    @abc.abstractmethod
    def loss(self, name, pred, label):
        """Return a call of loss ``name`` ("l1", "l2" or "custom_l1"): forward
        on ``pred`` and ``label``, then backward of the sum of its per-sample
        values. The gradient stays in the framework."""

    @abc.abstractmethod
    def optimizer_step(self, weights, grads, optimizer):
        """Return a call of one native optimizer step, rescale 1, over the
        parameters ``weights`` (a list of arrays) with the fixed gradients
        ``grads``. The reference ``optimizer`` (SGD or Adam) gives the
        learning rate, momentum, betas and epsilon."""

    @abc.abstractmethod
    def initializer(self, layer, init, seed):
        """Return a call that initializes the weight of a ``layer`` (a
        ``LayerSpec``) again with the reference initializer ``init``."""

    @abc.abstractmethod
    def trainer_step(self, layers, x, label, optimizer, seed):
        """Return a call of one training step on a sequential model of
        ``layers``: forward on ``x``, per-sample L2 loss against ``label``,
        backward of its sum and one step of ``optimizer`` with batch size
        ``len(x)``."""


class Model(abc.ABC):
    """A sequential model built by an adapter. Parameter names are
    ``"<layer index>.weight"`` and ``"<layer index>.bias"``."""

    @abc.abstractmethod
    def initialize(self, init=None, *, force_reinit=False, seed=0):
        """Initialize every parameter; return the warning messages raised."""

    @abc.abstractmethod
    def param_shapes(self):
        """Return canonical shapes by name, with None for unknown dimensions."""

    @abc.abstractmethod
    def params(self):
        """Return the values of every initialized parameter, by name."""

    @abc.abstractmethod
    def set_params(self, values):
        """Overwrite parameter values (canonical layout), by name."""

    @abc.abstractmethod
    def forward(self, x):
        """Run a forward pass and return the output."""

    @abc.abstractmethod
    def forward_backward(self, x, label, loss):
        """Forward, per-sample ``loss`` ("l1" or "l2"), backward of its sum.

        Returns the per-sample losses; the gradients stay in the parameters.
        """


class Trainer(abc.ABC):
    """An optimizer stepping a set of parameters, as Gluon's Trainer does."""

    @abc.abstractmethod
    def backward(self, grads):
        """Run an autograd backward pass whose gradient for each named
        parameter is ``grads[name]``; parameters not named get no backward."""

    @abc.abstractmethod
    def step(self, batch_size, ignore_stale_grad=False):
        """Rescale by 1 / batch_size and update; raise
        ``reference.errors.StaleGradientError`` for a stale gradient."""

    @abc.abstractmethod
    def set_learning_rate(self, learning_rate):
        """Change the learning rate for the following steps."""

    @abc.abstractmethod
    def zero_grad(self):
        """Set every gradient to zero."""

    @abc.abstractmethod
    def weights(self):
        """Return every parameter's values, by name."""

    @abc.abstractmethod
    def grads(self):
        """Return every parameter's gradient, by name."""

    @abc.abstractmethod
    def states(self):
        """Return optimizer states by name: ``{"mean", "variance"}`` for
        Adam, ``{"momentum"}`` for SGD with momentum, as the framework stores them."""

    @abc.abstractmethod
    def live_view(self, name):
        """Return the framework's own data object of a parameter."""

    @abc.abstractmethod
    def read_live_view(self, view):
        """Return the current values behind an object from ``live_view``."""

    def mark_grads_fresh(self):
        """Mark every stored gradient as written by a backward pass, so that
        ``step()`` can run again on the same gradients (benchmarks use it to
        time steps without a backward pass). Adapters whose framework tracks
        stale gradients override it."""
        raise Unsupported(f"{type(self).__name__} cannot mark its gradients fresh")


class Adapter(abc.ABC):
    """One framework behind the interface the tests use."""

    name: str = ""

    def __init__(self, device="cpu", dtype="float32"):
        self.device = device
        self.dtype = dtype

    # 1. Run facts ---------------------------------------------------------

    @property
    @abc.abstractmethod
    def version(self):
        """The framework's version string."""

    @abc.abstractmethod
    def device_available(self):
        """Return whether the requested device exists."""

    @abc.abstractmethod
    def numerics(self):
        """Return settings that change results (TF32, oneDNN, threads), by name."""

    def run_facts(self):
        """Return what ran: framework, version, device, dtype and numerics."""
        return {
            "framework": self.name,
            "version": self.version,
            "device": self.device,
            "dtype": self.dtype,
            "numerics": self.numerics(),
        }

    def synchronize(self):
        """Wait until the device has finished all queued work. The default
        does nothing, which is right for frameworks that run synchronously;
        asynchronous ones (MXNet's engine, CUDA) override it."""
        return None

    def native_benchmarks(self):
        """Return the ``NativeBenchmarks`` of this framework."""
        raise Unsupported(f"the {self.name} adapter has no native benchmark calls")

    # 2. Initialization -------------------------------------------------------

    @abc.abstractmethod
    def init_layer(self, layer, *, global_init=None, weight_init=None, bias_init=None, seed=0, mode="canonical"):
        """Create ``layer``, initialize it and return ``{"weight", "bias"}``.

        ``global_init`` is what ``initialize()`` receives, ``weight_init``
        and ``bias_init`` are per-parameter initializers. With all three
        None the layer gets ``initialize()`` without an argument; with
        ``mode="native_defaults"`` it gets the framework's own default.
        """

    @abc.abstractmethod
    def sequential(self, layers):
        """Return a ``Model`` of ``layers`` (a list of ``LayerSpec``)."""

    # 3. Losses -----------------------------------------------------------------

    @abc.abstractmethod
    def loss(self, name, pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, mode="canonical"):
        """Run the built-in loss ``name`` ("l1" or "l2") forward and backward.

        Returns ``(loss, grad)``: the loss as the framework returns it and
        the gradient of its sum with respect to ``pred``.
        """

    @abc.abstractmethod
    def custom_l1_loss(self, pred, label):
        """Run a custom loss made by subclassing the framework's loss base
        class, forward ``mean over non-batch axes of |label - pred|``.
        Returns ``(loss, grad of its sum)``, the gradient from autograd."""

    @abc.abstractmethod
    def nonscalar_backward(self, pred, label, *, mode="canonical"):
        """Compute the per-sample L1 loss and call backward on that vector.

        Returns the gradient with respect to ``pred``. ``mode="native"``
        calls the plain backward with no argument.
        """

    # 4. Optimizers ---------------------------------------------------------------

    def optimizer_implementations(self, optimizer_name):
        """Return the names of the framework's implementations of an
        optimizer (PyTorch: for-loop, foreach, fused); one by default."""
        return ("default",)

    @abc.abstractmethod
    def trainer(self, params, optimizer, *, grad_req="write", mode="canonical", implementation="default"):
        """Return a ``Trainer`` over ``params`` (name -> array, or a
        ``Model``) with the reference ``optimizer``'s hyperparameters,
        using ``implementation``, one of ``optimizer_implementations``."""
