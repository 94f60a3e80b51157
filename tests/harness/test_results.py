"""Self-tests of results records and of the Checker's failure reports."""

import json
import math
import os

import numpy as np
import pytest

from harness.checks import Checker, ConformanceFailure, case_seed
from harness.results import results_filename, write_atomic, write_record
from reference import init

pytestmark = pytest.mark.harness


def make_checker(tmp_path, dtype="float32"):
    return Checker(
        rule_ids=("LOSS-L2-NORMALIZATION",),
        case_id="test_losses::test_l2[matrix]",
        nodeid="tests/conformance/test_losses.py::test_l2[matrix]",
        dtype=dtype,
        repro_dir=tmp_path / "repro",
        rerun_command=["python", "-m", "pytest", "x"],
    )


def test_results_filename():
    assert results_filename("torch", "2.13.0+cpu", "gpu:1", "float32") == "torch-2.13.0+cpu-gpu1-float32.json"


def test_write_record_roundtrip_with_infinity(tmp_path):
    path = tmp_path / "r.json"
    case = {"nodeid": "a", "outcome": "failed", "max_ulp_error": math.inf}
    write_record(path, {"framework": "demo"}, [case])
    document = json.loads(path.read_text())
    assert document["cases"][0]["max_ulp_error"] == "inf"
    assert document["schema"] == 1


def test_write_record_rejects_unknown_outcome(tmp_path):
    with pytest.raises(ValueError, match="invalid outcome 'skipped'"):
        write_record(tmp_path / "r.json", {}, [{"nodeid": "a", "outcome": "skipped"}])
    assert not (tmp_path / "r.json").exists()


def test_write_atomic_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")

    # Writing a non-string fails after the temporary file exists.
    with pytest.raises(TypeError):
        write_atomic(path, 12345)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.json"]


def test_seed_is_stable():
    # CRC-32 of the case id: the same on every machine and run.
    assert case_seed("test_losses::test_l2[matrix]") == case_seed("test_losses::test_l2[matrix]")
    assert case_seed("a") == 0xE8B7BE43


def test_checker_failure_message_and_repro(tmp_path):
    checker = make_checker(tmp_path)
    checker.record_inputs(pred=np.ones(3))
    with pytest.raises(ConformanceFailure) as failure:
        checker.close("loss", [1.0, 2.0, 3.5], [1.0, 2.0, 3.0], "reduction", n=3)
    message = str(failure.value)
    assert "LOSS-L2-NORMALIZATION case test_losses::test_l2[matrix]" in message
    assert f"seed {checker.seed}" in message
    assert "max abs error 0.5 at index (2,)" in message
    folder = tmp_path / "repro" / "test_losses_test_l2_matrix_"
    saved = np.load(folder / "inputs.npz")
    assert sorted(saved.files) == ["actual", "expected", "pred"]
    assert "subprocess.call" in (folder / "repro.py").read_text()


def test_checker_records_passing_errors(tmp_path):
    checker = make_checker(tmp_path)
    checker.close("loss", np.float32([1.0, 2.0]), [1.0, 2.0 + 1e-8], "elementwise")
    summary = checker.summary()
    assert 0 < summary["max_abs_error"] < 1e-7
    assert summary["headroom"] < 1


def test_checker_law_failure(tmp_path):
    checker = make_checker(tmp_path)
    samples = init.Uniform(0.08).sample((200, 200), seed=1)
    with pytest.raises(ConformanceFailure, match="samples do not follow"):
        checker.law("weight", samples, init.Uniform(0.07).law((200, 200)))


def test_checker_shape_mismatch_fails(tmp_path):
    with pytest.raises(ConformanceFailure, match=r"shape \(2,\) differs from the expected shape \(2, 1\)"):
        make_checker(tmp_path).close("loss", [1.0, 2.0], [[1.0], [2.0]], "exact")
