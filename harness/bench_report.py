"""Merge the benchmark results into the benchmark report.

    python -m harness.bench_report [--results results/benchmarks] [--out report]

reads ``<results>/<framework>.json`` for every framework that has an
adapter (written by ``tox -e bench-<framework>``) and writes, each file
whole or not at all:

- ``report/benchmarks.md``: the machine and the command of each run, then
  per component the median time of each framework and of the NumPy
  baseline with its spread (IQR) and ratio to the fastest. Further tables
  give the fraction of the memory-bandwidth limit, the adapter overhead and
  the first-call times;
- ``report/benchmarks.png``: the median times as a bar chart.

A framework without a results file is shown as not run, with no time and no
bar. A file that is not valid JSON or lacks the fields below stops the merge
with an error naming the file, and nothing is written.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from adapters import ADAPTERS
from harness.bench import components
from harness.catalogue import ROOT
from harness.results import write_atomic

BASELINE = "numpy"
NOT_RUN = "not run"
BANDWIDTH_KERNELS = ("bandwidth-copy-1", "bandwidth-copy-all", "bandwidth-add-1", "bandwidth-add-all")


class BenchReportError(ValueError):
    """A benchmark results file that cannot be read or lacks required fields."""


@dataclass
class Result:
    """The steady-state statistics and first-call time of one benchmark, in seconds."""

    median: float
    iqr: float
    rounds: int
    first_call: float | None
    title: str
    kind: str
    bytes_min: int | None


@dataclass
class Run:
    """The contents of one framework's results file."""

    framework: str
    path: Path
    facts: dict
    date: str
    results: dict = field(default_factory=dict)
    bandwidth: dict = field(default_factory=dict)

    @property
    def bandwidth_limit(self):
        """The highest bandwidth of the run's kernels in bytes per second, or None."""
        return max(self.bandwidth.values()) if self.bandwidth else None


# 1. Reading -----------------------------------------------------------------------------


def _require(condition, path, message):
    if not condition:
        raise BenchReportError(f"{path}: {message}; rerun its tox environment (tox -m bench)")


def load_run(path, framework):
    """Read and check one results file; raise BenchReportError naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchReportError(
            f"{path}: not a readable JSON benchmark file ({error}); rerun tox -e bench-{framework}"
        ) from None

    _require(isinstance(document, dict), path, "the file must contain a JSON object")
    facts = document.get("trainspec")
    _require(isinstance(facts, dict), path, "missing the 'trainspec' run facts")
    _require(
        facts.get("framework") == framework,
        path,
        f"run facts name framework {facts.get('framework')!r}, expected {framework!r}",
    )
    benchmarks = document.get("benchmarks")
    _require(isinstance(benchmarks, list), path, "'benchmarks' must be a list")

    run = Run(framework, path, facts, str(document.get("datetime", "unknown date")))
    for index, entry in enumerate(benchmarks):
        where = f"benchmark #{index + 1}"
        _require(isinstance(entry, dict), path, f"{where} must be an object")
        stats, extra = entry.get("stats"), entry.get("extra_info")
        _require(isinstance(stats, dict) and isinstance(extra, dict), path, f"{where} lacks 'stats' or 'extra_info'")
        _require(
            all(isinstance(stats.get(key), (int, float)) for key in ("median", "iqr", "rounds")),
            path,
            f"{where} lacks a numeric median, iqr or rounds",
        )
        kind = extra.get("kind")
        if kind == "bandwidth":
            _require(isinstance(extra.get("bytes_moved"), int), path, f"{where} (bandwidth) lacks bytes_moved")
            run.bandwidth[extra["component"]] = extra["bytes_moved"] / stats["median"]
            continue
        _require(
            all(key in extra for key in ("component", "implementation", "title")),
            path,
            f"{where} lacks component, implementation or title in extra_info",
        )
        run.results[(extra["component"], extra["implementation"])] = Result(
            median=stats["median"],
            iqr=stats["iqr"],
            rounds=int(stats["rounds"]),
            first_call=extra.get("first_call_s"),
            title=extra["title"],
            kind=str(kind),
            bytes_min=extra.get("bytes_min"),
        )
    return run


def load_runs(results_dir, frameworks):
    """Return ``{framework: Run or None}``; None for a framework without a results file."""
    runs = {}
    for framework in frameworks:
        path = Path(results_dir) / f"{framework}.json"
        runs[framework] = load_run(path, framework) if path.exists() else None
    return runs


# 2. Tables ------------------------------------------------------------------------------


def format_time(seconds):
    """Return a time with three significant digits in s, ms, us or ns."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _format_ratio(ratio):
    return f"x{ratio:.2g}" if ratio < 10 else f"x{ratio:.0f}"


def _format_percent(fraction):
    return f"{fraction:+.1%}"


def _format_date(text):
    # pytest-benchmark writes an ISO 8601 time in UTC with microseconds.
    return text.split(".")[0].replace("T", " ") + " UTC" if "T" in text else text


def _format_bytes(count):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} B"


def component_order(runs):
    """Return ``[(component id, title, bytes_min)]``: the catalogue's order, then ids only found in files."""
    found = {}
    for run in runs.values():
        if run is None:
            continue
        for (component, _), result in run.results.items():
            found.setdefault(component, result)
    order = dict.fromkeys([c.id for c in components()] + [c.id for c in components(quick=True)])
    ids = [component for component in order if component in found]
    ids += [component for component in found if component not in ids]
    return [(component, found[component].title, found[component].bytes_min) for component in ids]


def baseline_result(runs, component):
    """Return the NumPy result with the lowest median over the runs, and the framework of its run."""
    best = None
    for framework, run in runs.items():
        result = run.results.get((component, BASELINE)) if run else None
        if result is not None and (best is None or result.median < best[0].median):
            best = (result, framework)
    return best


def steady_state_rows(runs, frameworks):
    """Return per component the native median of each framework and the NumPy baseline."""
    rows = []
    for component, title, bytes_min in component_order(runs):
        cells = {}
        for framework in frameworks:
            run = runs[framework]
            cells[framework] = run.results.get((component, "native")) if run else None
        baseline = baseline_result(runs, component)
        cells[BASELINE] = baseline[0] if baseline else None
        measured = [result.median for result in cells.values() if result is not None]
        fastest = min(measured) if measured else None
        rows.append(
            {
                "component": component,
                "title": title,
                "bytes_min": bytes_min,
                "cells": cells,
                "fastest": fastest,
                "baseline_run": baseline[1] if baseline else None,
            }
        )
    return rows


def _bandwidth_fraction(run, result):
    if run is None or result is None or not result.bytes_min or not run.bandwidth_limit:
        return None
    return result.bytes_min / run.bandwidth_limit / result.median


def render_markdown(runs, frameworks, notes):
    """Return benchmarks.md."""
    columns = [*frameworks, BASELINE]
    lines = ["# Benchmarks", ""]
    lines.append(
        "Generated by `tox -m bench` (`python -m harness.bench_report`) from `results/benchmarks/*.json`; "
        "do not edit by hand. Times are per call, steady state, after one warm-up round; every timed "
        "call ends when the device has finished its work. Benchmarks never fail on a time."
    )

    # Runs and machine.
    lines += ["", "## Runs and machine", ""]
    lines.append(
        "| framework | version | date | CPU | cores | memory | bandwidth in GB/s: copy 1 thread / copy all cores "
        "/ add 1 thread / add all cores | load average at start / end | command |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for framework in frameworks:
        run = runs[framework]
        if run is None:
            lines.append(f"| {framework} | {NOT_RUN}: no `results/benchmarks/{framework}.json` | | | | | | | |")
            continue
        facts = run.facts
        machine = facts.get("machine", {})
        memory = machine.get("memory_bytes")
        bandwidth = " / ".join(
            f"{run.bandwidth[key] / 1e9:.1f}" if key in run.bandwidth else "-" for key in BANDWIDTH_KERNELS
        )
        loads = [facts.get("load_average_start"), facts.get("load_average_end")]
        load = " / ".join(f"{value[0]:.2f}" if value else "-" for value in loads)
        command = f"tox -e {facts['tox_env']}" if facts.get("tox_env") else f"`{facts.get('command', '-')}`"
        version = facts.get("version", "-") + (" (quick self-test sizes)" if facts.get("quick") else "")
        lines.append(
            f"| {framework} | {version} | {_format_date(run.date)} | {machine.get('cpu_model', '-')} | "
            f"{machine.get('usable_cores', '-')} | {f'{memory / 2**30:.1f} GiB' if memory else '-'} | {bandwidth} | "
            f"{load} | {command} |"
        )
    lines += [
        "",
        "The bandwidth kernels run over 256 MiB float32 arrays: a copy counts 8 B per element (one read, one "
        "write), an in-place add 12 B (two reads, one write). The bandwidth limit of a run is its highest kernel. "
        "The NumPy baseline runs in every framework's run; its column shows the run with the lowest median. "
        "A load average near or above the core count means other processes competed for the cores.",
    ]

    # Steady state.
    rows = steady_state_rows(runs, frameworks)
    lines += ["", "## Steady-state time per call", ""]
    lines.append(
        "Median (IQR) of the native call, then the ratio to the fastest column. The floor is the time the "
        "bytes a bandwidth-bound call must move take at the highest bandwidth measured in any run."
    )
    lines.append("")
    limits = [run.bandwidth_limit for run in runs.values() if run is not None and run.bandwidth_limit]
    best_limit = max(limits) if limits else None
    lines.append("| component | bytes moved | floor | " + " | ".join(columns) + " |")
    lines.append("| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        cells = []
        for column in columns:
            result = row["cells"][column]
            if result is None:
                cells.append(NOT_RUN)
                continue
            ratio = result.median / row["fastest"]
            cells.append(f"{format_time(result.median)} ({format_time(result.iqr)}) {_format_ratio(ratio)}")
        moved = _format_bytes(row["bytes_min"]) if row["bytes_min"] else "compute-bound"
        floor = format_time(row["bytes_min"] / best_limit) if row["bytes_min"] and best_limit else "-"
        lines.append(f"| {row['title']} | {moved} | {floor} | " + " | ".join(cells) + " |")

    # Bandwidth fractions.
    lines += ["", "## Fraction of the bandwidth limit", ""]
    lines.append(
        "Minimum bytes over the run's bandwidth limit, divided by the median: 100% is the machine's limit. "
        "Values above 100% mean the working set fit in a cache. The initializers' floor ignores the work "
        "of generating random numbers, so their fractions are low by construction."
    )
    lines.append("")
    lines.append("| component | " + " | ".join(columns) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        if not row["bytes_min"]:
            continue
        cells = []
        for column in columns:
            run = runs.get(row["baseline_run"]) if column == BASELINE else runs[column]
            if row["cells"][column] is None:
                cells.append(NOT_RUN)
                continue
            fraction = _bandwidth_fraction(run, row["cells"][column])
            cells.append(f"{fraction:.0%}" if fraction is not None else "-")
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")

    lines += render_overhead(runs, frameworks, notes, rows)
    lines += render_first_calls(runs, frameworks, rows)
    lines += render_not_run(runs, frameworks)
    return "\n".join(lines) + "\n"


def _overhead_entries(run):
    return {entry["component"]: entry for entry in run.facts.get("overhead", [])} if run else {}


def _verdict(entry, note):
    limit = entry.get("overhead_limit")
    overhead, low = entry["ratio_median"] - 1, entry["ratio_q1"] - 1
    if overhead < limit:
        return f"under {limit:.0%}"
    if low >= limit:
        return f"over {limit:.0%}: {note}"
    return f"not resolved, the median is over {limit:.0%} but the IQR includes it: {note}"


def render_overhead(runs, frameworks, notes, rows):
    """Return the lines of the adapter-overhead sections."""
    lines = ["", "## Harness overhead", ""]
    lines.append(
        "The same component through the adapter interface the conformance tests use and as the native call, "
        "timed in alternating pairs, so that background load affects both alike. Each cell: the median over the "
        "pairs of adapter time over native time, minus 1, then the IQR and the number of pairs."
    )
    lines.append("")
    lines.append("| component | " + " | ".join(frameworks) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in frameworks) + " |")
    entries = {framework: _overhead_entries(runs[framework]) for framework in frameworks}
    for row in rows:
        cells = []
        for framework in frameworks:
            entry = entries[framework].get(row["component"])
            if entry is None:
                cells.append(NOT_RUN)
                continue
            spread = f"{_format_percent(entry['ratio_q1'] - 1)} to {_format_percent(entry['ratio_q3'] - 1)}"
            cells.append(f"{_format_percent(entry['ratio_median'] - 1)} ({spread}, {entry['pairs']} pairs)")
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")

    lines += ["", "### Components with an overhead limit", ""]
    lines.append(
        "The optimizer steps at 1e6 parameters must cost at most the limit more through the adapter. "
        "Where they cost more, the reason comes from the adapter's own notes."
    )
    lines.append("")
    lines.append("| framework | component | pairs | native median | adapter median | overhead (IQR) | verdict |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    found = False
    for framework in frameworks:
        if runs[framework] is None:
            lines.append(f"| {framework} | {NOT_RUN} | | | | | |")
            continue
        for entry in entries[framework].values():
            if entry.get("overhead_limit") is None:
                continue
            found = True
            note = notes.get(framework, {}).get("optimizer", "the adapter states no reason")
            spread = f"{_format_percent(entry['ratio_q1'] - 1)} to {_format_percent(entry['ratio_q3'] - 1)}"
            lines.append(
                f"| {framework} | {entry['component']} | {entry['pairs']} | {format_time(entry['native_median_s'])} "
                f"| {format_time(entry['adapter_median_s'])} | {_format_percent(entry['ratio_median'] - 1)} "
                f"({spread}) | {_verdict(entry, note)} |"
            )
    if not found:
        lines.append("| - | no paired measurement in any run | | | | | |")

    lines += ["", "Where the adapter costs more, as each adapter's native benchmark code states:", ""]
    for framework in frameworks:
        for kind, text in sorted(notes.get(framework, {}).items()):
            lines.append(f"- {framework}, {kind}: {text}.")
    return lines


def render_first_calls(runs, frameworks, rows):
    """Return the lines of the first-call section."""
    lines = ["", "## First call", ""]
    lines.append(
        "The first call of each benchmark, timed apart from the steady state: it includes operator creation, "
        "tracing or compilation and the allocation of optimizer state. The native call runs first in the "
        "process, so the adapter's first call may find operators already created. Cells: native first call "
        "/ adapter first call."
    )
    lines.append("")
    lines.append("| component | " + " | ".join(frameworks) + f" | {BASELINE} |")
    lines.append("| --- | " + " | ".join("---" for _ in frameworks) + " | --- |")
    for row in rows:
        cells = []
        for framework in frameworks:
            run = runs[framework]
            if run is None:
                cells.append(NOT_RUN)
                continue
            native = run.results.get((row["component"], "native"))
            adapter = run.results.get((row["component"], "adapter"))
            cells.append(
                " / ".join(format_time(result.first_call) if result else NOT_RUN for result in (native, adapter))
            )
        baseline = row["cells"][BASELINE]
        cells.append(format_time(baseline.first_call) if baseline else NOT_RUN)
        lines.append(f"| {row['title']} | " + " | ".join(cells) + " |")
    return lines


def render_not_run(runs, frameworks):
    """Return the lines listing frameworks and benchmarks that did not run."""
    lines = ["", "## Not run", ""]
    found = False
    for framework in frameworks:
        run = runs[framework]
        if run is None:
            found = True
            lines.append(f"- {framework}: no results file; run `tox -e bench-{framework}`.")
            continue
        for entry in run.facts.get("not_run", []):
            found = True
            lines.append(f"- {framework}: `{entry['nodeid']}` {entry['outcome']}: {entry['reason']}")
    if not found:
        lines.append("None.")
    return lines


# 3. Chart ----------------------------------------------------------------------------------


def render_chart(runs, frameworks):
    """Return benchmarks.png as bytes: horizontal bars of the native medians, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = steady_state_rows(runs, frameworks)
    columns = [*frameworks, BASELINE]
    height = 0.8 / len(columns)
    figure, axes = plt.subplots(figsize=(10, 1.0 + 0.45 * len(columns) * max(len(rows), 1) / 2))
    measured = False
    for position, column in enumerate(columns):
        label = column if column == BASELINE or runs[column] is not None else f"{column} ({NOT_RUN})"
        ys, widths = [], []
        for index, row in enumerate(rows):
            result = row["cells"][column]
            if result is not None:
                ys.append(index + position * height)
                widths.append(result.median * 1e3)
        axes.barh(ys, widths, height=height, label=label)
        measured = measured or bool(widths)
    axes.set_yticks([index + 0.4 - height / 2 for index in range(len(rows))])
    axes.set_yticklabels([row["component"] for row in rows], fontsize=7)
    axes.invert_yaxis()
    if measured:
        axes.set_xscale("log")
        axes.set_xlabel("median time per call (ms, log scale)")
    else:
        axes.text(0.5, 0.5, "no benchmark results: every framework not run", ha="center", transform=axes.transAxes)
    axes.set_title("trainspec benchmarks: native calls and the NumPy baseline")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


# 4. Merge -----------------------------------------------------------------------------------


def merge(results_dir, out_dir, frameworks=tuple(ADAPTERS)):
    """Read the results files and write benchmarks.md and benchmarks.png to ``out_dir``."""
    runs = load_runs(results_dir, frameworks)
    notes = {framework: run.facts.get("overhead_notes", {}) for framework, run in runs.items() if run is not None}

    # Render both files before writing either, so that an error leaves no output half-written.
    markdown = render_markdown(runs, list(frameworks), notes)
    chart = render_chart(runs, list(frameworks))
    out_dir = Path(out_dir)
    write_atomic(out_dir / "benchmarks.md", markdown)
    write_atomic(out_dir / "benchmarks.png", chart)
    return runs, [out_dir / "benchmarks.md", out_dir / "benchmarks.png"]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Merge trainspec benchmark results into report/benchmarks.md.")
    parser.add_argument(
        "--results",
        default=str(ROOT / "results" / "benchmarks"),
        help="folder of <framework>.json benchmark files (default: results/benchmarks/)",
    )
    parser.add_argument("--out", default=str(ROOT / "report"), help="output folder (default: report/)")
    arguments = parser.parse_args(argv)
    try:
        runs, paths = merge(arguments.results, arguments.out)
    except BenchReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print("trainspec benchmark runs")
    for framework, run in runs.items():
        if run is None:
            print(f"  {framework}: {NOT_RUN} (no {Path(arguments.results) / (framework + '.json')})")
        else:
            print(f"  {framework}: {len(run.results)} benchmarks from {run.path}")
    print("report files:")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
