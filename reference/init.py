"""Reference parameter initializers, fan computation and initialization rules.

Each initializer states its law for a given shape and layout (``law``) and
draws seeded samples from it (``sample``). Conformance tests compare the
deterministic part of a law exactly and the samples by goodness of fit.

NOTE: Layouts. A kernel's layout names the meaning of each axis:
``O`` output channels, ``I`` input channels per group, ``M`` the depthwise
channel multiplier, and any other letters are spatial axes. ``OI`` is a dense
weight as MXNet and PyTorch store it, ``IO`` as Keras stores it. ``OIHW``
is the convolution kernel of MXNet and PyTorch (any number of spatial axes
after the first two), ``HWIO`` the kernel of Keras, and ``HWIM`` the kernel of
a Keras depthwise convolution (spatial axes, input channels, multiplier).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from reference.errors import check_choice, check_non_negative, check_positive

LAYOUTS = ("OI", "IO", "OIHW", "HWIO", "HWIM")
DEFAULT_UNIFORM_SCALE = 0.07


# 1. Fans ----------------------------------------------------------------


def fans(shape, layout="OIHW"):
    """Return ``(fan_in, fan_out)`` of a weight of ``shape`` in ``layout``.

    The canonical fans are Gluon's: with the kernel written as OIHW,
    ``fan_in = I * prod(spatial)`` and ``fan_out = O * prod(spatial)``. For a
    grouped kernel ``I`` is the number of input channels per group, so
    ``fan_in`` is the true number of inputs of one output element, while
    ``fan_out`` counts all ``O`` output channels, not ``O / groups``.
    A depthwise kernel in HWIM layout is the OIHW kernel
    ``(C_in * M, 1, H, W)``: ``fan_in = H * W`` and ``fan_out = C_in * M * H * W``.
    """
    check_choice("layout", layout, LAYOUTS)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"invalid shape {shape}: dimensions must be >= 0")

    # Dense layouts have exactly two axes.
    if layout in ("OI", "IO"):
        if len(shape) != 2:
            raise ValueError(f"invalid shape {shape} for layout {layout!r}: expected 2 axes")
        out_units, in_units = shape if layout == "OI" else shape[::-1]
        return in_units, out_units

    # Convolution layouts: two channel axes and at least one spatial axis,
    # except that OIHW also accepts a dense 2-D weight, as Gluon's Xavier does.
    if len(shape) < 2 or (layout != "OIHW" and len(shape) < 3):
        raise ValueError(f"invalid shape {shape} for layout {layout!r}: expected at least 3 axes")

    if layout == "OIHW":
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive

    receptive = math.prod(shape[:-2])
    if layout == "HWIO":
        return shape[-2] * receptive, shape[-1] * receptive

    # HWIM: each output channel reads one input channel over the window.
    in_channels, multiplier = shape[-2], shape[-1]
    return receptive, in_channels * multiplier * receptive


# 2. Laws ----------------------------------------------------------------


@dataclass(frozen=True)
class Law:
    """The distribution of every element of an initialized tensor.

    ``kind`` is ``"constant"``, ``"uniform"`` (on ``[low, high]``),
    ``"normal"`` or ``"truncated_normal"``: the normal law with
    ``parent_mean`` and ``parent_std`` restricted to ``[low, high]``.
    ``mean`` and ``std`` are the exact moments of the law for every kind.
    """

    kind: str
    mean: float
    std: float
    low: float = -math.inf
    high: float = math.inf
    parent_mean: float = 0.0
    parent_std: float = 0.0

    def cdf(self, x):
        """Evaluate the cumulative distribution function at ``x``."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "constant":
            return (x >= self.mean).astype(np.float64)
        if self.kind == "uniform":
            if self.high == self.low:
                return (x >= self.low).astype(np.float64)
            return np.clip((x - self.low) / (self.high - self.low), 0.0, 1.0)
        if self.std == 0:
            return (x >= self.mean).astype(np.float64)
        if self.kind == "truncated_normal":
            low = _normal_cdf((self.low - self.parent_mean) / self.parent_std)
            high = _normal_cdf((self.high - self.parent_mean) / self.parent_std)
            inside = (_normal_cdf((x - self.parent_mean) / self.parent_std) - low) / (high - low)
            return np.clip(inside, 0.0, 1.0)
        return _normal_cdf((x - self.mean) / self.std)


def _normal_cdf(z):
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(z / math.sqrt(2.0)))


def _normal_pdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def truncated_normal_law(mean, std, low, high):
    """Return the law of N(mean, std^2) restricted to ``[low, high]``, with its exact moments."""
    alpha, beta = (low - mean) / std, (high - mean) / std
    mass = float(_normal_cdf(beta) - _normal_cdf(alpha))
    if not mass > 0:
        raise ValueError(f"invalid bounds [{low}, {high}]: no probability mass under N({mean}, {std}^2)")

    # Moments of the truncated normal, with phi the standard normal density.
    shift = (_normal_pdf(alpha) - _normal_pdf(beta)) / mass
    spread = (alpha * _normal_pdf(alpha) if math.isfinite(alpha) else 0.0) - (
        beta * _normal_pdf(beta) if math.isfinite(beta) else 0.0
    )
    variance = std**2 * (1.0 + spread / mass - shift**2)
    return Law("truncated_normal", mean + std * shift, math.sqrt(variance), low, high, mean, std)


# Standard deviation of N(0, 1) restricted to [-2, 2]: sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)).
# Keras divides by it so that a normal truncated at two standard deviations
# has the requested standard deviation; Keras writes it as 0.87962566103423978.
TRUNCATION_STD_AT_2 = truncated_normal_law(0.0, 1.0, -2.0, 2.0).std


def _uniform_law(bound):
    # U(-a, a) has mean 0 and standard deviation a / sqrt(3).
    return Law("uniform", mean=0.0, std=bound / math.sqrt(3.0), low=-bound, high=bound)


def _normal_law(std):
    return Law("normal", mean=0.0, std=std)


# 3. Initializers ----------------------------------------------------------


class Initializer:
    """Base class: a law per shape and a seeded sampler."""

    def law(self, shape, layout="OIHW"):
        raise NotImplementedError

    def sample(self, shape, layout="OIHW", seed=0):
        """Draw a float64 array of ``shape`` from ``law(shape, layout)``."""
        law = self.law(shape, layout)
        rng = np.random.default_rng(seed)

        if law.kind == "constant":
            return np.full(shape, law.mean, dtype=np.float64)
        if law.kind == "uniform":
            return rng.uniform(law.low, law.high, size=shape)
        if law.kind == "normal":
            return rng.normal(law.mean, law.std, size=shape)

        # Truncated normal: draw from the parent law and redraw what falls outside.
        values = rng.normal(law.parent_mean, law.parent_std, size=shape)
        outside = (values < law.low) | (values > law.high)
        while np.any(outside):
            values[outside] = rng.normal(law.parent_mean, law.parent_std, size=int(outside.sum()))
            outside = (values < law.low) | (values > law.high)
        return values


@dataclass(frozen=True)
class Uniform(Initializer):
    """Uniform(scale): every element drawn from U(-scale, scale)."""

    scale: float = DEFAULT_UNIFORM_SCALE

    def __post_init__(self):
        check_non_negative("scale", self.scale)

    def law(self, shape, layout="OIHW"):
        return _uniform_law(self.scale)


@dataclass(frozen=True)
class Normal(Initializer):
    """Normal(sigma): every element drawn from N(0, sigma^2)."""

    sigma: float = 0.01

    def __post_init__(self):
        check_non_negative("sigma", self.sigma)

    def law(self, shape, layout="OIHW"):
        return _normal_law(self.sigma)


@dataclass(frozen=True)
class Constant(Initializer):
    """Constant(value): every element equals ``value``."""

    value: float = 0.0

    def law(self, shape, layout="OIHW"):
        return Law("constant", mean=float(self.value), std=0.0, low=self.value, high=self.value)


def Zero():
    """Return the initializer that fills zeros, Gluon's ``init.Zero()``."""
    return Constant(0.0)


def One():
    """Return the initializer that fills ones, Gluon's ``init.One()``."""
    return Constant(1.0)


@dataclass(frozen=True)
class Xavier(Initializer):
    """Xavier(rnd_type, factor_type, magnitude), Gluon's definition.

    ``factor`` is ``(fan_in + fan_out) / 2`` for ``avg``, ``fan_in`` for ``in``
    and ``fan_out`` for ``out``, and ``scale = sqrt(magnitude / factor)``.
    ``uniform`` draws from U(-scale, scale); ``gaussian`` from N(0, scale^2).
    """

    rnd_type: str = "uniform"
    factor_type: str = "avg"
    magnitude: float = 3.0

    def __post_init__(self):
        check_choice("rnd_type", self.rnd_type, ("uniform", "gaussian"))
        check_choice("factor_type", self.factor_type, ("avg", "in", "out"))
        check_non_negative("magnitude", self.magnitude)

    def scale(self, shape, layout="OIHW"):
        """Return ``sqrt(magnitude / factor)`` for a weight of ``shape``."""
        fan_in, fan_out = fans(shape, layout)

        # The factor is the fan average, fan_in or fan_out.
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        if factor <= 0:
            raise ValueError(f"invalid shape {tuple(shape)}: factor_type {self.factor_type!r} gives a fan of 0")

        return math.sqrt(self.magnitude / factor)

    def law(self, shape, layout="OIHW"):
        scale = self.scale(shape, layout)
        return _uniform_law(scale) if self.rnd_type == "uniform" else _normal_law(scale)


@dataclass(frozen=True)
class MSRAPrelu(Initializer):
    """MSRAPrelu(factor_type, slope), Gluon's definition.

    It is Xavier with ``rnd_type="gaussian"`` and ``magnitude = 2 / (1 + slope^2)``,
    so ``std = sqrt(2 / ((1 + slope^2) * factor))``.

    NOTE: He initialization (``kaiming_normal_`` in PyTorch, ``he_normal`` in
    Keras) uses ``factor = fan_in`` and slope 0, so its standard deviation is
    ``sqrt(2 / fan_in)``. MSRAPrelu defaults to ``factor_type="avg"`` and
    ``slope=0.25``, so its default law is narrower by the factor
    ``sqrt(fan_in / ((1 + 0.0625) * (fan_in + fan_out) / 2))``.
    ``MSRAPrelu("in", 0.0)`` is exactly He normal.
    """

    factor_type: str = "avg"
    slope: float = 0.25

    def __post_init__(self):
        check_choice("factor_type", self.factor_type, ("avg", "in", "out"))

    def as_xavier(self):
        """Return the Xavier initializer with the same law."""
        return Xavier("gaussian", self.factor_type, 2.0 / (1.0 + self.slope**2))

    def law(self, shape, layout="OIHW"):
        return self.as_xavier().law(shape, layout)


@dataclass(frozen=True)
class TruncatedNormal(Initializer):
    """TruncatedNormal(mean, std, low, high): N(mean, std^2) restricted to
    ``[low, high]``. The bounds are absolute values, as in PyTorch's
    ``trunc_normal_(mean, std, a, b)``, not multiples of ``std``; ``std``
    is that of the normal law before truncation."""

    mean: float = 0.0
    std: float = 1.0
    low: float = -2.0
    high: float = 2.0

    def __post_init__(self):
        check_non_negative("std", self.std)
        if not self.low < self.high:
            raise ValueError(f"invalid bounds low={self.low!r}, high={self.high!r}: expected low < high")

    def law(self, shape, layout="OIHW"):
        return truncated_normal_law(self.mean, self.std, self.low, self.high)


@dataclass(frozen=True)
class VarianceScaling(Initializer):
    """VarianceScaling(scale, mode, distribution), Keras 3's definition.

    ``n`` is ``fan_in``, ``fan_out`` or their average by ``mode``, and the
    target variance is ``scale / max(1, n)``:

    - ``"truncated_normal"``: N(0, s^2) truncated to [-2 s, 2 s] with
      ``s = sqrt(scale / n) / TRUNCATION_STD_AT_2``, so the standard
      deviation after truncation is ``sqrt(scale / n)``;
    - ``"untruncated_normal"``: N(0, scale / n);
    - ``"uniform"``: U(-sqrt(3 scale / n), sqrt(3 scale / n)).

    Glorot uniform is (1, "fan_avg", "uniform"), He normal (2, "fan_in",
    "truncated_normal"), LeCun normal (1, "fan_in", "truncated_normal").
    """

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self):
        check_positive("scale", self.scale)
        check_choice("mode", self.mode, ("fan_in", "fan_out", "fan_avg"))
        check_choice("distribution", self.distribution, ("truncated_normal", "untruncated_normal", "uniform"))

    def law(self, shape, layout="OIHW"):
        fan_in, fan_out = fans(shape, layout)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, n)

        if self.distribution == "uniform":
            return _uniform_law(math.sqrt(3.0 * variance))
        if self.distribution == "untruncated_normal":
            return _normal_law(math.sqrt(variance))
        parent_std = math.sqrt(variance) / TRUNCATION_STD_AT_2
        return truncated_normal_law(0.0, parent_std, -2.0 * parent_std, 2.0 * parent_std)


# 4. Initialization rules ------------------------------------------------


def effective_initializer(kind, own=None, global_init=None):
    """Return the initializer that a parameter of ``kind`` receives.

    A parameter's own initializer wins over the global one. Biases have
    ``Zero`` as their own initializer unless one is given, so they stay zero
    under any global initializer. A weight with no own initializer and no
    global one gets ``Uniform(0.07)``, the default of ``initialize()``.
    """
    check_choice("kind", kind, ("weight", "bias"))
    if own is not None:
        return own
    if kind == "bias":
        return Zero()
    return global_init if global_init is not None else Uniform()


class AlreadyInitializedWarning(UserWarning):
    """``initialize`` on a parameter that already has values, without
    ``force_reinit``."""


class Parameter:
    """A parameter with Gluon's initialization state machine.

    ``shape`` may contain ``None`` for a dimension that is not known until the
    first forward pass. ``initialize`` on such a parameter records the
    initializer and draws nothing; ``infer_shape`` then fills the unknown
    dimensions and draws. ``initialize`` on a parameter that already has
    values warns and changes nothing unless ``force_reinit`` is set.
    """

    def __init__(self, name, kind, shape, init=None, layout="OI"):
        self.name = name
        self.kind = kind
        self.shape = tuple(shape)
        self.own_init = init
        self.layout = layout
        self.data = None
        self._pending = None

    @property
    def shape_known(self):
        return all(d is not None for d in self.shape)

    def initialize(self, init=None, force_reinit=False, seed=0):
        """Initialize with the effective initializer for ``init`` as global."""
        if self.data is not None and not force_reinit:
            warnings.warn(
                f"parameter {self.name!r} is already initialized; the call changes nothing "
                "(pass force_reinit=True to draw new values)",
                AlreadyInitializedWarning,
                stacklevel=2,
            )
            return

        chosen = effective_initializer(self.kind, self.own_init, init)
        if not self.shape_known:
            self._pending = (chosen, seed)
            return
        self.data = chosen.sample(self.shape, self.layout, seed)

    def infer_shape(self, shape):
        """Fill unknown dimensions from ``shape`` and run a pending initialization."""
        shape = tuple(shape)
        if len(shape) != len(self.shape) or any(d is not None and d != s for d, s in zip(self.shape, shape)):
            raise ValueError(f"shape {shape} does not match the declared shape {self.shape} of {self.name!r}")
        self.shape = shape
        if self._pending is not None:
            chosen, seed = self._pending
            self._pending = None
            self.data = chosen.sample(self.shape, self.layout, seed)
