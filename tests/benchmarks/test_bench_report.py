"""Self-tests of the benchmark report merge (harness/bench_report.py)."""

import json
import subprocess
import sys

import pytest

from harness import bench_report
from harness.catalogue import ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COPY_BYTES = 2 * 256 * 2**20


def entry(component, implementation, median, *, iqr=0.0, bytes_min=None, first_call=0.5, kind="loss"):
    """Return one benchmark entry as pytest-benchmark writes it, with the fields the merge reads."""
    return {
        "name": f"test_x[{component}-{implementation}]",
        "stats": {"median": median, "iqr": iqr, "rounds": 10, "min": median, "max": median},
        "extra_info": {
            "component": component,
            "kind": kind,
            "title": f"title of {component}",
            "implementation": implementation,
            "bytes_min": bytes_min,
            "first_call_s": first_call,
        },
    }


def bandwidth_entry(kind, threads, median):
    return {
        "name": f"test_memory_bandwidth[{kind}-{threads}]",
        "stats": {"median": median, "iqr": 0.0, "rounds": 20},
        "extra_info": {"component": f"bandwidth-{kind}-{threads}", "kind": "bandwidth", "bytes_moved": COPY_BYTES},
    }


def overhead_entry(component, ratios, limit):
    """Return one paired adapter-native measurement; ``ratios`` are the first quartile, median and third."""
    return {
        "component": component,
        "framework": "mxnet",
        "pairs": 30,
        "adapter_median_s": 0.055,
        "native_median_s": 0.050,
        "ratio_q1": ratios[0],
        "ratio_median": ratios[1],
        "ratio_q3": ratios[2],
        "overhead_limit": limit,
    }


def results_document(framework, benchmarks, overhead=(), notes=None):
    return {
        "datetime": "2026-12-04T20:00:00",
        "benchmarks": benchmarks,
        "trainspec": {
            "framework": framework,
            "version": "1.0",
            "quick": False,
            "machine": {"cpu_model": "Test CPU", "usable_cores": 2, "memory_bytes": 24 * 2**30},
            "load_average_start": [0.1, 0.1, 0.1],
            "load_average_end": [0.2, 0.1, 0.1],
            "command": "python -m pytest tests/benchmarks/test_components.py",
            "tox_env": f"bench-{framework}",
            "not_run": [],
            "overhead": list(overhead),
            "overhead_notes": notes or {},
        },
    }


def write_results(folder, framework, document):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{framework}.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def mxnet_document():
    # Copies at 1 and 2 GB/s, so the bandwidth limit is 2 GB/s; the add kernels are missing.
    loss_bytes = 12 * 10**6
    return results_document(
        "mxnet",
        [
            bandwidth_entry("copy", "1", COPY_BYTES / 1e9),
            bandwidth_entry("copy", "all", COPY_BYTES / 2e9),
            entry("loss-l1-64x1024", "native", 0.024, iqr=0.001, bytes_min=loss_bytes),
            entry("loss-l1-64x1024", "adapter", 0.030, bytes_min=loss_bytes),
            entry("loss-l1-64x1024", "numpy", 0.012, bytes_min=loss_bytes),
            entry("trainer-mlp", "native", 0.020, kind="trainer"),
        ],
        overhead=[
            overhead_entry("loss-l1-64x1024", (1.20, 1.25, 1.30), None),
            overhead_entry("step-sgd_momentum-1e6-1t", (0.99, 1.01, 1.04), 0.05),
            overhead_entry("step-adam-1e6-1t", (1.02, 1.06, 1.20), 0.05),
            overhead_entry("step-adam-1e6-1000t", (1.05, 1.10, 1.15), 0.05),
        ],
        notes={"optimizer": "the adapter reads a flag per parameter"},
    )


def test_missing_framework_shown_not_run(tmp_path, mxnet_document):
    results, out = tmp_path / "results", tmp_path / "report"
    write_results(results, "mxnet", mxnet_document)

    runs, paths = bench_report.merge(results, out)

    assert runs["torch"] is None
    assert runs["tensorflow"] is None
    markdown = (out / "benchmarks.md").read_text()
    assert "| torch | not run: no `results/benchmarks/torch.json` |" in markdown
    assert "- torch: no results file; run `tox -e bench-torch`." in markdown
    # The loss row: mxnet measured, torch and tensorflow not run, numpy fastest.
    assert "| title of loss-l1-64x1024 | 12 MB | 6 ms | 24 ms (1 ms) x2 | not run | not run | 12 ms (0 ns) x1 |" in (
        markdown
    )
    assert (out / "benchmarks.png").read_bytes().startswith(PNG_SIGNATURE)
    assert paths == [out / "benchmarks.md", out / "benchmarks.png"]


def test_bandwidth_fraction_uses_run_limit(tmp_path, mxnet_document):
    results, out = tmp_path / "results", tmp_path / "report"
    write_results(results, "mxnet", mxnet_document)

    bench_report.merge(results, out)

    markdown = (out / "benchmarks.md").read_text()
    # 12 MB at 2 GB/s is 6 ms: 25% of the native 24 ms, 50% of NumPy's 12 ms.
    assert "| title of loss-l1-64x1024 | 25% | not run | not run | 50% |" in markdown
    assert "| mxnet | 1.0 | 2026-12-04 20:00:00 UTC | Test CPU | 2 | 24.0 GiB | 1.0 / 2.0 / - / - |" in markdown


def test_overhead_verdicts_state_reason(tmp_path, mxnet_document):
    results, out = tmp_path / "results", tmp_path / "report"
    write_results(results, "mxnet", mxnet_document)

    bench_report.merge(results, out)

    markdown = (out / "benchmarks.md").read_text()
    assert "| title of loss-l1-64x1024 | +25.0% (+20.0% to +30.0%, 30 pairs) | not run | not run |" in markdown
    assert "| mxnet | step-sgd_momentum-1e6-1t | 30 | 50 ms | 55 ms | +1.0% (-1.0% to +4.0%) | under 5% |" in markdown
    assert (
        "+6.0% (+2.0% to +20.0%) | not resolved, the median is over 5% but the IQR includes it: "
        "the adapter reads a flag per parameter |" in markdown
    )
    assert "+10.0% (+5.0% to +15.0%) | over 5%: the adapter reads a flag per parameter |" in markdown
    # The loss has no overhead limit, so it has no verdict row.
    assert "| mxnet | loss-l1-64x1024 |" not in markdown


def test_truncated_file_stops_merge(tmp_path, mxnet_document):
    results, out = tmp_path / "results", tmp_path / "report"
    write_results(results, "mxnet", mxnet_document)
    text = json.dumps(results_document("torch", mxnet_document["benchmarks"]))
    (results / "torch.json").write_text(text[: len(text) // 2], encoding="utf-8")

    with pytest.raises(bench_report.BenchReportError, match=r"torch\.json: not a readable JSON benchmark file"):
        bench_report.merge(results, out)
    assert not (out / "benchmarks.md").exists()
    assert not (out / "benchmarks.png").exists()


def test_truncated_file_keeps_previous_report(tmp_path, mxnet_document, capsys):
    results, out = tmp_path / "results", tmp_path / "report"
    out.mkdir()
    (out / "benchmarks.md").write_text("previous report\n", encoding="utf-8")
    (results).mkdir()
    (results / "mxnet.json").write_text('{"benchmarks": [', encoding="utf-8")

    status = bench_report.main(["--results", str(results), "--out", str(out)])

    assert status == 2
    assert "mxnet.json: not a readable JSON benchmark file" in capsys.readouterr().err
    assert (out / "benchmarks.md").read_text() == "previous report\n"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda document: document.pop("trainspec"), "missing the 'trainspec' run facts"),
        (lambda document: document["trainspec"].update(framework="torch"), "expected 'mxnet'"),
        (lambda document: document["benchmarks"][2]["stats"].pop("median"), "lacks a numeric median"),
        (lambda document: document["benchmarks"][2]["extra_info"].pop("component"), "lacks component"),
    ],
    ids=["no-run-facts", "wrong-framework", "no-median", "no-component"],
)
def test_invalid_file_names_field(tmp_path, mxnet_document, change, message):
    change(mxnet_document)
    results = tmp_path / "results"
    write_results(results, "mxnet", mxnet_document)

    with pytest.raises(bench_report.BenchReportError, match=message):
        bench_report.merge(results, tmp_path / "report")


def test_no_results_reports_every_framework_not_run(tmp_path):
    out = tmp_path / "report"

    runs, _ = bench_report.merge(tmp_path / "empty", out)

    assert all(run is None for run in runs.values())
    markdown = (out / "benchmarks.md").read_text()
    for framework in ("mxnet", "torch", "tensorflow"):
        assert f"| {framework} | not run: no `results/benchmarks/{framework}.json` |" in markdown


def test_real_benchmark_file_merges(tmp_path):
    # A short real run of the NumPy bodies: pytest-benchmark's own JSON and
    # the --bench-output file that the merge reads.
    results = tmp_path / "results"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/benchmarks/test_components.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "--bench-quick",
        "-k",
        "loss-l1-4x16-numpy or step-adam-1e3-1t-numpy or bandwidth",
        "--benchmark-json",
        str(tmp_path / "scratch.json"),
        "--bench-output",
        str(results / "numpy-only.json"),
    ]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # Without --framework the run has no framework; file it as MXNet's for the merge.
    document = json.loads((results / "numpy-only.json").read_text())
    assert document["trainspec"]["framework"] is None
    document["trainspec"]["framework"] = "mxnet"
    write_results(results, "mxnet", document)

    runs, _ = bench_report.merge(results, tmp_path / "report")

    assert set(runs["mxnet"].results) == {("loss-l1-4x16", "numpy"), ("step-adam-1e3-1t", "numpy")}
    assert set(runs["mxnet"].bandwidth) == {
        "bandwidth-copy-1",
        "bandwidth-copy-all",
        "bandwidth-add-1",
        "bandwidth-add-all",
    }
    markdown = (tmp_path / "report" / "benchmarks.md").read_text()
    assert "(quick self-test sizes)" in markdown
