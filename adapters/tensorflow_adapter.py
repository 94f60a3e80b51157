"""TensorFlow 2.21 adapter, with Keras 3 on the TensorFlow backend.

Layers, initializers, losses and optimizers are Keras 3 objects, and
gradients come from ``tf.GradientTape``. Keras stores a dense kernel as
(in, out), a convolution kernel as HWIO and a depthwise kernel as HWIM
(kh, kw, C_in, multiplier). Weights leave the adapter in the canonical
layout: (out, in), OIHW and (C_in * M, 1, kh, kw).
A float64 run sets Keras' floatx to float64, so that optimizer variables
such as the learning rate are float64 too.

NOTE: What Keras expresses and what the adapter composes. Keras has no
``initialize()``, no Trainer, no gradient store, no ``rescale_grad``, no
coupled weight decay and no ``batch_axis``. The adapter passes Gluon's
global initializer as the ``kernel_initializer`` of each layer. It keeps one
gradient ``tf.Variable`` per parameter, which each backward pass writes or
adds to (grad_req) and marks fresh, and it divides the stored gradient by
batch_size before ``apply_gradients``. In canonical mode it also composes
norm clipping, value clipping and coupled weight decay from TF operations in
Gluon's order, so the Keras optimizer runs only its update rule, and
``step()`` raises Gluon's stale-gradient error from the freshness flags.
Canonical mode gives each parameter its own Keras optimizer, because Keras
counts Adam's step ``t`` per optimizer and Gluon per parameter: the two
differ once ``ignore_stale_grad`` skips a parameter. Native mode passes the
hyperparameters to one Keras optimizer's constructor and leaves the rest to
Keras.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from dataclasses import dataclass, fields, replace

# Keras 3 picks its backend at import time, from this variable.
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from adapters.base import Adapter, BenchmarkCall, Model, NativeBenchmarks, Trainer, Unsupported  # noqa: E402
from reference import init as ref_init  # noqa: E402
from reference import optim as ref_optim  # noqa: E402
from reference.errors import LabelShapeError, StaleGradientError  # noqa: E402

IMPLEMENTATIONS = ("eager", "graph", "xla")
# Keras 3 integer seeds must fit TensorFlow's stateless seed and NumPy's global seed.
SEED_MODULUS = 2**31


def _onednn_enabled():
    # TensorFlow exposes the effective oneDNN switch (TF_ENABLE_ONEDNN_OPTS
    # or the platform default) only through this internal module.
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return "unknown"
    return bool(_pywrap_util_port.IsMklEnabled())


# 1. Layouts -------------------------------------------------------------------


def _is_depthwise(layer):
    return layer.kind == "conv" and layer.in_channels is not None and layer.groups == layer.in_channels > 1


@dataclass(frozen=True)
class Layout:
    """The Keras storage layout of one parameter: ``"dense"`` (in, out), ``"conv"``
    HWIO, ``"depthwise"`` HWIM, or ``"vector"`` (a bias or a plain tensor)."""

    kind: str = "vector"

    def to_canonical(self, value):
        """Return a Keras-layout array in the canonical layout."""
        value = np.asarray(value)
        if self.kind == "dense":
            return value.T
        if self.kind == "conv":
            # (k..., I, O) -> (O, I, k...)
            spatial = value.ndim - 2
            return np.transpose(value, (spatial + 1, spatial, *range(spatial)))
        if self.kind == "depthwise":
            # (k..., C, M) -> (C * M, 1, k...): output channel c * M + m, as
            # tf.nn.depthwise_conv2d numbers them.
            spatial = value.ndim - 2
            flat = value.reshape(*value.shape[:spatial], -1)
            return np.moveaxis(flat, -1, 0)[:, None]
        return value

    def to_native(self, value, native_shape):
        """Return a canonical-layout array in Keras' layout of ``native_shape``."""
        value = np.asarray(value)
        if self.kind == "dense":
            return value.T
        if self.kind == "conv":
            # (O, I, k...) -> (k..., I, O)
            spatial = value.ndim - 2
            return np.transpose(value, (*range(2, 2 + spatial), 1, 0))
        if self.kind == "depthwise":
            return np.moveaxis(value[:, 0], 0, -1).reshape(native_shape)
        return value

    def canonical_shape(self, native_shape):
        """Return the canonical shape of a Keras-layout shape."""
        return self.to_canonical(np.empty(tuple(native_shape), dtype=np.int8)).shape


# 2. Initializers ------------------------------------------------------------------


def _truncated_mass_outside(initializer):
    # Probability that N(mean, std^2) falls outside [low, high].
    below = 0.5 * math.erfc((initializer.mean - initializer.low) / (initializer.std * math.sqrt(2.0)))
    above = 0.5 * math.erfc((initializer.high - initializer.mean) / (initializer.std * math.sqrt(2.0)))
    return below + above


def to_keras_initializer(initializer, seed, depthwise_rank=None):
    """Return the Keras initializer with the law of a reference initializer.

    ``depthwise_rank`` is the number of spatial axes of a depthwise kernel
    (HWIM). Keras computes fans from the raw kernel shape, so for a depthwise
    kernel the fan-based initializers get ``input_axes`` and ``output_axes``
    that give the canonical fans: fan_in over the window, fan_out over every axis.
    """
    if isinstance(initializer, ref_init.Constant):
        return keras.initializers.Constant(float(initializer.value))
    if isinstance(initializer, ref_init.Uniform):
        return keras.initializers.RandomUniform(-initializer.scale, initializer.scale, seed=seed)
    if isinstance(initializer, ref_init.Normal):
        return keras.initializers.RandomNormal(0.0, initializer.sigma, seed=seed)
    if isinstance(initializer, ref_init.MSRAPrelu):
        return to_keras_initializer(initializer.as_xavier(), seed, depthwise_rank)
    if isinstance(initializer, ref_init.Xavier):
        if initializer.magnitude == 0:
            # A bound or standard deviation of 0: every element is 0.
            return keras.initializers.Zeros()
        # U(-sqrt(3 scale / n), ...) has the bound sqrt(magnitude / n) when
        # scale = magnitude / 3; N(0, scale / n) needs scale = magnitude.
        mode = {"avg": "fan_avg", "in": "fan_in", "out": "fan_out"}[initializer.factor_type]
        if initializer.rnd_type == "uniform":
            equivalent = ref_init.VarianceScaling(initializer.magnitude / 3.0, mode, "uniform")
        else:
            equivalent = ref_init.VarianceScaling(initializer.magnitude, mode, "untruncated_normal")
        return to_keras_initializer(equivalent, seed, depthwise_rank)
    if isinstance(initializer, ref_init.VarianceScaling):
        axes = {}
        if depthwise_rank is not None:
            if "input_axes" not in inspect.signature(keras.initializers.VarianceScaling).parameters:
                raise Unsupported(
                    f"Keras {keras.__version__}'s VarianceScaling has no input_axes and output_axes, "
                    "so it computes a depthwise kernel's fans from the raw HWIM shape"
                )
            axes = {"input_axes": list(range(depthwise_rank)), "output_axes": list(range(depthwise_rank + 2))}
        return keras.initializers.VarianceScaling(
            initializer.scale, initializer.mode, initializer.distribution, seed=seed, **axes
        )
    if isinstance(initializer, ref_init.TruncatedNormal):
        return _truncated_normal(initializer, seed)
    raise Unsupported(f"Keras has no initializer with the law of {initializer!r}")


def _truncated_normal(initializer, seed):
    # Keras' TruncatedNormal(mean, stddev) always cuts at mean +- 2 stddev.
    low_gap = initializer.mean - initializer.low
    high_gap = initializer.high - initializer.mean
    two_std = 2.0 * initializer.std
    if math.isclose(low_gap, two_std, rel_tol=1e-12) and math.isclose(high_gap, two_std, rel_tol=1e-12):
        return keras.initializers.TruncatedNormal(initializer.mean, initializer.std, seed=seed)

    # NOTE: Some bounds lie so far out (about 8 standard deviations) that the
    # normal law puts less than float64's machine epsilon outside them. The
    # truncated law's distribution function then differs from the normal's by
    # less than float64 resolves, so RandomNormal draws the same law.
    if _truncated_mass_outside(initializer) < np.finfo(np.float64).eps:
        return keras.initializers.RandomNormal(initializer.mean, initializer.std, seed=seed)
    raise Unsupported(
        f"Keras' TruncatedNormal cuts at mean +- 2 stddev, but {initializer!r} has bounds "
        f"{-low_gap / initializer.std:.3g} and {high_gap / initializer.std:.3g} standard deviations from the mean"
    )


def _parameter_seed(seed, layer_index, kind):
    # One stream per parameter: Keras draws identical values for equal integer seeds.
    return (int(seed) + 2 * layer_index + (kind == "bias")) % SEED_MODULUS


# 3. Layers ------------------------------------------------------------------------------


def _make_layer(layer, dtype, kernel_init=None, bias_init=None):
    """Return an unbuilt Keras layer for ``layer``. A None initializer keeps Keras' default."""
    initializers = {}
    if layer.kind == "dense":
        if kernel_init is not None:
            initializers["kernel_initializer"] = kernel_init
        if bias_init is not None:
            initializers["bias_initializer"] = bias_init
        return keras.layers.Dense(
            layer.out_channels, activation=layer.activation, use_bias=layer.use_bias, dtype=dtype, **initializers
        )

    rank = len(layer.kernel_size)
    if bias_init is not None:
        initializers["bias_initializer"] = bias_init
    if _is_depthwise(layer) and rank in (1, 2):
        if kernel_init is not None:
            initializers["depthwise_initializer"] = kernel_init
        depthwise = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}[rank]
        return depthwise(
            layer.kernel_size,
            depth_multiplier=layer.out_channels // layer.in_channels,
            activation=layer.activation,
            use_bias=layer.use_bias,
            dtype=dtype,
            **initializers,
        )
    if kernel_init is not None:
        initializers["kernel_initializer"] = kernel_init
    convolution = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    return convolution(
        layer.out_channels,
        layer.kernel_size,
        groups=layer.groups,
        activation=layer.activation,
        use_bias=layer.use_bias,
        dtype=dtype,
        **initializers,
    )


def _kernel_layout(layer):
    if layer.kind == "dense":
        return Layout("dense")
    if _is_depthwise(layer) and len(layer.kernel_size) in (1, 2):
        return Layout("depthwise")
    return Layout("conv")


def _depthwise_rank(layer):
    return len(layer.kernel_size) if _kernel_layout(layer).kind == "depthwise" else None


def _build(keras_layer, layer):
    # Known input size: build now, drawing from the layer's initializers.
    if layer.kind == "dense":
        keras_layer.build((None, layer.in_channels))
    else:
        keras_layer.build((None, *([None] * len(layer.kernel_size)), layer.in_channels))


# 4. Losses ------------------------------------------------------------------------------


class CustomL1Loss(keras.losses.Loss):
    """A custom loss made by subclassing ``keras.losses.Loss`` and writing
    ``call``: the mean over every non-batch axis of ``|label - pred|``, with
    the label reshaped to the prediction. GradientTape supplies the backward pass."""

    def call(self, y_true, y_pred):
        error = tf.abs(tf.reshape(y_true, tf.shape(y_pred)) - y_pred)
        return tf.reduce_mean(tf.reshape(error, (tf.shape(error)[0], -1)), axis=1)


KERAS_LOSSES = {"l1": keras.losses.MeanAbsoluteError, "l2": keras.losses.MeanSquaredError}


def _reshape_label(label, pred):
    try:
        return tf.reshape(label, tf.shape(pred))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
        raise LabelShapeError(
            f"tf.reshape rejected a label of shape {tuple(label.shape)} for a prediction of shape "
            f"{tuple(pred.shape)}: {str(error).splitlines()[0]}"
        ) from error


def _per_sample_weight(sample_weight, shape, batch_axis):
    """Return ``sample_weight`` as an (N,) tensor when it is constant over every
    non-batch axis of ``shape``, else None."""
    weight_shape = (1,) * (len(shape) - sample_weight.shape.rank) + tuple(sample_weight.shape)
    if any(size != 1 for axis, size in enumerate(weight_shape) if axis != batch_axis):
        return None
    column = tf.reshape(sample_weight, weight_shape)
    target = [1] * len(shape)
    target[batch_axis] = shape[batch_axis]
    return tf.reshape(tf.broadcast_to(column, target), (shape[batch_axis],))


def canonical_loss(name, pred, label, *, weight=1.0, sample_weight=None, batch_axis=0):
    """Return Gluon's per-sample loss of tensors ``pred`` and ``label``, shape (N,).

    The non-batch axes are flattened into one last axis, so Keras' loss with
    ``reduction=None``, which averages the last axis only, averages all of
    them. Keras multiplies ``sample_weight`` into the per-sample values after
    that mean, which is Gluon's weighting when the weight is constant within
    each sample. An elementwise weight must act before the mean: the loss then
    runs on a trailing axis of length 1, where Keras' mean changes nothing, and
    ``tf.reduce_mean`` averages each sample. Keras' MeanSquaredError has no 1/2
    and Keras losses no scalar weight, so both are multiplied in.
    """
    shape = tuple(pred.shape)
    batch_axis = batch_axis % len(shape)
    label = _reshape_label(label, pred)
    order = [batch_axis, *(axis for axis in range(len(shape)) if axis != batch_axis)]
    flat = (shape[batch_axis], -1)
    pred_flat = tf.reshape(tf.transpose(pred, order), flat)
    label_flat = tf.reshape(tf.transpose(label, order), flat)
    keras_loss = KERAS_LOSSES[name](reduction=None, dtype=pred.dtype.name)

    if sample_weight is None:
        values = keras_loss(label_flat, pred_flat)
    else:
        sample_weight = tf.convert_to_tensor(sample_weight, dtype=pred.dtype)
        per_sample = _per_sample_weight(sample_weight, shape, batch_axis)
        if per_sample is not None:
            values = keras_loss(label_flat, pred_flat, sample_weight=per_sample)
        else:
            elementwise = tf.reshape(tf.transpose(tf.broadcast_to(sample_weight, shape), order), flat)
            weighted = keras_loss(label_flat[..., None], pred_flat[..., None], sample_weight=elementwise)
            values = tf.reduce_mean(weighted, axis=1)

    if name == "l2":
        values = 0.5 * values
    return values * weight if weight != 1.0 else values


# 5. Gradient store ------------------------------------------------------------------------


class Slot:
    """One parameter: its Keras variable, layout, gradient buffer and freshness."""

    def __init__(self, name, variable, layout):
        self.name = name
        self.variable = variable
        self.layout = layout
        self.grad = tf.Variable(tf.zeros(variable.shape, dtype=variable.dtype), trainable=False)
        self.fresh = False
        self.grad_req = "write"

    def record(self, grad):
        """Write or add one backward pass's gradient (Keras layout) and mark it fresh."""
        if self.grad_req == "add":
            self.grad.assign_add(grad)
        else:
            self.grad.assign(grad)
        self.fresh = True

    def weight(self):
        return self.layout.to_canonical(self.variable.value.numpy()).astype(np.float64)


# 6. Models --------------------------------------------------------------------------------


class TensorFlowModel(Model):
    """A ``keras.Sequential`` whose layers the first ``initialize()`` makes
    with its initializer. A layer with a known input size is built there, and
    the others on their first call."""

    def __init__(self, adapter, layers):
        self.adapter = adapter
        self.specs = list(layers)
        self.layers = None
        self.net = None
        self.slots = {}

    def _initializers(self, init, seed, index):
        spec = self.specs[index]
        kernel = init if init is not None else ref_init.Uniform()
        return (
            to_keras_initializer(kernel, _parameter_seed(seed, index, "weight"), _depthwise_rank(spec)),
            keras.initializers.Zeros(),
        )

    def initialize(self, init=None, *, force_reinit=False, seed=0):
        if self.layers is not None and not force_reinit:
            raise Unsupported(
                "Keras has no initialize() that keeps existing values and warns: initializers run once, "
                "when a layer is built, and drawing again is an explicit assign (force_reinit)"
            )
        with warnings.catch_warnings(record=True) as caught, self.adapter.scope():
            warnings.simplefilter("always")
            if self.layers is None:
                self._make_layers(init, seed)
            else:
                self._reinitialize(init, seed)
        return [str(w.message) for w in caught]

    def _make_layers(self, init, seed):
        self.layers = []
        for index, spec in enumerate(self.specs):
            kernel_init, bias_init = self._initializers(init, seed, index)
            keras_layer = _make_layer(spec, self.adapter.dtype, kernel_init, bias_init)
            if spec.in_channels is not None:
                _build(keras_layer, spec)
            self.layers.append(keras_layer)
        self.net = keras.Sequential(self.layers)

    def _reinitialize(self, init, seed):
        for index, keras_layer in enumerate(self.layers):
            kernel_init, bias_init = self._initializers(init, seed, index)
            if not keras_layer.built:
                # Not built yet: the layer draws from these when it is called.
                setattr(keras_layer, _kernel_attribute(keras_layer), kernel_init)
                keras_layer.bias_initializer = bias_init
                continue
            keras_layer.kernel.assign(kernel_init(keras_layer.kernel.shape, keras_layer.kernel.dtype))
            if keras_layer.bias is not None:
                keras_layer.bias.assign(bias_init(keras_layer.bias.shape, keras_layer.bias.dtype))

    def named_variables(self):
        """Yield ``(name, variable, layout)`` for every built parameter."""
        for index, (spec, keras_layer) in enumerate(zip(self.specs, self.layers or ())):
            if not keras_layer.built:
                continue
            yield f"{index}.weight", keras_layer.kernel, _kernel_layout(spec)
            if keras_layer.bias is not None:
                yield f"{index}.bias", keras_layer.bias, Layout()

    def get_slots(self):
        """Return a ``Slot`` for every built parameter, made on first use."""
        with self.adapter.scope():
            for name, variable, layout in self.named_variables():
                if name not in self.slots:
                    self.slots[name] = Slot(name, variable, layout)
        return dict(self.slots)

    def param_shapes(self):
        shapes = {}
        built = {name: layout.canonical_shape(variable.shape) for name, variable, layout in self.named_variables()}
        for index, spec in enumerate(self.specs):
            weight = f"{index}.weight"
            if weight in built:
                shapes[weight] = tuple(int(d) for d in built[weight])
            elif spec.kind == "dense":
                shapes[weight] = (spec.out_channels, spec.in_channels)
            else:
                inputs = None if spec.in_channels is None else spec.in_channels // spec.groups
                shapes[weight] = (spec.out_channels, inputs, *spec.kernel_size)
            if spec.use_bias:
                shapes[f"{index}.bias"] = (spec.out_channels,)
        return shapes

    def params(self):
        return {
            name: layout.to_canonical(variable.value.numpy()).astype(np.float64)
            for name, variable, layout in self.named_variables()
        }

    def set_params(self, values):
        for name, variable, layout in self.named_variables():
            if name in values:
                variable.assign(layout.to_native(values[name], tuple(variable.shape)))

    def _call(self, x):
        # Canonical inputs are channels-first, and Keras convolutions take channels-last.
        tensor = self.adapter.tensor(x)
        channels_last = self.specs[0].kind == "conv"
        if channels_last:
            tensor = tf.transpose(tensor, (0, *range(2, tensor.shape.rank), 1))
        output = self.net(tensor)
        if channels_last and output.shape.rank > 2:
            output = tf.transpose(output, (0, output.shape.rank - 1, *range(1, output.shape.rank - 1)))
        return output

    def forward(self, x):
        if self.net is None:
            raise RuntimeError("the model has no layers before initialize(); call initialize() first")
        with self.adapter.scope():
            return self._call(x).numpy().astype(np.float64)

    def forward_backward(self, x, label, loss):
        with self.adapter.scope():
            with tf.GradientTape() as tape:
                pred = self._call(x)
                values = canonical_loss(loss, pred, self.adapter.tensor(label))
            slots = self.get_slots()
            # The gradient of a vector target is the gradient of its sum.
            grads = tape.gradient(values, [slot.variable for slot in slots.values()])
            for slot, grad in zip(slots.values(), grads):
                if grad is not None:
                    slot.record(grad)
        return values.numpy().astype(np.float64)


def _kernel_attribute(keras_layer):
    return "depthwise_initializer" if hasattr(keras_layer, "depthwise_initializer") else "kernel_initializer"


# 7. Trainer ---------------------------------------------------------------------------------


def _given_hyperparameters(optimizer):
    """Return the hyperparameters the caller passed, by name.

    ``make_optimizer`` records their names in ``given``. A reference
    optimizer made without it carries no such record; then a value that
    differs from the reference default counts as passed, and one equal to
    it keeps Keras' own default.
    """
    if optimizer.given:
        return {name: getattr(optimizer, name) for name in optimizer.given}
    defaults = type(optimizer)()
    return {
        f.name: getattr(optimizer, f.name)
        for f in fields(optimizer)
        if f.compare and getattr(optimizer, f.name) != getattr(defaults, f.name)
    }


def _native_optimizer(optimizer, mode):
    """Return one Keras optimizer with only the given hyperparameters (native modes)."""
    keras_class = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer.name]
    if mode == "native_defaults":
        return keras_class()

    explicit = _given_hyperparameters(optimizer)
    names = {
        "learning_rate": "learning_rate",
        "momentum": "momentum",
        "beta1": "beta_1",
        "beta2": "beta_2",
        "epsilon": "epsilon",
        "wd": "weight_decay",
        "clip_gradient": "clipvalue",
        "clip_norm": "clipnorm",
        "global_clip_norm": "global_clipnorm",
    }
    arguments = {names[key]: float(value) for key, value in explicit.items() if key in names and value is not None}
    clips = [key for key in ("clipvalue", "clipnorm", "global_clipnorm") if key in arguments]
    if len(clips) > 1:
        raise Unsupported(f"a Keras optimizer accepts only one of clipnorm, clipvalue and global_clipnorm, not {clips}")
    return keras_class(**arguments)


def _canonical_optimizer(optimizer):
    """Return a Keras optimizer that runs the reference optimizer's update rule.

    Clipping and coupled weight decay are left out: the Trainer composes them.
    """
    if optimizer.wd_mode == "decoupled" and optimizer.wd != 0:
        weight_decay = float(optimizer.wd)
    else:
        weight_decay = None
    if optimizer.name == "sgd":
        if optimizer.momentum_form != "lr_inside":
            raise Unsupported(
                "Keras' SGD keeps the learning rate inside the momentum buffer (v = momentum * v - lr * g). "
                f"momentum_form={optimizer.momentum_form!r} has no Keras option"
            )
        return keras.optimizers.SGD(
            learning_rate=float(optimizer.learning_rate), momentum=float(optimizer.momentum), weight_decay=weight_decay
        )
    if not optimizer.bias_correction:
        raise Unsupported("Keras' Adam always applies the bias correction")
    if optimizer.epsilon_placement != "before_correction":
        raise Unsupported(
            "Keras' Adam adds epsilon to sqrt(v) before the bias correction. "
            f"epsilon_placement={optimizer.epsilon_placement!r} has no Keras option"
        )
    return keras.optimizers.Adam(
        learning_rate=float(optimizer.learning_rate),
        beta_1=float(optimizer.beta1),
        beta_2=float(optimizer.beta2),
        epsilon=float(optimizer.epsilon),
        weight_decay=weight_decay,
    )


class TensorFlowTrainer(Trainer):
    """Gluon's Trainer composed around Keras optimizers, over ``Slot`` objects."""

    def __init__(self, adapter, slots, optimizer, grad_req, mode, implementation):
        ref_optim.check_choice("grad_req", grad_req, ref_optim.GRAD_REQS)
        if mode != "canonical" and grad_req != "write":
            raise Unsupported(
                "Keras keeps no gradients between backward passes; gradient_accumulation_steps averages "
                "and applies them itself, so grad_req 'add' exists only as the adapter's canonical gradient store"
            )
        if implementation == "default":
            implementation = "eager"
        ref_optim.check_choice("implementation", implementation, IMPLEMENTATIONS)

        self.adapter = adapter
        self.slots = slots
        self.optimizer = replace(optimizer)
        self.mode = mode
        for slot in slots.values():
            slot.grad_req = grad_req

        # Optimizer variables must exist before a tf.function traces the update.
        with adapter.scope():
            if mode == "canonical":
                self.keras_optimizers = {}
                for name, slot in slots.items():
                    self.keras_optimizers[name] = _canonical_optimizer(optimizer)
                    self.keras_optimizers[name].build([slot.variable])
            else:
                shared = _native_optimizer(optimizer, mode)
                shared.build([slot.variable for slot in slots.values()])
                self.keras_optimizers = dict.fromkeys(slots, shared)
        self._update = self._compile(implementation)

    def _compile(self, implementation):
        if implementation == "eager":
            return self._update_step
        return tf.function(self._update_step, jit_compile=implementation == "xla")

    # Gradient pipeline

    def _canonical_gradients(self, names, batch_size):
        # Gluon's order: rescale, norm clipping, then value clipping and
        # coupled weight decay in the optimizer's clip_order.
        opt = self.optimizer
        grads = [self.slots[name].grad / batch_size for name in names]
        if opt.clip_norm is not None:
            grads = [tf.clip_by_norm(g, opt.clip_norm) for g in grads]
        if opt.global_clip_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, opt.global_clip_norm)

        def clip(g):
            if opt.clip_gradient is None:
                return g
            return tf.clip_by_value(g, -opt.clip_gradient, opt.clip_gradient)

        result = []
        for name, g in zip(names, grads):
            if opt.wd_mode == "decoupled" or opt.wd == 0:
                result.append(clip(g))
                continue
            decay = opt.wd * tf.convert_to_tensor(self.slots[name].variable.value)
            result.append(clip(g) + decay if opt.clip_order == "clip_then_wd" else clip(g + decay))
        return result

    def _update_step(self, names, batch_size):
        if self.mode == "canonical":
            grads = self._canonical_gradients(names, batch_size)
            for name, g in zip(names, grads):
                self.keras_optimizers[name].apply_gradients([(g, self.slots[name].variable)])
            return
        # Native: one Keras optimizer over every parameter, with its own clipping and decay.
        shared = self.keras_optimizers[names[0]]
        shared.apply_gradients([(self.slots[name].grad / batch_size, self.slots[name].variable) for name in names])

    # Trainer interface

    def backward(self, grads):
        names = list(grads)
        with self.adapter.scope():
            variables = [self.slots[name].variable for name in names]
            with tf.GradientTape() as tape:
                # d/dp sum(p * g) = g exactly.
                total = tf.add_n(
                    [
                        tf.reduce_sum(
                            variable
                            * self.adapter.tensor(self.slots[name].layout.to_native(grads[name], tuple(variable.shape)))
                        )
                        for name, variable in zip(names, variables)
                    ]
                )
            for name, grad in zip(names, tape.gradient(total, variables)):
                self.slots[name].record(grad)

    def step(self, batch_size, ignore_stale_grad=False):
        if not (isinstance(batch_size, (int, float, np.integer, np.floating)) and batch_size > 0):
            raise ValueError(f"invalid batch_size {batch_size!r}: expected a number > 0")

        # Keras applies whatever gradients it is given. The freshness check
        # is Gluon's, so only canonical mode has it.
        names = list(self.slots)
        if self.mode == "canonical":
            stale = [name for name in names if not self.slots[name].fresh]
            if stale and not ignore_stale_grad:
                raise StaleGradientError(
                    f"gradient of parameter(s) {', '.join(stale)} has not been updated by backward "
                    "since the last step; call step with ignore_stale_grad=True to skip them"
                )
            names = [name for name in names if self.slots[name].fresh]
        if not names:
            return

        with self.adapter.scope():
            self._update(tuple(names), tf.constant(batch_size, dtype=self.adapter.dtype))
        for name in names:
            self.slots[name].fresh = False

    def set_learning_rate(self, learning_rate):
        ref_optim.check_non_negative("learning_rate", learning_rate)
        for keras_optimizer in {id(o): o for o in self.keras_optimizers.values()}.values():
            keras_optimizer.learning_rate = float(learning_rate)

    def zero_grad(self):
        for slot in self.slots.values():
            slot.grad.assign(tf.zeros_like(slot.grad))

    def weights(self):
        return {name: slot.weight() for name, slot in self.slots.items()}

    def grads(self):
        return {
            name: slot.layout.to_canonical(slot.grad.numpy()).astype(np.float64) for name, slot in self.slots.items()
        }

    def states(self):
        states = {}
        for name, slot in self.slots.items():
            keras_optimizer = self.keras_optimizers[name]
            index = keras_optimizer._get_variable_index(slot.variable)
            if isinstance(keras_optimizer, keras.optimizers.Adam):
                states[name] = {
                    "mean": slot.layout.to_canonical(keras_optimizer._momentums[index].numpy()),
                    "variance": slot.layout.to_canonical(keras_optimizer._velocities[index].numpy()),
                }
            elif keras_optimizer.momentum != 0:
                states[name] = {"momentum": slot.layout.to_canonical(keras_optimizer.momentums[index].numpy())}
            else:
                states[name] = {}
        return states

    def live_view(self, name):
        # The tf.Variable behind the Keras variable; Keras updates it in place.
        return self.slots[name].variable.value

    def read_live_view(self, view):
        for slot in self.slots.values():
            if slot.variable.value is view:
                return slot.layout.to_canonical(view.numpy()).astype(np.float64)
        return view.numpy().astype(np.float64)

    def mark_grads_fresh(self):
        # The stored gradients stay in the slots' variables; only canonical mode checks the flags.
        for slot in self.slots.values():
            slot.fresh = True


# 8. The adapter -------------------------------------------------------------------------------


class TensorFlowAdapter(Adapter):
    name = "tensorflow"

    def __init__(self, device="cpu", dtype="float32"):
        super().__init__(device, dtype)
        kind, _, index = device.partition(":")
        self.device_index = int(index or 0)
        self.is_gpu = kind == "gpu"
        self.device_name = f"/GPU:{self.device_index}" if self.is_gpu else "/CPU:0"
        # float32 matmuls and convolutions on Ampere and later GPUs would
        # otherwise round their inputs to TF32's 10-bit mantissa.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        # The learning rate variable of every Keras optimizer takes Keras' floatx.
        keras.config.set_floatx(dtype)

    @property
    def version(self):
        return tf.__version__

    def device_available(self):
        return not self.is_gpu or len(tf.config.list_physical_devices("GPU")) > self.device_index

    def numerics(self):
        # Thread counts of 0 leave the choice to TensorFlow, which then reads
        # TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS or sizes the pools by the cores.
        return {
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "floatx": keras.config.floatx(),
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "onednn": _onednn_enabled(),
            "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
            "cuda_build": tf.test.is_built_with_cuda(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "tf_num_intraop_threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "unset"),
            "tf_num_interop_threads": os.environ.get("TF_NUM_INTEROP_THREADS", "unset"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "cpu_count": os.cpu_count(),
        }

    def scope(self):
        """Return the device scope every TensorFlow operation runs in."""
        return tf.device(self.device_name)

    def tensor(self, values):
        return tf.constant(np.asarray(values), dtype=self.dtype)

    # Initialization

    def init_layer(self, layer, *, global_init=None, weight_init=None, bias_init=None, seed=0, mode="canonical"):
        with self.scope():
            if mode == "native_defaults":
                keras.utils.set_random_seed(int(seed) % SEED_MODULUS)
                keras_layer = _make_layer(layer, self.dtype)
            else:
                # Keras has no global initializer: it is the kernel_initializer
                # of a layer given none of its own, and biases keep "zeros".
                kernel = weight_init or global_init
                if kernel is None and mode == "canonical":
                    kernel = ref_init.Uniform()
                kernel_init = None
                if kernel is not None:
                    kernel_init = to_keras_initializer(
                        kernel, _parameter_seed(seed, 0, "weight"), _depthwise_rank(layer)
                    )
                bias = bias_init or ref_init.Zero()
                keras_layer = _make_layer(
                    layer, self.dtype, kernel_init, to_keras_initializer(bias, _parameter_seed(seed, 0, "bias"))
                )
            _build(keras_layer, layer)
        values = {"weight": _kernel_layout(layer).to_canonical(keras_layer.kernel.numpy()).astype(np.float64)}
        if keras_layer.bias is not None:
            values["bias"] = keras_layer.bias.numpy().astype(np.float64)
        return values

    def sequential(self, layers):
        return TensorFlowModel(self, layers)

    # Losses

    def loss(self, name, pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, mode="canonical"):
        with self.scope():
            pred_tensor = self.tensor(pred)
            label_tensor = self.tensor(label)
            with tf.GradientTape() as tape:
                tape.watch(pred_tensor)
                if mode == "canonical":
                    values = canonical_loss(
                        name,
                        pred_tensor,
                        label_tensor,
                        weight=weight,
                        sample_weight=sample_weight,
                        batch_axis=batch_axis,
                    )
                else:
                    values = self._native_loss(name, pred_tensor, label_tensor, weight, sample_weight, batch_axis)
            grad = tape.gradient(values, pred_tensor)
        return values.numpy().astype(np.float64), grad.numpy().astype(np.float64)

    def _native_loss(self, name, pred, label, weight, sample_weight, batch_axis):
        # Keras' loss with its default reduction, the label as given.
        if batch_axis != 0:
            raise Unsupported(
                "Keras losses have no batch_axis: axis 0 is the batch, the per-sample value averages the "
                "last axis only, and the default reduction averages every element"
            )
        extra = {} if sample_weight is None else {"sample_weight": self.tensor(sample_weight)}
        values = KERAS_LOSSES[name](dtype=self.dtype)(label, pred, **extra)
        # Gluon's scalar weight is compile(loss_weights=...) in Keras: a factor on the loss.
        return values * weight if weight != 1.0 else values

    def custom_l1_loss(self, pred, label):
        with self.scope():
            pred_tensor = self.tensor(pred)
            with tf.GradientTape() as tape:
                tape.watch(pred_tensor)
                values = CustomL1Loss(reduction=None, dtype=self.dtype)(self.tensor(label), pred_tensor)
                total = tf.reduce_sum(values)
            grad = tape.gradient(total, pred_tensor)
        return values.numpy().astype(np.float64), grad.numpy().astype(np.float64)

    def nonscalar_backward(self, pred, label, *, mode="canonical"):
        with self.scope():
            pred_tensor = self.tensor(pred)
            with tf.GradientTape() as tape:
                tape.watch(pred_tensor)
                values = CustomL1Loss(reduction=None, dtype=self.dtype)(self.tensor(label), pred_tensor)
            # Canonical: Gluon's head gradient of ones, given explicitly.
            # Native: GradientTape.gradient of a vector target, no head gradient.
            head = {"output_gradients": tf.ones_like(values)} if mode == "canonical" else {}
            grad = tape.gradient(values, pred_tensor, **head)
        return grad.numpy().astype(np.float64)

    # Optimizers

    def optimizer_implementations(self, optimizer_name):
        """Return Keras' ways to run an update: eagerly, in a tf.function, and XLA-compiled."""
        return IMPLEMENTATIONS

    def trainer(self, params, optimizer, *, grad_req="write", mode="canonical", implementation="default"):
        if isinstance(params, TensorFlowModel):
            slots = params.get_slots()
        else:
            slots = {}
            with self.scope():
                for name, value in params.items():
                    variable = keras.Variable(np.asarray(value), dtype=self.dtype, name=name.replace(".", "_"))
                    slots[name] = Slot(name, variable, Layout())
        return TensorFlowTrainer(self, slots, optimizer, grad_req, mode, implementation)

    # Benchmarks

    def synchronize(self):
        # Eager operations on the CPU return when they are done; GPU kernels are queued.
        if self.is_gpu:
            tf.test.experimental.sync_devices()

    def native_benchmarks(self):
        return TensorFlowBenchmarks(self)


# 9. Native benchmark calls --------------------------------------------------------------------


def _benchmark_optimizer(optimizer):
    """Return the Keras SGD or Adam that a user would write for a reference optimizer."""
    if optimizer.name == "sgd":
        return keras.optimizers.SGD(learning_rate=float(optimizer.learning_rate), momentum=float(optimizer.momentum))
    return keras.optimizers.Adam(
        learning_rate=float(optimizer.learning_rate),
        beta_1=float(optimizer.beta1),
        beta_2=float(optimizer.beta2),
        epsilon=float(optimizer.epsilon),
    )


class TensorFlowBenchmarks(NativeBenchmarks):
    """Each component written as a Keras 3 user writes it, without the adapter.

    The calls run eagerly, as the adapter's default implementation does;
    a ``tf.function`` around them would change the times. Every call ends
    with ``adapter.synchronize()``, which waits for the queued GPU kernels
    on a GPU and does nothing on the CPU.
    """

    def __init__(self, adapter):
        self.adapter = adapter

    def overhead_notes(self):
        return {
            "loss": "the adapter's loss() copies the NumPy inputs into new tensors and the loss and gradient "
            "back into float64 NumPy arrays on every call",
            "initializer": "Model.initialize() makes a new Keras initializer for every layer on every call",
            "optimizer": "TensorFlowTrainer.step() composes Gluon's rescale by 1 / batch_size, which Keras has "
            "no option for: it divides every stored gradient into a new tensor (one more read and write of "
            "each gradient, 8 B per parameter) before apply_gradients; the native call is apply_gradients alone",
            "trainer": "Model.forward_backward() copies the input and label from NumPy, assigns every gradient "
            "to the adapter's gradient variable and copies the per-sample losses back to float64 NumPy, "
            "and the step divides every gradient by the batch size",
        }

    def loss(self, name, pred, label):
        with self.adapter.scope():
            pred_tensor = self.adapter.tensor(pred)
            label_tensor = self.adapter.tensor(label)
        if name == "custom_l1":
            block = CustomL1Loss(reduction=None, dtype=self.adapter.dtype)
        elif name == "l1":
            block = keras.losses.MeanAbsoluteError(reduction=None, dtype=self.adapter.dtype)
        else:
            mse = keras.losses.MeanSquaredError(reduction=None, dtype=self.adapter.dtype)
            block = lambda y_true, y_pred: 0.5 * mse(y_true, y_pred)

        def run():
            with self.adapter.scope():
                with tf.GradientTape() as tape:
                    tape.watch(pred_tensor)
                    total = tf.reduce_sum(block(label_tensor, pred_tensor))
                tape.gradient(total, pred_tensor)
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def optimizer_step(self, weights, grads, optimizer):
        with self.adapter.scope():
            variables = [keras.Variable(weight, dtype=self.adapter.dtype) for weight in weights]
            pairs = [(self.adapter.tensor(grad), variable) for grad, variable in zip(grads, variables)]
            native = _benchmark_optimizer(optimizer)
            native.build(variables)

        def run():
            with self.adapter.scope():
                native.apply_gradients(pairs)
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def initializer(self, layer, init, seed):
        if layer.kind != "dense" or layer.in_channels is None:
            raise Unsupported("the native initializer benchmark takes a dense layer with in_channels")
        # Keras stores a dense kernel as (in, out).
        shape = (layer.in_channels, layer.out_channels)
        if isinstance(init, (ref_init.Uniform, ref_init.Normal, ref_init.Xavier)):
            native = to_keras_initializer(init, int(seed) % SEED_MODULUS)
        else:
            raise Unsupported(f"no native benchmark call for {init!r}")
        with self.adapter.scope():
            kernel = keras.Variable(np.zeros(shape), dtype=self.adapter.dtype)

        def run():
            with self.adapter.scope():
                kernel.assign(native(shape, self.adapter.dtype))
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def trainer_step(self, layers, x, label, optimizer, seed):
        with self.adapter.scope():
            keras.utils.set_random_seed(int(seed) % SEED_MODULUS)
            model = keras.Sequential(
                [keras.layers.Dense(layer.out_channels, activation=layer.activation) for layer in layers]
            )
            x_tensor = self.adapter.tensor(x)
            label_tensor = self.adapter.tensor(label)
            # The first call builds every layer, which the optimizer needs.
            model(x_tensor)
            native = _benchmark_optimizer(optimizer)
            native.build(model.trainable_variables)
            mse = keras.losses.MeanSquaredError(reduction=None, dtype=self.adapter.dtype)

        def run():
            with self.adapter.scope():
                with tf.GradientTape() as tape:
                    values = 0.5 * mse(label_tensor, model(x_tensor))
                    # The mean over the batch is Gluon's sum of per-sample losses rescaled by 1 / batch_size.
                    total = tf.reduce_mean(values)
                grads = tape.gradient(total, model.trainable_variables)
                native.apply_gradients(zip(grads, model.trainable_variables))
            self.adapter.synchronize()

        return BenchmarkCall(run)
