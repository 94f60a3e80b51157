"""MXNet 1.9 Gluon adapter, in the NumPy interface the tutorial uses.

``npx.set_np()`` is switched on at import, as in the tutorial, so arrays are
``mxnet.numpy.ndarray`` and Gluon blocks run in NumPy mode.

NOTE: Legacy ndarray API. In NumPy mode Gluon 1.9.1's ``L1Loss`` and
``L2Loss`` average over axes 1..ndim-1 whatever ``batch_axis`` is
(``hybrid_forward`` ignores ``self._batch_axis`` there). The canonical loss
for ``batch_axis != 0`` therefore runs the same loss classes on legacy
``mx.nd`` arrays inside ``mx.util.np_array(active=False)``, where ``batch_axis`` is honoured.
The native question keeps NumPy mode, and the MXNet profile records the
difference as a deviation.
"""

from __future__ import annotations

import os
import warnings

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, npx
from mxnet import np as mnp
from mxnet.gluon import nn

from adapters.base import Adapter, BenchmarkCall, Model, NativeBenchmarks, Trainer, Unsupported
from reference import init as ref_init
from reference.errors import LabelShapeError, StaleGradientError

npx.set_np()

STALE_MESSAGE = "has not been updated by backward since last `step`"


# 1. Conversions ---------------------------------------------------------------


def to_mx_initializer(initializer):
    """Return the ``mx.init`` initializer equal to a reference initializer."""
    if initializer is None:
        return None
    if isinstance(initializer, ref_init.Constant):
        if initializer.value == 0:
            return mx.init.Zero()
        if initializer.value == 1:
            return mx.init.One()
        return mx.init.Constant(initializer.value)
    if isinstance(initializer, ref_init.Uniform):
        return mx.init.Uniform(initializer.scale)
    if isinstance(initializer, ref_init.Normal):
        return mx.init.Normal(initializer.sigma)
    if isinstance(initializer, ref_init.Xavier):
        return mx.init.Xavier(initializer.rnd_type, initializer.factor_type, initializer.magnitude)
    if isinstance(initializer, ref_init.MSRAPrelu):
        return mx.init.MSRAPrelu(initializer.factor_type, initializer.slope)
    if isinstance(initializer, ref_init.VarianceScaling) and initializer.distribution != "truncated_normal":
        # Xavier's magnitude / factor is the target variance scale / n times 3
        # for the uniform law (whose variance is bound^2 / 3) and times 1 for the normal.
        factor_type = {"fan_in": "in", "fan_out": "out", "fan_avg": "avg"}[initializer.mode]
        if initializer.distribution == "uniform":
            return mx.init.Xavier("uniform", factor_type, 3.0 * initializer.scale)
        return mx.init.Xavier("gaussian", factor_type, initializer.scale)
    if isinstance(initializer, (ref_init.TruncatedNormal, ref_init.VarianceScaling)):
        raise Unsupported("MXNet 1.9 has no truncated normal initializer")
    raise Unsupported(f"no MXNet initializer for {type(initializer).__name__}")


def _known(shape):
    # Gluon marks an unknown dimension as 0 (legacy) or -1 (NumPy mode).
    return tuple(None if d <= 0 else int(d) for d in shape)


def _translate_loss_error(error):
    text = str(error)
    if "reshape" in text.lower() or "shape" in text.lower() or "size" in text.lower():
        raise LabelShapeError(f"MXNet rejected the label shape: {text.splitlines()[0]}") from error
    raise error


class CustomL1Loss(gluon.loss.Loss):
    """A custom loss made as the tutorial makes it: subclass ``Loss`` and
    write ``forward``; autograd supplies the backward pass. Unlike the
    tutorial's ``reshape(len(l),)``, it averages over every non-batch axis,
    so it is defined for predictions with more than one column."""

    def __init__(self, weight=None, batch_axis=0, **kwargs):
        super().__init__(weight, batch_axis, **kwargs)

    def forward(self, pred, label):
        loss = mnp.abs(label.reshape(pred.shape) - pred)
        return loss.reshape(loss.shape[0], -1).mean(axis=1)


# 2. Models ----------------------------------------------------------------------


def _make_block(layer, dtype, weight_init=None, bias_init="zeros"):
    common = {"use_bias": layer.use_bias, "weight_initializer": weight_init, "bias_initializer": bias_init}
    if layer.kind == "dense":
        block = nn.Dense(layer.out_channels, in_units=layer.in_channels or 0, activation=layer.activation, **common)
    else:
        convolution = {1: nn.Conv1D, 2: nn.Conv2D, 3: nn.Conv3D}[len(layer.kernel_size)]
        block = convolution(
            layer.out_channels,
            layer.kernel_size,
            groups=layer.groups,
            in_channels=layer.in_channels or 0,
            activation=layer.activation,
            **common,
        )
    # Convolutions take no dtype argument; cast() sets it for every block.
    block.cast(dtype)
    return block


class MXNetModel(Model):
    def __init__(self, adapter, layers):
        self.adapter = adapter
        self.net = nn.Sequential()
        for layer in layers:
            self.net.add(_make_block(layer, adapter.dtype))

    def named_parameters(self):
        for index, block in enumerate(self.net):
            yield f"{index}.weight", block.weight
            if block.bias is not None:
                yield f"{index}.bias", block.bias

    def initialize(self, init=None, *, force_reinit=False, seed=0):
        mx.random.seed(seed)
        arguments = {"ctx": self.adapter.context, "force_reinit": force_reinit}
        if init is not None:
            arguments["init"] = to_mx_initializer(init)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.net.initialize(**arguments)
        return [str(w.message) for w in caught]

    def param_shapes(self):
        return {name: _known(param.shape) for name, param in self.named_parameters()}

    def params(self):
        values = {}
        for name, param in self.named_parameters():
            try:
                values[name] = param.data().asnumpy().astype(np.float64)
            except gluon.parameter.DeferredInitializationError:
                continue
        return values

    def set_params(self, values):
        for name, param in self.named_parameters():
            if name in values:
                param.set_data(self.adapter.array(values[name]))

    def forward(self, x):
        return self.net(self.adapter.array(x)).asnumpy().astype(np.float64)

    def forward_backward(self, x, label, loss):
        block = {"l1": gluon.loss.L1Loss(), "l2": gluon.loss.L2Loss()}[loss]
        with autograd.record():
            values = block(self.net(self.adapter.array(x)), self.adapter.array(label))
        values.backward()
        return values.asnumpy().astype(np.float64)


# 3. Trainer ------------------------------------------------------------------------


def _optimizer_arguments(optimizer, mode):
    """Return Gluon's optimizer name and ``optimizer_params`` for a reference optimizer."""
    if mode == "native_defaults":
        return optimizer.name, {}

    # Gluon's own choices; any other choice has no MXNet option.
    gluon_choices = {
        "sgd": {"clip_order": "clip_then_wd", "wd_mode": "coupled", "momentum_form": "lr_inside"},
        "adam": {"clip_order": "wd_then_clip", "wd_mode": "coupled", "epsilon_placement": "before_correction"},
    }[optimizer.name]
    if mode == "canonical":
        for choice, value in gluon_choices.items():
            if getattr(optimizer, choice) != value:
                raise Unsupported(f"Gluon's {optimizer.name} has no option for {choice}={getattr(optimizer, choice)!r}")

    arguments = {"learning_rate": optimizer.learning_rate, "wd": optimizer.wd}
    if optimizer.clip_gradient is not None:
        arguments["clip_gradient"] = optimizer.clip_gradient
    if optimizer.name == "sgd":
        arguments["momentum"] = optimizer.momentum
    else:
        if not optimizer.bias_correction:
            raise Unsupported("Gluon's Adam always applies the bias correction")
        arguments.update(beta1=optimizer.beta1, beta2=optimizer.beta2, epsilon=optimizer.epsilon)
    return optimizer.name, arguments


class MXNetTrainer(Trainer):
    def __init__(self, adapter, named_params, optimizer, grad_req, mode):
        self.adapter = adapter
        self.names = list(named_params)
        self.params = named_params
        for param in self.params.values():
            param.grad_req = grad_req
        name, arguments = _optimizer_arguments(optimizer, mode)
        self.trainer = gluon.Trainer(list(self.params.values()), name, arguments)
        self.clip_norms = (optimizer.clip_norm, optimizer.global_clip_norm)
        if mode != "canonical" and self.clip_norms != (None, None):
            raise Unsupported(
                "Gluon's optimizers have no norm-clipping argument; it is composed in canonical mode only"
            )

    def backward(self, grads):
        # d/dp sum(p * g) = g exactly, and autograd marks the gradient fresh.
        with autograd.record():
            total = None
            for name, grad in grads.items():
                term = (self.params[name].data() * self.adapter.array(grad)).sum()
                total = term if total is None else total + term
        total.backward()

    def _clip_norms(self, batch_size):
        # Gluon has no norm clipping in the optimizer: scale the summed
        # gradients in place. The rescale by 1 / batch_size happens later in
        # step(), so the limit on the summed gradient is limit * batch_size.
        clip_norm, global_clip_norm = self.clip_norms
        if clip_norm is None and global_clip_norm is None:
            return
        fresh = [param for param in self.params.values() if param.list_data()[0]._fresh_grad]
        if clip_norm is not None:
            for param in fresh:
                norm = float(mnp.sqrt((param.grad() ** 2).sum()))
                if norm > clip_norm * batch_size:
                    param.grad()[:] *= clip_norm * batch_size / norm
        if global_clip_norm is not None and fresh:
            norm = float(mnp.sqrt(sum((param.grad() ** 2).sum() for param in fresh)))
            if norm > global_clip_norm * batch_size:
                for param in fresh:
                    param.grad()[:] *= global_clip_norm * batch_size / norm

    def step(self, batch_size, ignore_stale_grad=False):
        self._clip_norms(batch_size)
        try:
            self.trainer.step(batch_size, ignore_stale_grad=ignore_stale_grad)
        except UserWarning as error:
            if STALE_MESSAGE in str(error):
                raise StaleGradientError(str(error)) from error
            raise

    def set_learning_rate(self, learning_rate):
        self.trainer.set_learning_rate(learning_rate)

    def zero_grad(self):
        # Parameter.zero_grad() in MXNet 1.9.1 calls the legacy
        # ndarray.zeros_like, which raises TypeError on NumPy-mode arrays;
        # slice assignment zeroes the same buffer.
        for param in self.params.values():
            param.grad()[:] = 0

    def weights(self):
        return {name: param.data().asnumpy().astype(np.float64) for name, param in self.params.items()}

    def grads(self):
        return {name: param.grad().asnumpy().astype(np.float64) for name, param in self.params.items()}

    def states(self):
        # Gluon keeps one updater per device; its states are keyed by the
        # parameter's index in the Trainer.
        updater = self.trainer._updaters[0]
        states = {}
        for index, name in enumerate(self.names):
            state = updater.states.get(index)
            if isinstance(state, (tuple, list)):
                states[name] = {"mean": state[0].asnumpy(), "variance": state[1].asnumpy()}
            elif state is not None:
                states[name] = {"momentum": state.asnumpy()}
            else:
                states[name] = {}
        return states

    def live_view(self, name):
        return self.params[name].data()

    def read_live_view(self, view):
        return view.asnumpy().astype(np.float64)

    def mark_grads_fresh(self):
        _mark_fresh(self.params.values())


def _mark_fresh(params):
    # Gluon's Trainer.step checks this flag, which autograd sets in backward
    # and step clears, and raises for a parameter whose flag is clear.
    for param in params:
        for data in param.list_data():
            data._fresh_grad = True


# 4. The adapter -------------------------------------------------------------------------


class MXNetAdapter(Adapter):
    name = "mxnet"

    def __init__(self, device="cpu", dtype="float32"):
        super().__init__(device, dtype)
        kind, _, index = device.partition(":")
        self.device_index = int(index or 0)
        self.context = mx.cpu() if kind == "cpu" else mx.gpu(self.device_index)
        self.is_gpu = kind == "gpu"

    @property
    def version(self):
        return mx.__version__

    def device_available(self):
        return not self.is_gpu or mx.context.num_gpus() > self.device_index

    def numerics(self):
        features = mx.runtime.Features()
        return {
            "numpy_mode": bool(npx.is_np_array()),
            "mkldnn": features.is_enabled("MKLDNN"),
            "cuda": features.is_enabled("CUDA"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "optimizer_aggregation_size": os.environ.get("MXNET_OPTIMIZER_AGGREGATION_SIZE", "4 (default)"),
        }

    def array(self, values):
        return mnp.array(np.asarray(values), dtype=self.dtype, ctx=self.context)

    # Initialization

    def init_layer(self, layer, *, global_init=None, weight_init=None, bias_init=None, seed=0, mode="canonical"):
        block = _make_block(layer, self.dtype, to_mx_initializer(weight_init), to_mx_initializer(bias_init) or "zeros")
        mx.random.seed(seed)
        arguments = {"ctx": self.context}
        if global_init is not None:
            arguments["init"] = to_mx_initializer(global_init)
        block.initialize(**arguments)
        values = {"weight": block.weight.data().asnumpy().astype(np.float64)}
        if block.bias is not None:
            values["bias"] = block.bias.data().asnumpy().astype(np.float64)
        return values

    def sequential(self, layers):
        return MXNetModel(self, layers)

    # Losses

    def loss(self, name, pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, mode="canonical"):
        if mode == "canonical" and batch_axis != 0:
            return self._legacy_loss(name, pred, label, weight, sample_weight, batch_axis)

        block_class = {"l1": gluon.loss.L1Loss, "l2": gluon.loss.L2Loss}[name]
        block = block_class(weight=weight, batch_axis=batch_axis)
        pred_array = self.array(pred)
        pred_array.attach_grad()
        extra = () if sample_weight is None else (self.array(sample_weight),)
        try:
            with autograd.record():
                values = block(pred_array, self.array(label), *extra)
        except mx.base.MXNetError as error:
            _translate_loss_error(error)
        values.backward()
        return values.asnumpy().astype(np.float64), pred_array.grad.asnumpy().astype(np.float64)

    def _legacy_loss(self, name, pred, label, weight, sample_weight, batch_axis):
        block_class = {"l1": gluon.loss.L1Loss, "l2": gluon.loss.L2Loss}[name]
        with mx.util.np_array(active=False), mx.util.np_shape(active=False):
            block = block_class(weight=weight, batch_axis=batch_axis)
            pred_array = mx.nd.array(pred, dtype=self.dtype, ctx=self.context)
            pred_array.attach_grad()
            extra = () if sample_weight is None else (mx.nd.array(sample_weight, dtype=self.dtype, ctx=self.context),)
            with autograd.record():
                values = block(pred_array, mx.nd.array(label, dtype=self.dtype, ctx=self.context), *extra)
            values.backward()
            return values.asnumpy().astype(np.float64), pred_array.grad.asnumpy().astype(np.float64)

    def custom_l1_loss(self, pred, label):
        pred_array = self.array(pred)
        pred_array.attach_grad()
        with autograd.record():
            values = CustomL1Loss()(pred_array, self.array(label))
            total = values.sum()
        total.backward()
        return values.asnumpy().astype(np.float64), pred_array.grad.asnumpy().astype(np.float64)

    def nonscalar_backward(self, pred, label, *, mode="canonical"):
        # MXNet's backward on a non-scalar uses a head gradient of ones in
        # both modes, so canonical and native are the same call.
        pred_array = self.array(pred)
        pred_array.attach_grad()
        with autograd.record():
            values = CustomL1Loss()(pred_array, self.array(label))
        values.backward()
        return pred_array.grad.asnumpy().astype(np.float64)

    # Optimizers

    def trainer(self, params, optimizer, *, grad_req="write", mode="canonical", implementation="default"):
        if isinstance(params, MXNetModel):
            named = dict(params.named_parameters())
        else:
            named = {}
            for name, value in params.items():
                param = gluon.Parameter(name, shape=np.shape(value), dtype=self.dtype)
                param.initialize(init=mx.init.Zero(), ctx=self.context)
                param.set_data(self.array(value))
                named[name] = param
        return MXNetTrainer(self, named, optimizer, grad_req, mode)

    # Benchmarks

    def synchronize(self):
        # MXNet's engine runs operators asynchronously, CPU included.
        mx.nd.waitall()

    def native_benchmarks(self):
        return MXNetBenchmarks(self)


# 5. Native benchmark calls --------------------------------------------------------------


class MXNetBenchmarks(NativeBenchmarks):
    """Each component written as a Gluon user writes it, without the adapter.

    Every call ends in ``mx.nd.waitall()``: without it the timer would stop
    when the operators are queued, not when they have run.
    """

    def __init__(self, adapter):
        self.adapter = adapter

    def overhead_notes(self):
        return {
            "loss": "the adapter's loss() copies the NumPy inputs into MXNet arrays and the loss and "
            "gradient back into float64 NumPy arrays on every call",
            "initializer": "Model.initialize() also seeds MXNet's generator and records warnings",
            "optimizer": "MXNetTrainer.step() adds a check for norm clipping and the translation of the "
            "stale-gradient error around Trainer.step()",
            "trainer": "Model.forward_backward() copies the input and label from NumPy and the per-sample "
            "losses back to a float64 NumPy array on every step",
        }

    def loss(self, name, pred, label):
        pred_array = self.adapter.array(pred)
        pred_array.attach_grad()
        label_array = self.adapter.array(label)

        if name == "custom_l1":
            block = CustomL1Loss()

            def run():
                with autograd.record():
                    total = block(pred_array, label_array).sum()
                total.backward()
                mx.nd.waitall()

            return BenchmarkCall(run)

        block = {"l1": gluon.loss.L1Loss, "l2": gluon.loss.L2Loss}[name]()

        def run():
            with autograd.record():
                values = block(pred_array, label_array)
            values.backward()
            mx.nd.waitall()

        return BenchmarkCall(run)

    def optimizer_step(self, weights, grads, optimizer):
        params = []
        for index, (weight, grad) in enumerate(zip(weights, grads)):
            param = gluon.Parameter(f"bench{index}", shape=weight.shape, dtype=self.adapter.dtype)
            param.initialize(init=mx.init.Zero(), ctx=self.adapter.context)
            param.set_data(self.adapter.array(weight))
            param.grad()[:] = self.adapter.array(grad)
            params.append(param)
        name, arguments = _optimizer_arguments(optimizer, "native")
        trainer = gluon.Trainer(params, name, arguments)
        mx.nd.waitall()

        def run():
            trainer.step(1)
            mx.nd.waitall()

        return BenchmarkCall(run, prepare=lambda: _mark_fresh(params))

    def initializer(self, layer, init, seed):
        net = nn.Sequential()
        net.add(_make_block(layer, self.adapter.dtype))
        native_init = to_mx_initializer(init)
        net.initialize(init=native_init, ctx=self.adapter.context)
        mx.nd.waitall()

        def run():
            net.initialize(init=native_init, ctx=self.adapter.context, force_reinit=True)
            mx.nd.waitall()

        return BenchmarkCall(run)

    def trainer_step(self, layers, x, label, optimizer, seed):
        net = nn.Sequential()
        for layer in layers:
            net.add(_make_block(layer, self.adapter.dtype))
        mx.random.seed(seed)
        net.initialize(ctx=self.adapter.context)
        x_array = self.adapter.array(x)
        label_array = self.adapter.array(label)
        # The first forward pass fixes deferred input sizes, which the Trainer needs.
        net(x_array)
        name, arguments = _optimizer_arguments(optimizer, "native")
        trainer = gluon.Trainer(net.collect_params(), name, arguments)
        loss_block = gluon.loss.L2Loss()
        batch_size = len(x)
        mx.nd.waitall()

        def run():
            with autograd.record():
                values = loss_block(net(x_array), label_array)
            values.backward()
            trainer.step(batch_size)
            mx.nd.waitall()

        return BenchmarkCall(run)
