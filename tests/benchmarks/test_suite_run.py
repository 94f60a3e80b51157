"""Wall time of a whole conformance run, imports included.

Each round starts a fresh ``python -m pytest tests/conformance`` process for
the framework given by --framework, so the time includes interpreter start,
framework import, collection and every case. The number of recorded cases
goes into the benchmark's extra_info. Nothing here asserts a time.
"""

import json
import subprocess
import sys

import pytest

from harness.catalogue import ROOT

pytestmark = pytest.mark.harness


def test_conformance_run_wall_time(benchmark, pytestconfig, tmp_path):
    framework = pytestconfig.getoption("--framework")
    if framework is None:
        raise pytest.UsageError("the suite benchmark needs --framework NAME")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/conformance",
        "-q",
        "-p",
        "no:cacheprovider",
        "--framework",
        framework,
        "--results-dir",
        str(tmp_path),
    ]

    def run():
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)

    completed = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]

    record = json.loads(next(tmp_path.glob(f"{framework}-*.json")).read_text())
    benchmark.extra_info["framework"] = framework
    benchmark.extra_info["recorded_cases"] = len(record["cases"])
    benchmark.extra_info["command"] = f"python -m pytest tests/conformance --framework {framework}"
