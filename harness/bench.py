"""The benchmark components, their sizes and byte counts, and the machine facts.

``tests/benchmarks/test_components.py`` times each component of
``components()`` and ``harness/bench_report.py`` merges the results. Sizes
come in two sets: the full set (what ``tox -m bench`` measures) and a quick
set for the self-test, which runs every benchmark body once on small arrays.

A bandwidth-bound component carries ``bytes_min``, the bytes one call must
move between memory and the cores at least. With the bandwidth measured by
large array passes in the same run (a copy and an in-place add),
``bytes_min / bandwidth`` is the shortest time the machine allows for that call.
"""

from __future__ import annotations

import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from adapters.base import LayerSpec
from reference import init as ref_init
from reference import optim as ref_optim

FLOAT32_BYTES = 4

# The tutorial's network: nn.Dense(5, in_units=3, activation='relu'),
# nn.Dense(25, activation='relu'), nn.Dense(2), on a batch of 10.
TUTORIAL_LAYERS = (
    LayerSpec("dense", 5, 3, activation="relu"),
    LayerSpec("dense", 25, activation="relu"),
    LayerSpec("dense", 2),
)
TUTORIAL_BATCH = 10

# A multilayer perceptron of 1,055,242 parameters: 512 -> 1024 -> 512 -> 10.
MLP_LAYERS = (
    LayerSpec("dense", 1024, 512, activation="relu"),
    LayerSpec("dense", 512, 1024, activation="relu"),
    LayerSpec("dense", 10, 512),
)
MLP_BATCH = 64
QUICK_MLP_LAYERS = (
    LayerSpec("dense", 16, 8, activation="relu"),
    LayerSpec("dense", 8, 16, activation="relu"),
    LayerSpec("dense", 2, 8),
)

# Steady-state rounds per benchmark: enough rounds to fill about
# ROUND_SECONDS, within [MIN_ROUNDS, MAX_ROUNDS]. Keras' Adam step over 1000
# tensors takes about 2 s on the 2-core development machine, so it gets MIN_ROUNDS.
ROUND_SECONDS = 0.5
MIN_ROUNDS = 5
MAX_ROUNDS = 200
WARMUP_ROUNDS = 1

# Alternating adapter-native pairs for the adapter overhead: about
# PAIR_SECONDS per implementation and component, and VERDICT_PAIR_SECONDS for
# the components that the report compares with OVERHEAD_LIMIT (the optimizer
# steps at 1e6 parameters). Keras steps over 1000 tensors take up to 2 s,
# so the least number of pairs bounds the run time.
PAIR_SECONDS = 1.0
MIN_PAIRS = 5
VERDICT_PAIR_SECONDS = 3.0
VERDICT_MIN_PAIRS = 10
MAX_PAIRS = 400
OVERHEAD_WARMUP_CALLS = 2
OVERHEAD_LIMIT = 0.05

# The arrays of the bandwidth kernels: 256 MiB each, far larger than the
# last-level cache of current CPUs.
BANDWIDTH_ARRAY_BYTES = 256 * 2**20
QUICK_BANDWIDTH_ARRAY_BYTES = 2**20
BANDWIDTH_ROUNDS = 20


@dataclass(frozen=True)
class Component:
    """One benchmarked component and its size.

    ``kind`` is "loss", "optimizer", "initializer" or "trainer". ``bytes_min``
    is None for components bound by compute or call latency. The report
    compares the adapter overhead of a component with ``overhead_limit``
    when it is set.
    """

    id: str
    kind: str
    title: str
    bytes_min: int | None
    options: dict = field(default_factory=dict, compare=False, hash=False)
    overhead_limit: float | None = None


# Bytes per element or parameter of each bandwidth-bound component, float32.
def loss_bytes(batch, features):
    # Forward and backward read pred and label once (8 B per element),
    # write the gradient (4 B per element) and one loss value per sample.
    return 3 * FLOAT32_BYTES * batch * features + FLOAT32_BYTES * batch


def optimizer_bytes(name, parameters):
    # SGD with momentum reads weight, gradient and momentum and writes weight
    # and momentum: 20 B per parameter. Adam reads weight, gradient, mean and
    # variance and writes weight, mean and variance: 28 B per parameter.
    per_parameter = {"sgd_momentum": 5, "adam": 7}[name] * FLOAT32_BYTES
    return per_parameter * parameters


def initializer_bytes(elements):
    # Writes every element once: 4 B per element. Random number generation
    # usually makes an initializer compute-bound, so this floor is loose.
    return FLOAT32_BYTES * elements


def make_optimizer(name):
    """Return the reference optimizer of a benchmark optimizer name."""
    if name == "sgd_momentum":
        return ref_optim.SGD(learning_rate=0.01, momentum=0.9)
    return ref_optim.Adam(learning_rate=0.001)


def make_initializer(name):
    """Return the reference initializer of a benchmark initializer name."""
    return {"uniform": ref_init.Uniform(0.07), "normal": ref_init.Normal(0.01), "xavier": ref_init.Xavier()}[name]


def _count_label(count):
    exponent = int(round(np.log10(count)))
    return f"1e{exponent}" if 10**exponent == count else str(count)


def components(quick=False):
    """Return every benchmark component, in report order."""
    result = []

    # Losses: forward and backward at two batch shapes.
    shapes = ((4, 16), (8, 16)) if quick else ((64, 1024), (1024, 1024))
    for name, title in (("l1", "L1 loss"), ("l2", "L2 loss"), ("custom_l1", "custom L1 loss")):
        for batch, features in shapes:
            result.append(
                Component(
                    f"loss-{name}-{batch}x{features}",
                    "loss",
                    f"{title}, forward and backward, {batch} x {features}",
                    loss_bytes(batch, features),
                    {"name": name, "batch": batch, "features": features},
                )
            )

    # Optimizer steps: one tensor, and the same count split into many tensors.
    sizes = (10**3, 10**4) if quick else (10**6, 10**7)
    tensor_counts = (1, 10) if quick else (1, 1000)
    for name, title in (("sgd_momentum", "SGD with momentum"), ("adam", "Adam")):
        for parameters in sizes:
            for tensors in tensor_counts:
                label = _count_label(parameters)
                result.append(
                    Component(
                        f"step-{name}-{label}-{tensors}t",
                        "optimizer",
                        f"{title} step, {label} float32 parameters in {tensors} tensor{'s' if tensors > 1 else ''}",
                        optimizer_bytes(name, parameters),
                        {"name": name, "parameters": parameters, "tensors": tensors},
                        OVERHEAD_LIMIT if parameters == sizes[0] else None,
                    )
                )

    # Initializers filling one weight of out x in elements.
    out_units, in_units = (10, 100) if quick else (1000, 10000)
    elements = out_units * in_units
    for name, title in (("uniform", "Uniform(0.07)"), ("normal", "Normal(0.01)"), ("xavier", "Xavier()")):
        result.append(
            Component(
                f"init-{name}-{_count_label(elements)}",
                "initializer",
                f"{title} filling {_count_label(elements)} elements ({out_units} x {in_units} weight)",
                initializer_bytes(elements),
                {"name": name, "layer": LayerSpec("dense", out_units, in_units, use_bias=False)},
            )
        )

    # Full Trainer steps: forward, L2 loss, backward, Adam step.
    mlp = QUICK_MLP_LAYERS if quick else MLP_LAYERS
    mlp_parameters = sum(layer.out_channels * (layer.in_channels + 1) for layer in mlp)
    result.append(
        Component(
            "trainer-tutorial",
            "trainer",
            f"Trainer step (forward, L2 loss, backward, Adam) of the tutorial's network, batch {TUTORIAL_BATCH}",
            None,
            {"layers": TUTORIAL_LAYERS, "batch": TUTORIAL_BATCH},
        )
    )
    result.append(
        Component(
            "trainer-mlp",
            "trainer",
            f"Trainer step (forward, L2 loss, backward, Adam) of an MLP of {mlp_parameters} parameters, "
            f"batch {MLP_BATCH}",
            None,
            {"layers": mlp, "batch": MLP_BATCH},
        )
    )
    return result


# Optimizer inputs: the parameter count split into equal tensors.
def optimizer_arrays(parameters, tensors, seed=0):
    """Return float32 weights and gradients: ``tensors`` arrays of ``parameters / tensors`` elements."""
    rng = np.random.default_rng(seed)
    size = parameters // tensors
    weights = [rng.standard_normal(size, dtype=np.float32) for _ in range(tensors)]
    grads = [rng.standard_normal(size, dtype=np.float32) for _ in range(tensors)]
    return weights, grads


def overhead_pairs_for(seconds_per_call, component):
    """Return the number of adapter-native pairs for a call of about ``seconds_per_call``.

    Components with an overhead limit get more pairs, because the report
    compares their overhead with that limit.
    """
    budget, least = (VERDICT_PAIR_SECONDS, VERDICT_MIN_PAIRS) if component.overhead_limit else (PAIR_SECONDS, MIN_PAIRS)
    if seconds_per_call <= 0:
        return MAX_PAIRS
    return int(min(MAX_PAIRS, max(least, np.ceil(budget / seconds_per_call))))


def rounds_for(seconds_per_call):
    """Return the number of timed rounds for a call of about ``seconds_per_call``."""
    if seconds_per_call <= 0:
        return MAX_ROUNDS
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, np.ceil(ROUND_SECONDS / seconds_per_call))))


# Memory bandwidth ---------------------------------------------------------------


class BandwidthKernel:
    """A pass over large float32 arrays that measures the memory bandwidth, split over ``threads``.

    ``kind`` "copy" copies one array into another and moves 8 B per element:
    the source read and the destination written (the STREAM count, which
    leaves out the destination read that a write-allocate cache adds). "add"
    adds one array into another in place and moves 12 B per element: both
    read, one written back. In-place updates like "add" are what the
    optimizer steps do. On the 2-core AMD EPYC development machine "add" on
    both cores reached 1.6 to 2.7 times the bandwidth of "copy", so the
    report takes the highest kernel as the machine's limit. NumPy releases
    the GIL in both loops, so the threads run in parallel.
    """

    def __init__(self, kind, nbytes, threads):
        if kind not in ("copy", "add"):
            raise ValueError(f"invalid bandwidth kernel {kind!r}: expected 'copy' or 'add'")
        count = nbytes // FLOAT32_BYTES
        self.kind = kind
        self.source = np.ones(count, dtype=np.float32)
        self.target = np.zeros(count, dtype=np.float32)
        self.threads = threads
        bounds = np.linspace(0, count, threads + 1).astype(int)
        self.slices = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.bytes_moved = (2 if kind == "copy" else 3) * count * FLOAT32_BYTES

    def _run(self, part):
        if self.kind == "copy":
            np.copyto(self.target[part], self.source[part])
        else:
            np.add(self.target[part], self.source[part], out=self.target[part])

    def __call__(self):
        if self.pool is None:
            self._run(slice(None))
            return
        for future in [self.pool.submit(self._run, part) for part in self.slices]:
            future.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


# Machine facts ---------------------------------------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores():
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_description():
    """Return the CPU model, core counts, memory and software versions of this machine."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    }
