"""Benchmarks of each training component, in three implementations.

For every component of ``harness.bench.components()``:

- ``native``: the framework's own API called directly
  (``Adapter.native_benchmarks()``), the steady-state time of the framework;
- ``adapter``: the same work through the adapter interface the conformance
  tests use; the difference to ``native`` is the harness overhead;
- ``numpy``: the float32 NumPy baseline (``harness.bench_numpy``).

The first call of each benchmark is timed apart from the steady state and
stored in ``extra_info["first_call_s"]``, because it includes operator
creation, tracing or compilation. Every timed call ends when the device has
finished (``Adapter.synchronize()``, or the native call's own wait). Array
copies and in-place adds measure the memory bandwidth in the same run, and
``test_adapter_overhead`` times adapter and native calls in alternating pairs.

Nothing here asserts a time. With ``--bench-quick --benchmark-disable`` every
body runs once on small arrays, which is the self-test of the default run.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from adapters.base import BenchmarkCall, Unsupported
from harness import bench
from harness.bench_numpy import NumpyBenchmarks

IMPLEMENTATIONS = ("native", "adapter", "numpy")
SEED = 0


def pytest_generate_tests(metafunc):
    if "component" not in metafunc.fixturenames:
        return
    every = bench.components(metafunc.config.getoption("--bench-quick", False))
    if metafunc.function.__name__ == "test_adapter_overhead":
        metafunc.parametrize("component", every, ids=[component.id for component in every])
        return
    # Native first: its first call is the framework's first call of that operator in the process.
    cases = [(component, implementation) for component in every for implementation in IMPLEMENTATIONS]
    metafunc.parametrize(
        ("component", "implementation"),
        cases,
        ids=[f"{component.id}-{implementation}" for component, implementation in cases],
    )


# 1. Timing ----------------------------------------------------------------------------


def _timed(call, synchronize):
    if call.prepare is not None:
        call.prepare()
    start = time.perf_counter()
    call.run()
    synchronize()
    return time.perf_counter() - start


def measure(benchmark, call, component, implementation, framework, version, synchronize=lambda: None):
    """Time the first call, then the steady state with pytest-benchmark's pedantic mode."""
    first_call = _timed(call, synchronize)
    rounds = 1
    if not benchmark.disabled:
        rounds = bench.rounds_for(_timed(call, synchronize))

    def setup():
        # pedantic() treats a value returned by setup as the call's arguments.
        if call.prepare is not None:
            call.prepare()

    def target():
        call.run()
        synchronize()

    benchmark.group = component.id
    benchmark.extra_info.update(
        {
            "component": component.id,
            "kind": component.kind,
            "title": component.title,
            "implementation": implementation,
            "framework": framework,
            "framework_version": version,
            "bytes_min": component.bytes_min,
            "first_call_s": first_call,
        }
    )
    benchmark.pedantic(
        target,
        setup=setup,
        rounds=rounds,
        warmup_rounds=0 if benchmark.disabled else bench.WARMUP_ROUNDS,
        iterations=1,
    )


@pytest.fixture
def subject(request, implementation):
    """``(framework name, version, adapter or None, native benchmarks)`` for this implementation."""
    if implementation == "numpy":
        baseline = NumpyBenchmarks()
        return "numpy", baseline.version, None, baseline
    adapter = request.getfixturevalue("framework_adapter")
    try:
        native = adapter.native_benchmarks()
    except Unsupported as error:
        pytest.skip(f"unsupported: {error}")
    return adapter.name, adapter.version, adapter, native


def build(function, *args, **kwargs):
    """Call ``function``; an ``Unsupported`` raised while building a benchmark skips it."""
    try:
        return function(*args, **kwargs)
    except Unsupported as error:
        pytest.skip(f"unsupported: {error}")


# 2. Memory bandwidth ----------------------------------------------------------------------


@pytest.mark.parametrize("threads", ["1", "all"])
@pytest.mark.parametrize("kind", ["copy", "add"])
def test_memory_bandwidth(benchmark, pytestconfig, kind, threads):
    quick = pytestconfig.getoption("--bench-quick", False)
    nbytes = bench.QUICK_BANDWIDTH_ARRAY_BYTES if quick else bench.BANDWIDTH_ARRAY_BYTES
    count = 1 if threads == "1" else bench.usable_cores()
    kernel = bench.BandwidthKernel(kind, nbytes, count)
    try:
        benchmark.group = "bandwidth"
        benchmark.extra_info.update({"component": f"bandwidth-{kind}-{threads}", "kind": "bandwidth"})
        benchmark.extra_info.update({"threads": count, "bytes_moved": kernel.bytes_moved})
        kernel()
        rounds = 1 if benchmark.disabled else bench.BANDWIDTH_ROUNDS
        benchmark.pedantic(kernel, rounds=rounds, warmup_rounds=0, iterations=1)
    finally:
        kernel.close()
    assert kernel.target[-1] > 0, "the bandwidth kernel left the target array unchanged"


# 3. Benchmark bodies -------------------------------------------------------------------------


def no_wait():
    # Native calls and the NumPy baseline wait for the device themselves.
    return None


def loss_inputs(component):
    options = component.options
    rng = np.random.default_rng(SEED)
    pred = rng.standard_normal((options["batch"], options["features"]), dtype=np.float32)
    label = rng.standard_normal((options["batch"], options["features"]), dtype=np.float32)
    return options["name"], pred, label


def trainer_inputs(component):
    layers = list(component.options["layers"])
    batch = component.options["batch"]
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1, 1, size=(batch, layers[0].in_channels)).astype(np.float32)
    label = rng.standard_normal((batch, layers[-1].out_channels)).astype(np.float32)
    return layers, x, label


def native_call(component, native):
    """Return the ``BenchmarkCall`` of ``native`` (a framework's or the NumPy baseline's) for ``component``."""
    options = component.options
    if component.kind == "loss":
        return build(native.loss, *loss_inputs(component))
    if component.kind == "optimizer":
        weights, grads = bench.optimizer_arrays(options["parameters"], options["tensors"], SEED)
        return build(native.optimizer_step, weights, grads, bench.make_optimizer(options["name"]))
    if component.kind == "initializer":
        return build(native.initializer, options["layer"], bench.make_initializer(options["name"]), SEED)
    layers, x, label = trainer_inputs(component)
    return build(native.trainer_step, layers, x, label, bench.make_optimizer("adam"), SEED)


def adapter_call(component, adapter):
    """Return the ``BenchmarkCall`` of the same work as ``native_call`` through the adapter interface."""
    options = component.options
    if component.kind == "loss":
        name, pred, label = loss_inputs(component)
        if name == "custom_l1":
            return BenchmarkCall(lambda: adapter.custom_l1_loss(pred, label))
        return BenchmarkCall(lambda: adapter.loss(name, pred, label))
    if component.kind == "optimizer":
        weights, grads = bench.optimizer_arrays(options["parameters"], options["tensors"], SEED)
        return adapter_optimizer_call(adapter, weights, grads, bench.make_optimizer(options["name"]))
    if component.kind == "initializer":
        initializer = bench.make_initializer(options["name"])
        model = adapter.sequential([options["layer"]])
        build(model.initialize, initializer)
        adapter.synchronize()
        return BenchmarkCall(lambda: model.initialize(initializer, force_reinit=True, seed=SEED))
    return adapter_trainer_call(component, adapter)


def adapter_optimizer_call(adapter, weights, grads, optimizer):
    """Return the adapter's optimizer step, after checking that one step changes the first parameter."""
    names = [f"p{index}" for index in range(len(weights))]
    # The native optimizer with the given hyperparameters, as the native call uses it.
    trainer = build(adapter.trainer, dict(zip(names, weights)), optimizer, mode="native")
    trainer.backward(dict(zip(names, grads)))
    call = BenchmarkCall(lambda: trainer.step(1), prepare=trainer.mark_grads_fresh)

    # A step that silently skipped its parameters would time nothing.
    before = trainer.read_live_view(trainer.live_view(names[0]))
    build(_timed, call, adapter.synchronize)
    after = trainer.read_live_view(trainer.live_view(names[0]))
    assert not np.array_equal(before, after), "the optimizer step left the first parameter unchanged"
    return call


def adapter_trainer_call(component, adapter):
    layers, x, label = trainer_inputs(component)
    batch = len(x)
    model = adapter.sequential(layers)
    model.initialize(seed=SEED)
    # The first forward pass fixes deferred input sizes, which the Trainer needs.
    model.forward(x)
    trainer = build(adapter.trainer, model, bench.make_optimizer("adam"), mode="native")

    def step():
        model.forward_backward(x, label, "l2")
        trainer.step(batch)

    return BenchmarkCall(step)


# 4. Benchmarks and the adapter overhead -----------------------------------------------------------


def test_component(benchmark, component, implementation, subject):
    framework, version, adapter, native = subject
    if implementation == "adapter":
        call = adapter_call(component, adapter)
        measure(benchmark, call, component, implementation, framework, version, adapter.synchronize)
    else:
        call = native_call(component, native)
        measure(benchmark, call, component, implementation, framework, version)


def test_adapter_overhead(component, framework_adapter, overhead_records, pytestconfig):
    """Adapter against native calls, timed in alternating pairs.

    Background load changes both calls of a pair alike, so the ratio per pair
    is steadier than the ratio of two medians taken minutes apart.
    """
    adapter = framework_adapter
    native = build(adapter.native_benchmarks)
    calls = {"native": native_call(component, native), "adapter": adapter_call(component, adapter)}
    waits = {"native": no_wait, "adapter": adapter.synchronize}
    times = {"native": [], "adapter": []}

    # Warm both, then alternate which call goes first in a pair.
    for _ in range(bench.OVERHEAD_WARMUP_CALLS):
        for name in calls:
            probe = _timed(calls[name], waits[name])
    quick = pytestconfig.getoption("--bench-quick", False)
    pairs = 1 if quick else bench.overhead_pairs_for(probe, component)
    for index in range(pairs):
        order = ("native", "adapter") if index % 2 else ("adapter", "native")
        for name in order:
            times[name].append(_timed(calls[name], waits[name]))

    ratios = np.array(times["adapter"]) / np.array(times["native"])
    overhead_records.append(
        {
            "component": component.id,
            "framework": adapter.name,
            "framework_version": adapter.version,
            "pairs": pairs,
            "adapter_median_s": float(np.median(times["adapter"])),
            "native_median_s": float(np.median(times["native"])),
            "ratio_median": float(np.median(ratios)),
            "ratio_q1": float(np.percentile(ratios, 25)),
            "ratio_q3": float(np.percentile(ratios, 75)),
            "overhead_limit": component.overhead_limit,
        }
    )
