"""Harness self-tests that need a framework: not_run on a missing device and
loud failure of a stale deviation. Each runs pytest in a subprocess on the
INIT-CONSTANT cases of the framework given by --framework."""

import json
import os
import subprocess
import sys

import pytest

from harness.catalogue import ROOT

pytestmark = pytest.mark.harness


def run_pytest(pytestconfig, tmp_path, *arguments):
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/conformance",
        "-k",
        "test_constant and not test_harness",
        "-p",
        "no:cacheprovider",
        "--framework",
        pytestconfig.getoption("--framework"),
        "--results-dir",
        str(tmp_path),
        *arguments,
    ]
    # The child must not inherit the -k or node id selection of this run.
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=environment)
    records = list(tmp_path.glob("*.json"))
    record = json.loads(records[0].read_text()) if records else None
    return completed, record


def test_missing_device_records_not_run(pytestconfig, tmp_path):
    # No machine has 98 GPUs: every case is not_run and the exit status is 1.
    completed, record = run_pytest(pytestconfig, tmp_path, "--device", "gpu:97")
    assert completed.returncode == 1, completed.stdout[-2000:]
    assert record["run"]["device_missing"] is True
    assert record["cases"]
    assert {case["outcome"] for case in record["cases"]} == {"not_run"}
    assert "not available" in completed.stdout


def test_missing_device_allowed_exits_zero(pytestconfig, tmp_path):
    completed, record = run_pytest(pytestconfig, tmp_path, "--device", "gpu:97", "--allow-missing-device")
    assert completed.returncode == 0, completed.stdout[-2000:]
    assert {case["outcome"] for case in record["cases"]} == {"not_run"}


def test_deviation_that_no_longer_reproduces_fails(pytestconfig, tmp_path):
    # A profile that claims a deviation for a case that passes, and one
    # entry that matches no case at all.
    framework = pytestconfig.getoption("--framework")
    profile = tmp_path / "profiles" / f"{framework}.toml"
    profile.parent.mkdir()
    original = (ROOT / "spec" / "profiles" / f"{framework}.toml").read_text()
    profile.write_text(
        original
        + '\n[[deviation]]\nrule = "INIT-CONSTANT"\nversions = ">=0"\ncases = ["test_init::test_constant[3]"]\n'
        'size = "none"\nreason = "planted by the harness self-test"\n'
        + '\n[[deviation]]\nrule = "INIT-CONSTANT"\nversions = ">=0"\ncases = ["no_such_case"]\n'
        'size = "none"\nreason = "matches nothing"\n'
    )
    results = tmp_path / "results"
    completed, record = run_pytest(pytestconfig, results, "--profile", str(profile))

    assert completed.returncode == 1, completed.stdout[-2000:]
    outcomes = {case["case_id"]: case for case in record["cases"]}
    planted = outcomes["test_init::test_constant[3]"]
    assert planted["outcome"] == "failed"
    assert "deviation no longer reproduces" in planted["message"]
    assert outcomes["test_init::test_constant[zero]"]["outcome"] == "passed"
    assert "stale profile entry" in completed.stdout
