"""PyTorch 2.13 adapter: torch.nn layers and losses, torch.nn.init, torch.optim.

NOTE: Canonical mode composes Gluon's semantics from PyTorch's own API and
keeps every step that PyTorch can express in PyTorch:
- initializers: ``torch.nn.init`` functions (``xavier_*``, ``kaiming_*``
  with ``mode``, ``nonlinearity`` and ``a``, ``trunc_normal_`` with absolute
  bounds), seeded by a ``torch.Generator``. Gluon's precedence (own
  initializer, then zero biases, then the global initializer, then
  ``Uniform(0.07)``) and its "already initialized" state are kept by the
  adapter, because ``torch.nn`` has neither: every ``torch.nn.init`` call and
  every ``reset_parameters()`` overwrites the values;
- deferred shapes: ``nn.LazyLinear`` and ``nn.LazyConv*d``. A forward
  pre-hook draws the initializer recorded by ``initialize()`` once PyTorch
  has materialized the parameters, before the first output;
- losses: ``nn.L1Loss`` and ``nn.MSELoss`` with ``reduction='none'``, times
  ``sample_weight``, ``weight`` and 1/2 for L2, averaged over every axis
  except ``batch_axis``;
- Trainer step: backward of the summed per-sample losses, gradients
  rescaled by ``1 / batch_size``, then ``torch.optim.SGD`` / ``Adam`` /
  ``AdamW``. The list of compositions is in ``TorchTrainer``.

Native mode passes only the given hyperparameters to the torch.optim
constructor or uses the loss modules with their defaults, and raises
``Unsupported`` for an argument that the native call does not take.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
from packaging.version import Version
from torch import nn

from adapters.base import Adapter, BenchmarkCall, Model, NativeBenchmarks, Trainer, Unsupported
from reference import init as ref_init
from reference.errors import LabelShapeError, StaleGradientError

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Keyword arguments of torch.optim constructors for each implementation.
# "default" leaves the choice to PyTorch (the for-loop on CPU, foreach on CUDA).
IMPLEMENTATIONS = {
    "default": {},
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softrelu": nn.Softplus,
    "softsign": nn.Softsign,
}
# calculate_gain("leaky_relu", a) = sqrt(2 / (1 + a^2)) reaches at most sqrt(2), at a = 0.
MAX_LEAKY_RELU_GAIN = math.sqrt(2.0)


def to_numpy(tensor):
    """Return a float64 NumPy copy of a tensor."""
    return tensor.detach().cpu().numpy().astype(np.float64)


# 1. Initializers ----------------------------------------------------------------


def _fan_scaled(tensor, factor_type, normal, gain, generator):
    """Draw from U(-gain sqrt(3 / factor), +) or N(0, gain^2 / factor) in place.

    ``factor`` is the fan average for "avg" (``xavier_*``), else ``fan_in`` or
    ``fan_out`` (``kaiming_*``), all with the fans PyTorch computes.
    """
    if gain == 0:
        nn.init.zeros_(tensor)
        return
    if factor_type == "avg":
        draw = nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_
        draw(tensor, gain=gain, generator=generator)
        return

    # kaiming_* takes its gain as a nonlinearity: leaky_relu with slope a
    # gives any gain up to sqrt(2). A larger gain scales the unit-gain law.
    draw = nn.init.kaiming_normal_ if normal else nn.init.kaiming_uniform_
    mode = {"in": "fan_in", "out": "fan_out"}[factor_type]
    if gain <= MAX_LEAKY_RELU_GAIN:
        # max() absorbs the rounding of gain^2 at gain sqrt(2), where the slope is 0.
        slope = math.sqrt(max(0.0, 2.0 / gain**2 - 1.0))
        draw(tensor, a=slope, mode=mode, nonlinearity="leaky_relu", generator=generator)
    else:
        draw(tensor, mode=mode, nonlinearity="linear", generator=generator)
        tensor.mul_(gain)


def apply_initializer(tensor, initializer, generator):
    """Draw ``tensor``'s values in place from a reference initializer through ``torch.nn.init``."""
    with torch.no_grad():
        if isinstance(initializer, ref_init.Constant):
            nn.init.constant_(tensor, initializer.value)
        elif isinstance(initializer, ref_init.Uniform):
            nn.init.uniform_(tensor, -initializer.scale, initializer.scale, generator=generator)
        elif isinstance(initializer, ref_init.Normal):
            nn.init.normal_(tensor, 0.0, initializer.sigma, generator=generator)
        elif isinstance(initializer, ref_init.Xavier):
            # Xavier's scale is sqrt(magnitude / factor): the uniform bound
            # gain * sqrt(3 / factor) needs gain sqrt(magnitude / 3), the
            # normal deviation gain / sqrt(factor) needs gain sqrt(magnitude).
            normal = initializer.rnd_type == "gaussian"
            gain = math.sqrt(initializer.magnitude if normal else initializer.magnitude / 3.0)
            _fan_scaled(tensor, initializer.factor_type, normal, gain, generator)
        elif isinstance(initializer, ref_init.MSRAPrelu):
            # MSRAPrelu is He normal with the leaky ReLU slope as kaiming's a.
            if initializer.factor_type == "avg":
                gain = nn.init.calculate_gain("leaky_relu", initializer.slope)
                nn.init.xavier_normal_(tensor, gain=gain, generator=generator)
            else:
                mode = {"in": "fan_in", "out": "fan_out"}[initializer.factor_type]
                nn.init.kaiming_normal_(
                    tensor, a=initializer.slope, mode=mode, nonlinearity="leaky_relu", generator=generator
                )
        elif isinstance(initializer, ref_init.TruncatedNormal):
            nn.init.trunc_normal_(
                tensor, initializer.mean, initializer.std, initializer.low, initializer.high, generator=generator
            )
        elif isinstance(initializer, ref_init.VarianceScaling):
            _variance_scaling(tensor, initializer, generator)
        else:
            raise Unsupported(f"no torch.nn.init mapping for {initializer!r}")


def _variance_scaling(tensor, initializer, generator):
    factor_type = {"fan_in": "in", "fan_out": "out", "fan_avg": "avg"}[initializer.mode]
    if initializer.distribution != "truncated_normal":
        normal = initializer.distribution == "untruncated_normal"
        _fan_scaled(tensor, factor_type, normal, math.sqrt(initializer.scale), generator)
        return

    # trunc_normal_ takes the deviation before truncation and absolute
    # bounds, so the fans come from the helper every torch.nn.init
    # initializer uses (private, but the one PyTorch's layers call too).
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    fan = {"in": fan_in, "out": fan_out, "avg": (fan_in + fan_out) / 2.0}[factor_type]
    std = math.sqrt(initializer.scale / max(1.0, fan)) / ref_init.TRUNCATION_STD_AT_2
    nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def gluon_initializer(kind, own=None, global_init=None):
    """Return the initializer that Gluon gives a parameter of ``kind``.

    PyTorch has no precedence rules, so the adapter states Gluon's: a
    parameter's own initializer, else zero for a bias, else the global
    initializer, else ``Uniform(0.07)``.
    """
    if own is not None:
        return own
    if kind == "bias":
        return ref_init.Zero()
    return global_init if global_init is not None else ref_init.Uniform()


# 2. Layers and models --------------------------------------------------------------


def make_layer(layer, dtype, device):
    """Return the torch module of a ``LayerSpec``; lazy when ``in_channels`` is None."""
    factory = {"bias": layer.use_bias, "dtype": dtype, "device": device}
    if layer.kind == "dense":
        if layer.in_channels is None:
            return nn.LazyLinear(layer.out_channels, **factory)
        return nn.Linear(layer.in_channels, layer.out_channels, **factory)

    rank = len(layer.kernel_size)
    if rank not in (1, 2, 3):
        raise ValueError(f"invalid kernel_size {layer.kernel_size}: expected 1 to 3 spatial axes")
    arguments = {"kernel_size": layer.kernel_size, "groups": layer.groups, **factory}
    if layer.in_channels is None:
        lazy = {1: nn.LazyConv1d, 2: nn.LazyConv2d, 3: nn.LazyConv3d}[rank]
        return lazy(layer.out_channels, **arguments)
    convolution = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    return convolution(layer.in_channels, layer.out_channels, **arguments)


def layer_parameters(module):
    """Yield ``(kind, parameter)`` for the weight and, when present, the bias."""
    yield "weight", module.weight
    if module.bias is not None:
        yield "bias", module.bias


class GradientState:
    """Gluon's per-parameter gradient state, which torch.autograd does not keep.

    ``grad_reqs`` is "write" or "add" by name. ``fresh`` is True once a
    backward pass has written the gradient: a post-accumulate-grad hook,
    which autograd calls after it stores a parameter's gradient, sets it.
    A Trainer sets it back to False after a step.
    """

    def __init__(self):
        self.grad_reqs = {}
        self.fresh = {}

    def watch(self, name, param):
        """Start tracking ``param``; it must have a shape (not a lazy parameter)."""
        self.grad_reqs.setdefault(name, "write")
        self.fresh[name] = False
        param.register_post_accumulate_grad_hook(self._make_hook(name))

    def _make_hook(self, name):
        def mark_fresh(param):
            self.fresh[name] = True

        return mark_fresh


class TorchModel(Model):
    """A ``nn.Sequential`` of layers and activations with Gluon's initialize().

    Parameter names count layers only: ``"1.weight"`` is the second
    ``LayerSpec``'s weight whatever activations come before it.
    """

    def __init__(self, adapter, layers):
        self.adapter = adapter
        self.specs = list(layers)
        self.layers = []
        modules = []
        for spec in self.specs:
            module = make_layer(spec, adapter.torch_dtype, adapter.torch_device)
            self.layers.append(module)
            modules.append(module)
            if spec.activation is not None:
                if spec.activation not in ACTIVATIONS:
                    raise ValueError(
                        f"invalid activation {spec.activation!r}: expected one of {', '.join(sorted(ACTIVATIONS))}"
                    )
                modules.append(ACTIVATIONS[spec.activation]())
        self.net = nn.Sequential(*modules)

        # Gluon's state that torch.nn does not keep: which parameters
        # initialize() has set, the draws waiting for a deferred shape, and
        # the gradient state. A lazy parameter takes no hook before it has a shape.
        self.initialized = set()
        self.pending = {}
        self.gradients = GradientState()
        for name, param in self.named_parameters():
            if not nn.parameter.is_lazy(param):
                self.gradients.watch(name, param)
        for index, module in enumerate(self.layers):
            if isinstance(module, nn.modules.lazy.LazyModuleMixin):
                # Registered after LazyModuleMixin's own pre-hook, so it runs
                # once the shapes are known and before the layer computes.
                module.register_forward_pre_hook(self._make_deferred_hook(index))

    def named_parameters(self):
        for index, module in enumerate(self.layers):
            for kind, param in layer_parameters(module):
                yield f"{index}.{kind}", param

    def _make_deferred_hook(self, index):
        def after_shape_inference(module, args):
            for kind, param in layer_parameters(module):
                name = f"{index}.{kind}"
                if name not in self.gradients.fresh:
                    self.gradients.watch(name, param)
                if name in self.pending:
                    initializer, generator = self.pending.pop(name)
                    apply_initializer(param, initializer, generator)
                    self.initialized.add(name)

        return after_shape_inference

    def initialize(self, init=None, *, force_reinit=False, seed=0):
        generator = self.adapter.generator(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for name, param in self.named_parameters():
                if name in self.initialized and not force_reinit:
                    warnings.warn(
                        f"parameter {name!r} is already initialized; initialize() leaves it unchanged "
                        "(pass force_reinit=True to draw new values)",
                        UserWarning,
                        stacklevel=2,
                    )
                    continue
                chosen = gluon_initializer(name.rsplit(".", 1)[1], global_init=init)
                if nn.parameter.is_lazy(param):
                    self.pending[name] = (chosen, generator)
                else:
                    apply_initializer(param, chosen, generator)
                    self.initialized.add(name)
        return [str(w.message) for w in caught]

    def param_shapes(self):
        shapes = {}
        for index, (spec, module) in enumerate(zip(self.specs, self.layers)):
            for kind, param in layer_parameters(module):
                if not nn.parameter.is_lazy(param):
                    shape = tuple(param.shape)
                elif kind == "bias":
                    shape = (spec.out_channels,)
                else:
                    shape = (spec.out_channels, None, *spec.kernel_size)
                shapes[f"{index}.{kind}"] = shape
        return shapes

    def params(self):
        return {name: to_numpy(param) for name, param in self.named_parameters() if not nn.parameter.is_lazy(param)}

    def set_params(self, values):
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name in values:
                    param.copy_(self.adapter.tensor(values[name]))

    def forward(self, x):
        with torch.no_grad():
            return to_numpy(self.net(self.adapter.tensor(x)))

    def forward_backward(self, x, label, loss):
        # grad_req "write": drop the old gradient, so backward stores the new one.
        for name, param in self.named_parameters():
            if self.gradients.grad_reqs.get(name) == "write":
                param.grad = None
        values = PerSampleLoss(loss)(self.net(self.adapter.tensor(x)), self.adapter.tensor(label))
        values.sum().backward()
        return to_numpy(values)


# 3. Losses ---------------------------------------------------------------------------


def reshape_label(pred, label):
    """Reshape ``label`` to ``pred``'s shape with ``Tensor.reshape``; raise
    ``LabelShapeError`` when the numbers of elements differ."""
    try:
        return label.reshape(pred.shape)
    except RuntimeError as error:
        raise LabelShapeError(
            f"label of shape {tuple(label.shape)} does not match prediction of shape {tuple(pred.shape)}: {error}"
        ) from error


class PerSampleLoss(nn.Module):
    """Gluon's L1Loss or L2Loss built on ``nn.L1Loss`` / ``nn.MSELoss``.

    The elementwise loss (``reduction='none'``) is multiplied by
    ``sample_weight``, by ``weight`` and, for L2, by 1/2, then averaged over
    every axis except ``batch_axis``: one value per sample.
    """

    def __init__(self, name, weight=1.0, batch_axis=0):
        super().__init__()
        if name not in ("l1", "l2"):
            raise ValueError(f"invalid loss {name!r}: expected 'l1' or 'l2'")
        self.elementwise = nn.L1Loss(reduction="none") if name == "l1" else nn.MSELoss(reduction="none")
        self.half = name == "l2"
        self.weight = weight
        self.batch_axis = batch_axis

    def forward(self, pred, label, sample_weight=None):
        loss = self.elementwise(pred, reshape_label(pred, label))
        if sample_weight is not None:
            loss = loss * sample_weight
        loss = loss * self.weight
        if self.half:
            loss = loss * 0.5
        if not -loss.ndim <= self.batch_axis < loss.ndim:
            raise ValueError(f"invalid batch_axis {self.batch_axis}: expected an axis of a {loss.ndim}-D prediction")
        # Tensor.mean(dim=[]) would average every axis, so a 1-D loss is returned as is.
        axes = [axis for axis in range(loss.ndim) if axis != self.batch_axis % loss.ndim]
        return loss.mean(dim=axes) if axes else loss


class CustomL1Loss(nn.Module):
    """A custom loss: a subclass of ``nn.Module`` with a ``forward`` made of
    torch operations, whose backward pass autograd supplies.

    PyTorch's built-in losses derive from ``torch.nn.modules.loss._Loss``, a
    private class that only stores the ``reduction`` argument (and its
    deprecated ``size_average`` and ``reduce`` forms), so the public base
    class is used.
    """

    def forward(self, pred, label):
        loss = torch.abs(label.reshape(pred.shape) - pred)
        return loss.reshape(loss.shape[0], -1).mean(dim=1)


# 4. Trainer -----------------------------------------------------------------------------


def _check_native_optimizer(optimizer):
    for name in ("clip_gradient", "clip_norm", "global_clip_norm"):
        if getattr(optimizer, name) is not None:
            raise Unsupported(
                f"torch.optim.{'SGD' if optimizer.name == 'sgd' else 'Adam'} takes no {name} argument; "
                "PyTorch clips with torch.nn.utils.clip_grad_value_ or clip_grad_norm_ called before step(), "
                "which the canonical mode composes"
            )


@torch.no_grad()
def _clip_by_norm(params, max_norm):
    """Scale the gradients of ``params`` by ``min(1, max_norm / norm)``, ``norm`` being their joint L2 norm.

    The norm is PyTorch's ``get_total_norm`` and the factor is the spec's,
    because ``nn.utils.clip_grad_norm_`` divides by ``norm + 1e-6``.
    """
    norm = float(nn.utils.get_total_norm([param.grad for param in params]))
    if norm > max_norm:
        for param in params:
            param.grad.mul_(max_norm / norm)


class TorchTrainer(Trainer):
    """Gluon's Trainer on top of a ``torch.optim`` optimizer.

    NOTE: Canonical mode composes each rule that torch.optim has no option for:
    - rescale: for the duration of ``optimizer.step()`` each gradient is
      replaced by a copy times ``1 / batch_size``. The stored gradient is
      put back afterwards, because Gluon keeps what backward wrote.
    - norm clipping: ``torch.nn.utils.get_total_norm`` of each parameter
      (``clip_norm``) or of all updated parameters (``global_clip_norm``),
      and the gradients times ``min(1, c / norm)``. ``clip_grad_norm_`` is not
      used because it divides by ``norm + 1e-6``.
    - value clipping: ``torch.nn.utils.clip_grad_value_`` before the step.
      torch.optim then adds ``weight_decay * w``, which is the order
      ``clip_then_wd``. For ``wd_then_clip`` (Gluon's Adam) the adapter adds
      ``wd * w`` to the gradient first and passes ``weight_decay=0``.
    - decoupled weight decay: ``torch.optim.AdamW``. For SGD the weight is
      multiplied by ``1 - lr * wd`` before the step, as AdamW does.
    - momentum with the learning rate inside the buffer: torch.optim.SGD
      keeps ``b = momentum * b + g`` and subtracts ``lr * b``. That equals
      Gluon's ``v = momentum * v - lr * g`` with ``v = -lr * b`` while lr is
      fixed, so a learning-rate change from ``lr_old`` to ``lr_new``
      multiplies ``b`` by ``lr_old / lr_new`` to keep ``v``.
    - Adam's epsilon before the bias correction: torch.optim.Adam adds eps to
      ``sqrt(v / (1 - beta2^t))``, so the group's eps is set to
      ``epsilon / sqrt(1 - beta2^t)`` before each step. This is the spec's
      update rewritten exactly, not an approximation, so the adapter counts
      it as canonical; only the rounding differs. Each parameter has its own
      group because ``t`` counts per parameter.
    - stale gradients: ``GradientState`` marks a parameter fresh when
      autograd writes its gradient. ``step()`` raises ``StaleGradientError``
      before it changes anything. With ``ignore_stale_grad`` the stale
      parameters have no gradient during the step, so torch.optim skips
      them and their step counts do not advance.
    - grad_req "write": the gradient is dropped before each backward pass,
      because PyTorch otherwise accumulates (grad_req "add").

    Native mode runs PyTorch's training loop and ignores ``grad_req``:
    gradients accumulate over the backward passes between two steps, and
    ``step()`` rescales, calls ``optimizer.step()``, then
    ``optimizer.zero_grad()``. It checks no stale gradient.
    """

    def __init__(self, adapter, named_params, optimizer, *, gradients, grad_req, mode, implementation):
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"invalid implementation {implementation!r}: expected one of {', '.join(IMPLEMENTATIONS)}")
        if grad_req not in ("write", "add"):
            raise ValueError(f"invalid grad_req {grad_req!r}: expected 'write' or 'add'")
        self.adapter = adapter
        self.params = dict(named_params)
        self.spec = optimizer
        self.mode = mode
        self.learning_rate = optimizer.learning_rate

        # PyTorch itself always accumulates gradients.
        self.gradients = gradients
        for name in self.params:
            self.gradients.grad_reqs[name] = grad_req if mode == "canonical" else "add"

        # The compositions of the class NOTE; the canonical builder switches on those it needs.
        self.value_clip = self.norm_clip = self.global_norm_clip = None
        self.added_wd = 0.0
        self.decoupled_sgd_wd = 0.0
        self.lr_inside = False
        self.epsilon_before = False

        options = IMPLEMENTATIONS[implementation]
        if mode == "canonical":
            self.optimizer = self._canonical_optimizer(optimizer, options)
        else:
            self.optimizer = self._native_optimizer(optimizer, mode, options)

    # Construction

    def _native_optimizer(self, optimizer, mode, options):
        params = list(self.params.values())
        if mode == "native_defaults":
            return (torch.optim.SGD if optimizer.name == "sgd" else torch.optim.Adam)(params, **options)

        _check_native_optimizer(optimizer)
        if optimizer.name == "sgd":
            return torch.optim.SGD(
                params, lr=optimizer.learning_rate, momentum=optimizer.momentum, weight_decay=optimizer.wd, **options
            )
        return torch.optim.Adam(
            params,
            lr=optimizer.learning_rate,
            betas=(optimizer.beta1, optimizer.beta2),
            eps=optimizer.epsilon,
            weight_decay=optimizer.wd,
            **options,
        )

    def _canonical_optimizer(self, optimizer, options):
        self.value_clip = optimizer.clip_gradient
        self.norm_clip = optimizer.clip_norm
        self.global_norm_clip = optimizer.global_clip_norm
        decoupled = optimizer.wd_mode == "decoupled"
        # Weight decay before value clipping has no torch.optim option: add it by hand.
        wd_by_hand = not decoupled and self.value_clip is not None and optimizer.clip_order == "wd_then_clip"
        self.added_wd = optimizer.wd if wd_by_hand else 0.0
        native_wd = 0.0 if wd_by_hand else optimizer.wd

        if optimizer.name == "sgd":
            self.decoupled_sgd_wd = optimizer.wd if decoupled else 0.0
            self.lr_inside = optimizer.momentum > 0 and optimizer.momentum_form == "lr_inside"
            return torch.optim.SGD(
                list(self.params.values()),
                lr=optimizer.learning_rate,
                momentum=optimizer.momentum,
                weight_decay=0.0 if decoupled else native_wd,
                **options,
            )

        if not optimizer.bias_correction:
            raise Unsupported("torch.optim.Adam always applies the bias correction")
        self.epsilon_before = optimizer.epsilon_placement == "before_correction"
        groups = [{"params": [param]} for param in self.params.values()]
        adam = torch.optim.AdamW if decoupled else torch.optim.Adam
        return adam(
            groups,
            lr=optimizer.learning_rate,
            betas=(optimizer.beta1, optimizer.beta2),
            eps=optimizer.epsilon,
            weight_decay=native_wd,
            **options,
        )

    # Gradients

    def backward(self, grads):
        # d/dp sum(p * g) = g exactly in any dtype.
        total = None
        for name, grad in grads.items():
            if self.gradients.grad_reqs[name] == "write":
                self.params[name].grad = None
            term = (self.params[name] * self.adapter.tensor(grad)).sum()
            total = term if total is None else total + term
        if total is not None:
            total.backward()

    def zero_grad(self):
        # Gluon zeroes gradients and keeps them fresh or stale as they were;
        # PyTorch's default zero_grad() sets them to None, read as zeros.
        self.optimizer.zero_grad(set_to_none=self.mode != "canonical")

    # Step

    def step(self, batch_size, ignore_stale_grad=False):
        if not (isinstance(batch_size, (int, float, np.integer, np.floating)) and batch_size > 0):
            raise ValueError(f"invalid batch_size {batch_size!r}: expected a number > 0")

        if self.mode == "canonical":
            # A lazy parameter has no entry until its first forward pass: stale.
            stale = [name for name in self.params if not self.gradients.fresh.get(name, False)]
            if stale and not ignore_stale_grad:
                raise StaleGradientError(
                    f"gradient of parameter(s) {', '.join(stale)} has not been updated by backward "
                    "since the last step; call step with ignore_stale_grad=True to skip them"
                )
            updating = [name for name in self.params if name not in stale]
        else:
            updating = [name for name, param in self.params.items() if param.grad is not None]

        stored = {name: param.grad for name, param in self.params.items()}
        try:
            for name, param in self.params.items():
                param.grad = stored[name] * (1.0 / batch_size) if name in updating else None
            self._prepare_gradients([self.params[name] for name in updating])
            self.optimizer.step()
        finally:
            for name, param in self.params.items():
                param.grad = stored[name]

        for name in updating:
            self.gradients.fresh[name] = False
        if self.mode != "canonical":
            self.optimizer.zero_grad()

    def _prepare_gradients(self, params):
        # Norm clipping, weight decay added by hand, value clipping, decoupled
        # SGD decay and Adam's epsilon, in the reference's order.
        if self.norm_clip is not None:
            for param in params:
                _clip_by_norm([param], self.norm_clip)
        if self.global_norm_clip is not None and params:
            _clip_by_norm(params, self.global_norm_clip)
        with torch.no_grad():
            if self.added_wd:
                for param in params:
                    param.grad.add_(param, alpha=self.added_wd)
            if self.value_clip is not None and params:
                nn.utils.clip_grad_value_(params, self.value_clip)
            if self.decoupled_sgd_wd:
                for param in params:
                    param.mul_(1.0 - self.learning_rate * self.decoupled_sgd_wd)
        if self.epsilon_before:
            beta2 = self.spec.beta2
            for group in self.optimizer.param_groups:
                state = self.optimizer.state.get(group["params"][0], {})
                t = int(state["step"]) + 1 if "step" in state else 1
                group["eps"] = self.spec.epsilon / math.sqrt(1.0 - beta2**t)

    def set_learning_rate(self, learning_rate):
        if learning_rate < 0:
            raise ValueError(f"invalid learning_rate {learning_rate!r}: expected a number >= 0")
        if self.lr_inside and learning_rate != self.learning_rate:
            buffers = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in self.params.values()]
            buffers = [buffer for buffer in buffers if buffer is not None]
            if buffers and learning_rate == 0:
                raise Unsupported(
                    "momentum with the learning rate inside the buffer keeps moving the weight at learning "
                    "rate 0; torch.optim.SGD's buffer cannot be rescaled by lr_old / 0"
                )
            with torch.no_grad():
                for buffer in buffers:
                    buffer.mul_(self.learning_rate / learning_rate)
        self.learning_rate = learning_rate
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

    # Reading

    def weights(self):
        return {name: to_numpy(param) for name, param in self.params.items()}

    def grads(self):
        return {
            name: to_numpy(param.grad) if param.grad is not None else np.zeros(tuple(param.shape))
            for name, param in self.params.items()
        }

    def states(self):
        states = {}
        for name, param in self.params.items():
            state = self.optimizer.state.get(param, {})
            if "exp_avg" in state:
                states[name] = {"mean": to_numpy(state["exp_avg"]), "variance": to_numpy(state["exp_avg_sq"])}
            elif state.get("momentum_buffer") is not None:
                states[name] = {"momentum": to_numpy(state["momentum_buffer"])}
            else:
                states[name] = {}
        return states

    def live_view(self, name):
        return self.params[name].data

    def read_live_view(self, view):
        return to_numpy(view)

    def mark_grads_fresh(self):
        # Native mode ends each step with optimizer.zero_grad(), which sets the
        # gradients to None, so the gradients found at the first call are kept
        # and put back wherever a step has dropped them.
        first_grads = getattr(self, "_first_grads", None)
        if first_grads is None:
            first_grads = self._first_grads = {name: param.grad for name, param in self.params.items()}
        for name, param in self.params.items():
            if param.grad is None:
                param.grad = first_grads[name]
            self.gradients.fresh[name] = True


# 5. The adapter -------------------------------------------------------------------------------


class TorchAdapter(Adapter):
    name = "torch"

    def __init__(self, device="cpu", dtype="float32"):
        super().__init__(device, dtype)
        kind, _, index = device.partition(":")
        self.is_gpu = kind == "gpu"
        self.device_index = int(index or 0)
        self.torch_device = torch.device("cuda", self.device_index) if self.is_gpu else torch.device("cpu")
        self.torch_dtype = TORCH_DTYPES[dtype]
        if self.is_gpu:
            # TF32 rounds float32 matmul and convolution inputs to 10 mantissa bits.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    @property
    def version(self):
        # The public version: "2.13.0" for the "2.13.0+cpu" wheel; numerics() keeps the build.
        return Version(torch.__version__).public

    def device_available(self):
        if not self.is_gpu:
            return True
        return torch.cuda.is_available() and torch.cuda.device_count() > self.device_index

    def numerics(self):
        return {
            "torch_build": torch.__version__,
            "cuda": torch.version.cuda or "none",
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        }

    def tensor(self, values):
        # torch.tensor copies: as_tensor would share a float64 array's memory
        # with the caller, and an in-place step would change the test's inputs.
        return torch.tensor(np.asarray(values), dtype=self.torch_dtype, device=self.torch_device)

    def generator(self, seed):
        return torch.Generator(device=self.torch_device).manual_seed(int(seed))

    # Initialization

    def init_layer(self, layer, *, global_init=None, weight_init=None, bias_init=None, seed=0, mode="canonical"):
        if layer.in_channels is None:
            raise ValueError("init_layer needs in_channels: a lazy layer has no values before its first forward pass")
        if mode == "native_defaults":
            if (global_init, weight_init, bias_init) != (None, None, None):
                raise ValueError("mode 'native_defaults' takes no initializer")
            # The module's own reset_parameters() draws from the global generator.
            torch.manual_seed(seed)
            module = make_layer(layer, self.torch_dtype, self.torch_device)
        else:
            module = make_layer(layer, self.torch_dtype, self.torch_device)
            generator = self.generator(seed)
            own = {"weight": weight_init, "bias": bias_init}
            for kind, param in layer_parameters(module):
                apply_initializer(param, gluon_initializer(kind, own[kind], global_init), generator)
        return {kind: to_numpy(param) for kind, param in layer_parameters(module)}

    def sequential(self, layers):
        return TorchModel(self, layers)

    # Losses

    def loss(self, name, pred, label, *, weight=1.0, sample_weight=None, batch_axis=0, mode="canonical"):
        pred_tensor = self.tensor(pred).requires_grad_()
        label_tensor = self.tensor(label)
        if mode == "canonical":
            extra = () if sample_weight is None else (self.tensor(sample_weight),)
            values = PerSampleLoss(name, weight, batch_axis)(pred_tensor, label_tensor, *extra)
        else:
            values = self._native_loss(name, weight, sample_weight, batch_axis)(pred_tensor, label_tensor)
        values.sum().backward()
        return to_numpy(values), to_numpy(pred_tensor.grad)

    @staticmethod
    def _native_loss(name, weight, sample_weight, batch_axis):
        native = {"l1": "nn.L1Loss", "l2": "nn.MSELoss"}[name]
        if weight != 1.0 or sample_weight is not None:
            raise Unsupported(
                f"{native} takes no weight or sample_weight; weighting needs reduction='none' and a product"
            )
        if batch_axis != 0:
            raise Unsupported(f"{native} has no batch_axis; its default reduction averages every element")
        return nn.L1Loss() if name == "l1" else nn.MSELoss()

    def custom_l1_loss(self, pred, label):
        pred_tensor = self.tensor(pred).requires_grad_()
        values = CustomL1Loss()(pred_tensor, self.tensor(label))
        values.sum().backward()
        return to_numpy(values), to_numpy(pred_tensor.grad)

    def nonscalar_backward(self, pred, label, *, mode="canonical"):
        pred_tensor = self.tensor(pred).requires_grad_()
        values = CustomL1Loss()(pred_tensor, self.tensor(label))
        if mode == "canonical":
            # A head gradient of ones: the gradient of the sum of the losses.
            values.backward(torch.ones_like(values))
        else:
            values.backward()
        return to_numpy(pred_tensor.grad)

    # Optimizers

    def optimizer_implementations(self, optimizer_name):
        # Each implementation whose constructor accepts a parameter of this
        # device and dtype. On CPU, foreach=True runs torch.optim's multi-tensor
        # code on the _foreach_* operators' CPU kernels.
        optimizer_class = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer_name]
        probe = nn.Parameter(torch.zeros(1, dtype=self.torch_dtype, device=self.torch_device))
        names = []
        for implementation in ("for-loop", "foreach", "fused"):
            try:
                optimizer_class([probe], lr=0.1, **IMPLEMENTATIONS[implementation])
            except RuntimeError:
                continue
            names.append(implementation)
        return tuple(names)

    def trainer(self, params, optimizer, *, grad_req="write", mode="canonical", implementation="default"):
        if isinstance(params, TorchModel):
            named = dict(params.named_parameters())
            gradients = params.gradients
        else:
            named = {name: nn.Parameter(self.tensor(value)) for name, value in params.items()}
            gradients = GradientState()
            for name, param in named.items():
                gradients.watch(name, param)
        return TorchTrainer(
            self, named, optimizer, gradients=gradients, grad_req=grad_req, mode=mode, implementation=implementation
        )

    # Benchmarks

    def synchronize(self):
        # CPU operators run synchronously; CUDA kernels are queued.
        if self.is_gpu:
            torch.cuda.synchronize(self.torch_device)

    def native_benchmarks(self):
        return TorchBenchmarks(self)


# 6. Native benchmark calls ------------------------------------------------------------------------


def _benchmark_optimizer(params, optimizer):
    """Return the torch.optim SGD or Adam that a user would write for a reference optimizer."""
    if optimizer.name == "sgd":
        return torch.optim.SGD(params, lr=optimizer.learning_rate, momentum=optimizer.momentum)
    return torch.optim.Adam(
        params, lr=optimizer.learning_rate, betas=(optimizer.beta1, optimizer.beta2), eps=optimizer.epsilon
    )


class TorchBenchmarks(NativeBenchmarks):
    """Each component written as a PyTorch user writes it, without the adapter.

    Every call ends with ``adapter.synchronize()``, which waits for the
    queued CUDA kernels on a GPU and does nothing on the CPU.
    """

    def __init__(self, adapter):
        self.adapter = adapter

    def overhead_notes(self):
        return {
            "loss": "the adapter's loss() copies the NumPy inputs into new tensors and the loss and gradient "
            "back into float64 NumPy arrays on every call",
            "initializer": "Model.initialize() also creates a seeded torch.Generator, records warnings and "
            "keeps Gluon's initialization state",
            "optimizer": "TorchTrainer.step() composes Gluon's rescale by 1 / batch_size, which torch.optim has "
            "no option for: it multiplies every gradient into a newly allocated tensor (one more read and "
            "write of each gradient, 8 B per parameter), runs several Python loops over the parameters and "
            "ends with zero_grad(); the native call is optimizer.step() alone",
            "trainer": "Model.forward_backward() copies the input and label from NumPy and the per-sample losses "
            "back to float64 NumPy, and TorchTrainer.step() rescales every gradient into a new tensor",
        }

    def loss(self, name, pred, label):
        pred_tensor = self.adapter.tensor(pred).requires_grad_()
        label_tensor = self.adapter.tensor(label)
        if name == "custom_l1":
            block = CustomL1Loss()
        elif name == "l1":
            block = lambda p, t: nn.functional.l1_loss(p, t, reduction="none").mean(dim=1)
        else:
            block = lambda p, t: (0.5 * nn.functional.mse_loss(p, t, reduction="none")).mean(dim=1)

        def run():
            # A fresh gradient each call: backward would otherwise add to the old one.
            pred_tensor.grad = None
            block(pred_tensor, label_tensor).sum().backward()
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def optimizer_step(self, weights, grads, optimizer):
        params = []
        for weight, grad in zip(weights, grads):
            param = nn.Parameter(self.adapter.tensor(weight))
            param.grad = self.adapter.tensor(grad)
            params.append(param)
        native = _benchmark_optimizer(params, optimizer)

        def run():
            native.step()
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def initializer(self, layer, init, seed):
        module = make_layer(layer, self.adapter.torch_dtype, self.adapter.torch_device)
        weight = module.weight
        if isinstance(init, ref_init.Uniform):
            fill = lambda generator: nn.init.uniform_(weight, -init.scale, init.scale, generator=generator)
        elif isinstance(init, ref_init.Normal):
            fill = lambda generator: nn.init.normal_(weight, 0.0, init.sigma, generator=generator)
        elif isinstance(init, ref_init.Xavier) and init.factor_type == "avg":
            # Gluon's Xavier scale sqrt(magnitude / factor) is xavier_*'s with gain sqrt(magnitude / 3)
            # for the uniform law and sqrt(magnitude) for the normal one.
            normal = init.rnd_type == "gaussian"
            gain = math.sqrt(init.magnitude if normal else init.magnitude / 3.0)
            draw = nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_
            fill = lambda generator: draw(weight, gain=gain, generator=generator)
        else:
            raise Unsupported(f"no native benchmark call for {init!r}")

        def run():
            with torch.no_grad():
                fill(torch.Generator(device=self.adapter.torch_device).manual_seed(seed))
            self.adapter.synchronize()

        return BenchmarkCall(run)

    def trainer_step(self, layers, x, label, optimizer, seed):
        torch.manual_seed(seed)
        modules = []
        for layer in layers:
            modules.append(make_layer(layer, self.adapter.torch_dtype, self.adapter.torch_device))
            if layer.activation is not None:
                modules.append(ACTIVATIONS[layer.activation]())
        net = nn.Sequential(*modules)
        x_tensor = self.adapter.tensor(x)
        label_tensor = self.adapter.tensor(label)
        # The first forward pass gives lazy layers their shapes, which the optimizer needs.
        with torch.no_grad():
            net(x_tensor)
        native = _benchmark_optimizer(net.parameters(), optimizer)

        def run():
            native.zero_grad()
            values = (0.5 * nn.functional.mse_loss(net(x_tensor), label_tensor, reduction="none")).mean(dim=1)
            # The mean over the batch is Gluon's sum of per-sample losses rescaled by 1 / batch_size.
            values.mean().backward()
            native.step()
            self.adapter.synchronize()

        return BenchmarkCall(run)
