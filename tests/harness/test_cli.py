"""Command-line errors of the conformance run, checked in a subprocess."""

import importlib.util
import os
import subprocess
import sys

import pytest

from adapters import ADAPTERS
from harness.catalogue import ROOT

pytestmark = pytest.mark.harness

PACKAGES = {"mxnet": "mxnet", "torch": "torch", "tensorflow": "tensorflow"}


def run_pytest(*arguments):
    environment = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=environment)


def test_conformance_without_framework_is_usage_error():
    completed = run_pytest("tests/conformance", "--collect-only", "-q")
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert "tests/conformance needs --framework NAME, one of: mxnet, tensorflow, torch" in completed.stderr


def test_unknown_framework_lists_valid_names():
    completed = run_pytest("tests/conformance", "--framework", "jax")
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'jax'" in completed.stderr
    for name in ADAPTERS:
        assert name in completed.stderr


def test_invalid_device_names_accepted_forms():
    completed = run_pytest("tests/reference/test_init.py", "--device", "tpu")
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert "invalid --device 'tpu': expected cpu, gpu or gpu:N" in completed.stderr


def test_framework_that_fails_to_import_ends_run():
    missing = [name for name, package in PACKAGES.items() if importlib.util.find_spec(package) is None]
    if not missing:
        pytest.skip("every framework is importable in this environment, so none can fail to import")
    completed = run_pytest("tests/conformance", "--framework", missing[0])
    assert completed.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"framework '{missing[0]}' failed to import" in completed.stderr
    assert "not counted as passed" in completed.stderr
