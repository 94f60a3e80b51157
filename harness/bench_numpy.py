"""The NumPy baseline of the benchmarks: each component in float32 NumPy.

It is a benchmark-only "framework": it has no adapter and no conformance
run. The arithmetic follows Gluon's definitions (L2 with the 1/2, SGD with
the learning rate inside the momentum, Adam with epsilon before the bias
correction), written with preallocated buffers and in-place operations, as
a careful NumPy user would write it. NumPy has no autograd, so the custom
L1 loss is the same hand-written code as the built-in one.
"""

from __future__ import annotations

import math

import numpy as np

from adapters.base import BenchmarkCall, NativeBenchmarks

DTYPE = np.float32


class _Dense:
    def __init__(self, layer, in_units, rng):
        bound = 0.07
        self.weight = rng.uniform(-bound, bound, size=(layer.out_channels, in_units)).astype(DTYPE)
        self.bias = np.zeros(layer.out_channels, dtype=DTYPE)
        self.relu = layer.activation == "relu"
        if layer.activation not in (None, "relu"):
            raise ValueError(f"invalid activation {layer.activation!r} for the NumPy baseline: expected None or relu")


class _AdamState:
    """Adam over a list of float32 arrays, updated in place."""

    def __init__(self, arrays, optimizer):
        self.optimizer = optimizer
        self.means = [np.zeros_like(array) for array in arrays]
        self.variances = [np.zeros_like(array) for array in arrays]
        self.scratch = [np.empty_like(array) for array in arrays]
        self.count = 0

    def step(self, weights, grads, rescale):
        opt = self.optimizer
        self.count += 1
        step_size = opt.learning_rate * math.sqrt(1.0 - opt.beta2**self.count) / (1.0 - opt.beta1**self.count)
        for weight, grad, mean, variance, scratch in zip(weights, grads, self.means, self.variances, self.scratch):
            # scratch = rescale * g
            np.multiply(grad, DTYPE(rescale), out=scratch)
            # m = beta1 m + (1 - beta1) g
            mean *= DTYPE(opt.beta1)
            mean += DTYPE(1.0 - opt.beta1) * scratch
            # v = beta2 v + (1 - beta2) g^2
            np.square(scratch, out=scratch)
            variance *= DTYPE(opt.beta2)
            variance += DTYPE(1.0 - opt.beta2) * scratch
            # w -= step_size * m / (sqrt(v) + epsilon)
            np.sqrt(variance, out=scratch)
            scratch += DTYPE(opt.epsilon)
            np.divide(mean, scratch, out=scratch)
            scratch *= DTYPE(step_size)
            weight -= scratch


class _SGDMomentumState:
    """SGD with momentum, learning rate inside the buffer: v = mu v - lr g; w += v."""

    def __init__(self, arrays, optimizer):
        self.optimizer = optimizer
        self.velocities = [np.zeros_like(array) for array in arrays]
        self.scratch = [np.empty_like(array) for array in arrays]

    def step(self, weights, grads, rescale):
        opt = self.optimizer
        for weight, grad, velocity, scratch in zip(weights, grads, self.velocities, self.scratch):
            np.multiply(grad, DTYPE(opt.learning_rate * rescale), out=scratch)
            velocity *= DTYPE(opt.momentum)
            velocity -= scratch
            weight += velocity


def _optimizer_state(arrays, optimizer):
    if optimizer.name == "adam":
        return _AdamState(arrays, optimizer)
    if optimizer.momentum > 0:
        return _SGDMomentumState(arrays, optimizer)
    raise ValueError("the NumPy baseline implements SGD with momentum only: expected momentum > 0")


class NumpyBenchmarks(NativeBenchmarks):
    """The float32 NumPy baseline of every benchmark component."""

    name = "numpy"
    version = np.__version__

    def loss(self, name, pred, label):
        pred = np.array(pred, dtype=DTYPE)
        label = np.array(label, dtype=DTYPE).reshape(pred.shape)
        diff = np.empty_like(pred)
        scratch = np.empty_like(pred)
        grad = np.empty_like(pred)
        # Per-sample mean over the features: d(sum of losses) / d pred has the factor 1 / features.
        scale = DTYPE(1.0 / (pred.size // pred.shape[0]))

        def run_l1():
            np.subtract(pred, label, out=diff)
            np.abs(diff, out=scratch)
            values = scratch.mean(axis=1)
            np.sign(diff, out=grad)
            np.multiply(grad, scale, out=grad)
            return values

        def run_l2():
            np.subtract(pred, label, out=diff)
            np.square(diff, out=scratch)
            values = scratch.mean(axis=1) * DTYPE(0.5)
            np.multiply(diff, scale, out=grad)
            return values

        return BenchmarkCall(run_l2 if name == "l2" else run_l1)

    def optimizer_step(self, weights, grads, optimizer):
        weights = [np.array(weight, dtype=DTYPE) for weight in weights]
        grads = [np.array(grad, dtype=DTYPE) for grad in grads]
        state = _optimizer_state(weights, optimizer)
        return BenchmarkCall(lambda: state.step(weights, grads, 1.0))

    def initializer(self, layer, init, seed):
        shape = layer.weight_shape()
        weight = np.empty(shape, dtype=DTYPE)
        law = init.law(shape)
        if law.kind not in ("uniform", "normal"):
            raise ValueError(f"invalid law {law.kind!r} for the NumPy baseline: expected uniform or normal")

        def run():
            rng = np.random.default_rng(seed)
            # In-place arithmetic through out=, so the closure never rebinds weight.
            if law.kind == "uniform":
                rng.random(out=weight, dtype=DTYPE)
                np.multiply(weight, DTYPE(law.high - law.low), out=weight)
                np.add(weight, DTYPE(law.low), out=weight)
            else:
                rng.standard_normal(out=weight, dtype=DTYPE)
                np.multiply(weight, DTYPE(law.std), out=weight)
                np.add(weight, DTYPE(law.mean), out=weight)
            return weight

        return BenchmarkCall(run)

    def trainer_step(self, layers, x, label, optimizer, seed):
        rng = np.random.default_rng(seed)
        x = np.array(x, dtype=DTYPE)
        label = np.array(label, dtype=DTYPE)
        dense = []
        in_units = x.shape[1]
        for layer in layers:
            dense.append(_Dense(layer, layer.in_channels or in_units, rng))
            in_units = layer.out_channels
        weights = [array for block in dense for array in (block.weight, block.bias)]
        state = _optimizer_state(weights, optimizer)
        batch_size = len(x)
        scale = DTYPE(1.0 / label.shape[1])

        def run():
            # Forward: keep every layer's input and pre-activation for the backward pass.
            inputs, outputs = [], []
            value = x
            for block in dense:
                inputs.append(value)
                value = value @ block.weight.T + block.bias
                outputs.append(value)
                if block.relu:
                    value = np.maximum(value, 0)

            # Per-sample L2 loss, half the mean squared error over the outputs.
            diff = value - label
            losses = DTYPE(0.5) * np.square(diff).mean(axis=1)

            # Backward of the sum of the per-sample losses.
            delta = diff * scale
            grads = []
            for block, block_input, output in zip(reversed(dense), reversed(inputs), reversed(outputs)):
                if block.relu:
                    delta = delta * (output > 0)
                grads.append(delta.sum(axis=0))
                grads.append(delta.T @ block_input)
                delta = delta @ block.weight
            grads.reverse()

            state.step(weights, grads, 1.0 / batch_size)
            return losses

        return BenchmarkCall(run)
