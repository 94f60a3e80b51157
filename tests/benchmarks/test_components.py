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
finished (``Adapter.synchronize()``, or the native call's own wait). Two
copy benchmarks measure the memory bandwidth of the machine in the same run.

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
        selected = bench.overhead_components(every)
        metafunc.parametrize("component", selected, ids=[component.id for component in selected])
        return
    kind = metafunc.function.__name__.removeprefix("test_")
    selected = [component for component in every if component.kind == kind]
    # Native first: its first call is the framework's first call of that operator in the process.
    cases = [(component, implementation) for component in selected for implementation in IMPLEMENTATIONS]
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
def test_memory_bandwidth(benchmark, pytestconfig, threads):
    nbytes = bench.QUICK_COPY_BYTES if pytestconfig.getoption("--bench-quick", False) else bench.COPY_BYTES
    count = 1 if threads == "1" else bench.usable_cores()
    copy = bench.ArrayCopy(nbytes, count)
    try:
        benchmark.group = "bandwidth"
        benchmark.extra_info.update({"component": f"bandwidth-copy-{threads}", "kind": "bandwidth"})
        benchmark.extra_info.update({"threads": count, "bytes_moved": copy.bytes_moved})
        copy()
        benchmark.pedantic(copy, rounds=1 if benchmark.disabled else 20, warmup_rounds=0, iterations=1)
    finally:
        copy.close()
    assert copy.target[-1] == 1.0


# 3. Components ----------------------------------------------------------------------------


def test_loss(benchmark, component, implementation, subject):
    framework, version, adapter, native = subject
    options = component.options
    rng = np.random.default_rng(SEED)
    pred = rng.standard_normal((options["batch"], options["features"]), dtype=np.float32)
    label = rng.standard_normal((options["batch"], options["features"]), dtype=np.float32)

    if implementation == "adapter":
        if options["name"] == "custom_l1":
            call = BenchmarkCall(lambda: adapter.custom_l1_loss(pred, label))
        else:
            call = BenchmarkCall(lambda: adapter.loss(options["name"], pred, label))
        measure(benchmark, call, component, implementation, framework, version, adapter.synchronize)
        return

    call = build(native.loss, options["name"], pred, label)
    measure(benchmark, call, component, implementation, framework, version)


def adapter_optimizer_call(adapter, weights, grads, optimizer):
    """Return the adapter's optimizer step as a ``BenchmarkCall``, and a function returning the first parameter."""
    names = [f"p{index}" for index in range(len(weights))]
    # The native optimizer with the given hyperparameters, as the native call uses it.
    trainer = build(adapter.trainer, dict(zip(names, weights)), optimizer, mode="native")
    trainer.backward(dict(zip(names, grads)))
    build(trainer.mark_grads_fresh)
    adapter.synchronize()
    call = BenchmarkCall(lambda: trainer.step(1), prepare=trainer.mark_grads_fresh)
    return call, lambda: trainer.read_live_view(trainer.live_view(names[0]))


def test_optimizer(benchmark, component, implementation, subject):
    framework, version, adapter, native = subject
    options = component.options
    optimizer = bench.make_optimizer(options["name"])
    weights, grads = bench.optimizer_arrays(options["parameters"], options["tensors"], SEED)

    if implementation != "adapter":
        call = build(native.optimizer_step, weights, grads, optimizer)
        measure(benchmark, call, component, implementation, framework, version)
        return

    call, first_parameter = adapter_optimizer_call(adapter, weights, grads, optimizer)
    before = first_parameter()
    measure(benchmark, call, component, implementation, framework, version, adapter.synchronize)

    # A step that silently skipped its parameters would time nothing.
    assert not np.array_equal(before, first_parameter()), "the optimizer step left the first parameter unchanged"


def test_adapter_overhead(component, framework_adapter, overhead_records, pytestconfig):
    """Adapter against native optimizer steps, timed in alternating pairs.

    Background load changes both calls of a pair alike, so the ratio per pair
    is steadier than the ratio of two medians taken minutes apart.
    """
    adapter = framework_adapter
    native = build(adapter.native_benchmarks)
    options = component.options
    optimizer = bench.make_optimizer(options["name"])
    weights, grads = bench.optimizer_arrays(options["parameters"], options["tensors"], SEED)
    native_call = build(native.optimizer_step, weights, grads, optimizer)
    adapter_call, _ = adapter_optimizer_call(adapter, weights, grads, optimizer)

    def time_adapter():
        return _timed(adapter_call, adapter.synchronize)

    def time_native():
        return _timed(native_call, lambda: None)

    # Warm both, then alternate which call goes first in a pair.
    for _ in range(bench.OVERHEAD_WARMUP_CALLS):
        time_adapter()
        probe = time_native()
    pairs = 1 if pytestconfig.getoption("--bench-quick", False) else bench.overhead_pairs_for(probe)
    adapter_times, native_times = [], []
    for index in range(pairs):
        if index % 2:
            native_times.append(time_native())
            adapter_times.append(time_adapter())
        else:
            adapter_times.append(time_adapter())
            native_times.append(time_native())

    ratios = np.array(adapter_times) / np.array(native_times)
    overhead_records.append(
        {
            "component": component.id,
            "framework": adapter.name,
            "framework_version": adapter.version,
            "pairs": pairs,
            "adapter_median_s": float(np.median(adapter_times)),
            "native_median_s": float(np.median(native_times)),
            "ratio_median": float(np.median(ratios)),
            "ratio_q1": float(np.percentile(ratios, 25)),
            "ratio_q3": float(np.percentile(ratios, 75)),
        }
    )


def test_initializer(benchmark, component, implementation, subject):
    framework, version, adapter, native = subject
    layer = component.options["layer"]
    initializer = bench.make_initializer(component.options["name"])

    if implementation != "adapter":
        call = build(native.initializer, layer, initializer, SEED)
        measure(benchmark, call, component, implementation, framework, version)
        return

    model = adapter.sequential([layer])
    build(model.initialize, initializer)
    adapter.synchronize()
    call = BenchmarkCall(lambda: model.initialize(initializer, force_reinit=True, seed=SEED))
    measure(benchmark, call, component, implementation, framework, version, adapter.synchronize)


def test_trainer(benchmark, component, implementation, subject):
    framework, version, adapter, native = subject
    layers = list(component.options["layers"])
    batch = component.options["batch"]
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1, 1, size=(batch, layers[0].in_channels)).astype(np.float32)
    label = rng.standard_normal((batch, layers[-1].out_channels)).astype(np.float32)
    optimizer = bench.make_optimizer("adam")

    if implementation != "adapter":
        call = build(native.trainer_step, layers, x, label, optimizer, SEED)
        measure(benchmark, call, component, implementation, framework, version)
        return

    model = adapter.sequential(layers)
    model.initialize(seed=SEED)
    # The first forward pass fixes deferred input sizes, which the Trainer needs.
    model.forward(x)
    trainer = build(adapter.trainer, model, optimizer, mode="native")

    def step():
        model.forward_backward(x, label, "l2")
        trainer.step(batch)

    measure(benchmark, BenchmarkCall(step), component, implementation, framework, version, adapter.synchronize)
