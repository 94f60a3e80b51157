"""Options and the results file of the component benchmarks.

``--bench-output PATH`` writes pytest-benchmark's JSON, with the run facts
under the key ``"trainspec"``, to PATH whole or not at all. pytest-benchmark
builds its JSON only when ``--benchmark-json`` is given and writes that file
in place, so the tox environments point ``--benchmark-json`` at a scratch
file and ``--bench-output`` at ``results/benchmarks/<framework>.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from adapters.base import Unsupported
from harness.bench import machine_description
from harness.results import write_atomic

RUN_FACTS_KEY = pytest.StashKey()
OVERHEAD_KEY = pytest.StashKey()
LOAD_KEY = pytest.StashKey()
WRITTEN_KEY = pytest.StashKey()


class NotRunRecorder:
    """Collects the benchmarks that were skipped (unsupported, device
    missing) or failed, so that the results file lists them as not run."""

    def __init__(self):
        self.entries = []

    def pytest_runtest_logreport(self, report):
        if report.passed:
            return
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.entries.append({"nodeid": report.nodeid, "outcome": "skipped", "reason": reason})
            return
        lines = str(report.longrepr).strip().splitlines()
        self.entries.append({"nodeid": report.nodeid, "outcome": "failed", "reason": lines[-1] if lines else ""})


def pytest_addoption(parser):
    group = parser.getgroup("trainspec benchmarks")
    group.addoption(
        "--bench-quick",
        action="store_true",
        help="small sizes for the self-test that runs every benchmark body (use with --benchmark-disable)",
    )
    group.addoption(
        "--bench-output",
        metavar="PATH",
        help="write the benchmark results with the run facts to PATH, whole or not at all "
        "(needs --benchmark-json SCRATCH_PATH)",
    )


def pytest_configure(config):
    if config.getoption("--bench-output", None) and not config.getoption("--benchmark-json", None):
        raise pytest.UsageError(
            "--bench-output needs --benchmark-json SCRATCH_PATH: pytest-benchmark builds its JSON only with that option"
        )
    config.stash[RUN_FACTS_KEY] = {}
    config.stash[OVERHEAD_KEY] = []
    config.stash[LOAD_KEY] = _load_average()
    config.pluginmanager.register(NotRunRecorder(), "trainspec-not-run-recorder")


@pytest.fixture(scope="session")
def framework_adapter(request, pytestconfig):
    """The adapter of --framework, checked for benchmarking; its run facts go into the results file."""
    if pytestconfig.getoption("--framework") is None:
        pytest.skip("not_run: no --framework given")
    adapter = request.getfixturevalue("adapter")
    if adapter.dtype != "float32":
        pytest.skip(f"not_run: the benchmarks are sized for float32, not {adapter.dtype}")
    if not adapter.device_available():
        pytest.skip(f"not_run: device {adapter.device} is not available")
    facts = pytestconfig.stash[RUN_FACTS_KEY]
    facts.update(adapter.run_facts())
    try:
        facts["overhead_notes"] = adapter.native_benchmarks().overhead_notes()
    except Unsupported:
        facts["overhead_notes"] = {}
    return adapter


@pytest.fixture(scope="session")
def overhead_records(pytestconfig):
    """The list of paired adapter-native measurements written into the results file."""
    return pytestconfig.stash[OVERHEAD_KEY]


def _load_average():
    # Other processes on the machine slow the benchmarks down; the report shows the load.
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    facts = {"framework": config.getoption("--framework"), "quick": bool(config.getoption("--bench-quick", False))}
    facts.update(config.stash[RUN_FACTS_KEY])
    facts["machine"] = machine_description()
    facts["load_average_start"] = config.stash[LOAD_KEY]
    facts["load_average_end"] = _load_average()
    facts["overhead"] = list(config.stash[OVERHEAD_KEY])
    facts["command"] = shlex.join([Path(sys.executable).name, "-m", "pytest", *config.invocation_params.args])
    facts["tox_env"] = os.environ.get("TOX_ENV_NAME")
    recorder = config.pluginmanager.get_plugin("trainspec-not-run-recorder")
    facts["not_run"] = list(recorder.entries)
    output_json["trainspec"] = facts

    path = config.getoption("--bench-output", None)
    if path:
        write_atomic(path, json.dumps(output_json, indent=1, default=str) + "\n")
        config.stash[WRITTEN_KEY] = True


def pytest_terminal_summary(terminalreporter, config):
    path = config.getoption("--bench-output", None)
    if path and not config.stash.get(WRITTEN_KEY, False):
        # pytest-benchmark builds no JSON when no benchmark fixture ran.
        terminalreporter.write_line(f"warning: no benchmark ran, so {path} was not written", yellow=True)
    elif path:
        terminalreporter.write_line(f"benchmark results: {path}")
