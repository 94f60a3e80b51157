"""Self-tests of the report merge: valid, missing, truncated and foreign records."""

import json

import pytest

from harness.catalogue import load_rules
from harness.report import RecordError, load_record, main, merge
from harness.results import write_record

pytestmark = pytest.mark.harness

RUN = {"framework": "mxnet", "version": "1.9.1", "device": "cpu", "dtype": "float32", "numerics": {}, "complete": True}


def case(nodeid, rules, outcome, question="canonical", **extra):
    return {"nodeid": nodeid, "case_id": nodeid, "rule_ids": rules, "outcome": outcome, "question": question, **extra}


def sample_cases():
    return [
        case("a", ["LOSS-L2-NORMALIZATION"], "passed", max_abs_error=1e-8, headroom=0.01),
        case(
            "b",
            ["LOSS-L2-NORMALIZATION"],
            "deviation",
            "native",
            max_abs_error=0.5,
            deviation={"rule": "LOSS-L2-NORMALIZATION", "versions": ">=1", "size": "factor 2", "reason": "no 1/2"},
        ),
        case("c", ["INIT-TRUNCATED-NORMAL"], "unsupported", message="no truncated normal"),
        # A failed law check has an infinite headroom, stored as "inf".
        case(
            "e",
            ["INIT-FANS"],
            "failed",
            headroom=float("inf"),
            comparisons=[{"what": "weight", "tolerance": "statistical", "headroom": float("inf")}],
        ),
        case("d", ["ADAM-EPSILON"], "failed", max_abs_error=0.1),
    ]


def write_sample(results):
    write_record(results / "mxnet-1.9.1-cpu-float32.json", RUN, sample_cases())


def test_merge_builds_matrix(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    document, paths = merge(results, out, frameworks=("mxnet", "torch"))

    assert sorted(path.name for path in paths) == ["conformance.json", "conformance.md", "index.html", "porting.md"]
    matrix = document["matrix"]
    assert set(matrix) == set(load_rules())
    mxnet = "mxnet 1.9.1 cpu float32"
    assert matrix["LOSS-L2-NORMALIZATION"][mxnet]["canonical"]["outcome"] == "passed"
    assert matrix["LOSS-L2-NORMALIZATION"][mxnet]["native"]["outcome"] == "deviation"
    assert matrix["LOSS-L2-NORMALIZATION"][mxnet]["all"]["deviations"][0]["size"] == "factor 2"
    assert matrix["INIT-TRUNCATED-NORMAL"][mxnet]["all"]["outcome"] == "unsupported"
    assert matrix["ADAM-EPSILON"][mxnet]["all"]["outcome"] == "failed"
    # A rule with no case in the record is not run, never passed.
    assert matrix["SGD-UPDATE"][mxnet]["all"]["outcome"] == "not_run"


def test_missing_framework_is_not_run_everywhere(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    document, _ = merge(results, out, frameworks=("mxnet", "torch"))
    missing = "torch (no results record)"
    assert {cells[missing]["all"]["outcome"] for cells in document["matrix"].values()} == {"not_run"}
    markdown = (out / "conformance.md").read_text()
    assert "torch (no results record)" in markdown
    assert "FAIL" in markdown


def test_report_json_is_strict(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    merge(results, out, frameworks=("mxnet",))

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    document = json.loads((out / "conformance.json").read_text(), parse_constant=reject)
    assert document["matrix"]["INIT-FANS"]["mxnet 1.9.1 cpu float32"]["all"]["law_headroom"] == "inf"


def test_truncated_record_stops_merge_naming_file(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    path = results / "mxnet-1.9.1-cpu-float32.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(RecordError, match="mxnet-1.9.1-cpu-float32.json: not a readable JSON results record"):
        merge(results, out, frameworks=("mxnet",))
    assert not out.exists()


def test_foreign_record_stops_merge_naming_file(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    results.mkdir()
    # A pytest-benchmark file under a results-record name.
    (results / "torch-bench.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    with pytest.raises(RecordError, match=r"torch-bench.json: not a trainspec results record \(schema None"):
        merge(results, out, frameworks=("torch",))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"schema": 1, "run": {"framework": "x"}, "cases": []}, "'run' must be an object with framework"),
        ({"schema": 1, "run": RUN, "cases": {}}, "'cases' must be a list"),
        ({"schema": 1, "run": RUN, "cases": [{"nodeid": "a"}]}, "case #1 must be an object with"),
        ({"schema": 1, "run": RUN, "cases": [case("a", [], "skipped")]}, "invalid outcome 'skipped'"),
    ],
)
def test_schema_violations(tmp_path, document, message):
    path = tmp_path / "mxnet-x.json"
    path.write_text(json.dumps(document))
    with pytest.raises(RecordError, match=message):
        load_record(path)


def test_existing_report_kept_when_merge_fails(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    merge(results, out, frameworks=("mxnet",))
    before = (out / "conformance.md").read_text()
    (results / "mxnet-2.0-cpu-float32.json").write_text("{")
    with pytest.raises(RecordError):
        merge(results, out, frameworks=("mxnet",))
    assert (out / "conformance.md").read_text() == before


def test_main_summary_and_bad_record_exit(tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    assert main(["--results", str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mxnet 1.9.1 cpu float32: 1 passed, 1 deviation, 1 unsupported, 2 failed, 0 not_run" in printed
    assert "torch (no results record): not run" in printed
    assert str(out / "index.html") in printed

    (results / "mxnet-1.9.1-cpu-float32.json").write_text("[]")
    assert main(["--results", str(results), "--out", str(out)]) == 2
    assert "mxnet-1.9.1-cpu-float32.json: not a trainspec results record" in capsys.readouterr().err


def test_porting_guide_lists_profile_mapping(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    write_sample(results)
    merge(results, out, frameworks=("mxnet",))
    porting = (out / "porting.md").read_text()
    assert "### LOSS-BATCH-AXIS" in porting
    assert "NumPy mode ignores batch_axis" in porting
    expected = (
        "measured, native (mxnet 1.9.1 cpu float32): deviation, largest error against the expected values 5.0e-01"
    )
    assert expected in porting
