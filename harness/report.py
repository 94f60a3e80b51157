"""Merge results records into the conformance report.

    python -m harness.report [--results results] [--out report]

reads ``results/<framework>-*.json`` for every framework that has an adapter
and writes, each file whole or not at all:

- ``report/conformance.json``: the merged matrix, rule by framework run;
- ``report/conformance.md``: the matrix for a terminal or a review;
- ``report/index.html``: the same matrix to browse, one file, no network;
- ``report/porting.md``: per rule, how each framework gets the canonical
  semantics, what its native default does instead, and by how much.

A framework without a results record is shown as not run in every cell. A
file that is not valid JSON or does not match the record schema stops the
merge with an error naming the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from adapters import ADAPTERS
from harness.catalogue import ROOT, load_rules
from harness.profiles import all_profiles
from harness.report_html import render_html
from harness.results import OUTCOMES, SCHEMA_VERSION, clean_json, write_atomic

# Outcome of a cell with several cases: the first of these that occurs.
PRIORITY = ("failed", "deviation", "passed", "unsupported", "not_run")
MARKS = {"passed": "pass", "failed": "FAIL", "deviation": "dev", "unsupported": "unsup", "not_run": "n/r"}
RUN_FIELDS = ("framework", "version", "device", "dtype")
CASE_FIELDS = ("nodeid", "rule_ids", "outcome")
NO_RECORD = "no results record"


class RecordError(ValueError):
    """A results file that is not a valid results record."""


# 1. Reading records ---------------------------------------------------------------


def _number(value):
    # Records store inf and NaN as strings, because JSON has neither.
    if isinstance(value, str):
        return float(value)
    return value


def load_record(path):
    """Read and validate one results record; raise RecordError naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(
            f"{path}: not a readable JSON results record ({error}); rerun that framework's tox environment"
        ) from None

    if not isinstance(document, dict) or document.get("schema") != SCHEMA_VERSION:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise RecordError(f"{path}: not a trainspec results record (schema {found!r}, expected {SCHEMA_VERSION})")
    run, cases = document.get("run"), document.get("cases")
    if not isinstance(run, dict) or any(field not in run for field in RUN_FIELDS):
        raise RecordError(f"{path}: 'run' must be an object with {', '.join(RUN_FIELDS)}")
    if not isinstance(cases, list):
        raise RecordError(f"{path}: 'cases' must be a list")
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or any(field not in case for field in CASE_FIELDS):
            raise RecordError(f"{path}: case #{index + 1} must be an object with {', '.join(CASE_FIELDS)}")
        if case["outcome"] not in OUTCOMES:
            raise RecordError(f"{path}: case #{index + 1} has invalid outcome {case['outcome']!r}")
    return document


def find_records(results_dir, frameworks):
    """Return the paths of the results records of ``frameworks`` in ``results_dir``."""
    paths = []
    for framework in frameworks:
        paths.extend(sorted(Path(results_dir).glob(f"{framework}-*.json")))
    return paths


# 2. The matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One column of the matrix: a framework run, or a framework with no record."""

    framework: str
    version: str
    device: str
    dtype: str
    complete: bool
    source: str

    @property
    def key(self):
        if self.source == NO_RECORD:
            return f"{self.framework} ({NO_RECORD})"
        return f"{self.framework} {self.version} {self.device} {self.dtype}"


def _largest(cases, field):
    values = [_number(case[field]) for case in cases if case.get(field) is not None]
    return max(values) if values else None


def summarize(cases):
    """Return the summary of one cell: outcome, counts, largest errors, deviations."""
    counts = {outcome: sum(case["outcome"] == outcome for case in cases) for outcome in OUTCOMES}
    outcome = next((name for name in PRIORITY if counts[name]), "not_run")
    # One entry per deviation reason: the size of its largest measured case
    # (the profile's stated size where nothing was measured) and the case count.
    deviations = {}
    for case in cases:
        if "deviation" not in case:
            continue
        deviation = case["deviation"]
        # A native-choices deviation is sized by its difference from the spec,
        # a profile deviation by the case's largest error.
        size_field = deviation.get("max_abs_difference", case.get("max_abs_error"))
        measured = _number(size_field) if size_field is not None else -1.0
        known = deviations.get(deviation["reason"])
        if known is None or measured > known["measured_max_abs_error"]:
            deviations[deviation["reason"]] = {
                "size": deviation["size"],
                "reason": deviation["reason"],
                "versions": deviation.get("versions", ""),
                "source": deviation.get("source", "profile"),
                "measured_max_abs_error": measured,
                "cases": known["cases"] if known else 0,
            }
        deviations[deviation["reason"]]["cases"] += 1
    unsupported = sorted({case.get("message", "") for case in cases if case["outcome"] == "unsupported"})
    failures = [case["nodeid"] for case in cases if case["outcome"] == "failed"]
    law_headrooms = [
        _number(comparison["headroom"])
        for case in cases
        for comparison in case.get("comparisons", [])
        if comparison.get("tolerance") == "statistical"
    ]
    return {
        "outcome": outcome,
        "counts": counts,
        "law_headroom": max(law_headrooms) if law_headrooms else None,
        "max_abs_error": _largest(cases, "max_abs_error"),
        "max_rel_error": _largest(cases, "max_rel_error"),
        "max_ulp_error": _largest(cases, "max_ulp_error"),
        "headroom": _largest([c for c in cases if c["outcome"] == "passed"], "headroom"),
        "deviations": list(deviations.values()),
        "unsupported_reasons": unsupported,
        "failed_cases": failures,
    }


def build_matrix(records, frameworks, rules):
    """Return the merged matrix: runs, and per rule one cell per run and question."""
    runs = []
    cases_by_run = []
    for record in records:
        run = record["run"]
        runs.append(
            Run(
                run["framework"],
                run["version"],
                run["device"],
                run["dtype"],
                bool(run.get("complete", True)),
                record["path"],
            )
        )
        cases_by_run.append(record["cases"])

    # A framework without any record is one column of not_run cells.
    for framework in frameworks:
        if not any(run.framework == framework for run in runs):
            runs.append(Run(framework, "-", "-", "-", False, NO_RECORD))
            cases_by_run.append([])

    matrix = {}
    for rule_id in rules:
        cells = {}
        for run, cases in zip(runs, cases_by_run):
            # A case that checks several rules and is a deviation of one of
            # them carries no outcome for the others, so it counts only for that one.
            selected = [
                case
                for case in cases
                if rule_id in case["rule_ids"]
                and (case["outcome"] != "deviation" or case.get("deviation", {}).get("rule", rule_id) == rule_id)
            ]
            cell = {"all": summarize(selected)}
            for question in ("canonical", "native"):
                subset = [case for case in selected if case.get("question", "canonical") == question]
                if subset:
                    cell[question] = summarize(subset)
            cells[run.key] = cell
        matrix[rule_id] = cells
    return runs, matrix


def totals(runs, matrix, records):
    """Return per-run case counts by outcome (for the closing summary)."""
    result = {}
    for run in runs:
        record = next((r for r in records if r["path"] == run.source), None)
        counts = dict.fromkeys(OUTCOMES, 0)
        if record is None:
            counts["not_run"] = len(matrix)
        else:
            for case in record["cases"]:
                counts[case["outcome"]] += 1
        result[run.key] = counts
    return result


# 3. Writing ------------------------------------------------------------------------------


def _format_error(summary):
    # Value comparisons report their largest absolute error; law checks
    # (random initializers) a headroom, shown as "h" and its value.
    parts = []
    if summary["max_abs_error"] is not None:
        parts.append(f"{summary['max_abs_error']:.1e}")
    if summary.get("law_headroom") is not None:
        parts.append(f"h {summary['law_headroom']:.2f}")
    return ", ".join(parts) or "-"


def _mark(summary):
    return MARKS[summary["outcome"]]


def render_markdown(runs, matrix, rules):
    """Return conformance.md: the matrix, then every deviation with its size and reason."""
    lines = ["# Conformance matrix", ""]
    lines.append(
        "Each cell: outcome of the canonical question / the native question, then the largest absolute error "
        "over the rule's cases and, for random initializers, the largest headroom (h: the largest law "
        "statistic over its limit; above 1 fails). pass: matches the reference; dev: known deviation (see "
        "below); unsup: the native API cannot express it; FAIL: differs or raised; n/r: not run."
    )
    lines.append("")
    for run in runs:
        note = "" if run.complete or run.source == NO_RECORD else " (partial run: part of the suite was selected)"
        lines.append(f"- `{run.key}`: {run.source}{note}")
    lines.append("")
    lines.append("| rule | " + " | ".join(run.key for run in runs) + " |")
    lines.append("| --- | " + " | ".join("---" for _ in runs) + " |")
    for rule_id, cells in matrix.items():
        row = [f"`{rule_id}`"]
        for run in runs:
            cell = cells[run.key]
            marks = _mark(cell.get("canonical", cell["all"]))
            if "native" in cell:
                marks += f" / {_mark(cell['native'])}"
            row.append(f"{marks} {_format_error(cell['all'])}")
        lines.append("| " + " | ".join(row) + " |")

    lines += ["", "## Deviations", ""]
    found = False
    for rule_id, cells in matrix.items():
        for run in runs:
            for deviation in cells[run.key]["all"]["deviations"]:
                found = True
                count = f"{deviation['cases']} case{'s' if deviation['cases'] != 1 else ''}"
                lines.append(
                    f"- **{rule_id}**, `{run.key}` ({deviation['versions']}; {count}, largest shown): "
                    f"{deviation['size']}."
                )
                lines.append(f"  {deviation['reason']}")
    if not found:
        lines.append("None.")

    lines += ["", "## Unsupported", ""]
    found = False
    for rule_id, cells in matrix.items():
        for run in runs:
            for reason in cells[run.key]["all"]["unsupported_reasons"]:
                found = True
                lines.append(f"- **{rule_id}**, `{run.key}`: {reason}")
    if not found:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def render_porting(rules, profiles, runs, matrix):
    """Return porting.md, generated from the profiles and the measured records."""
    frameworks = sorted(profiles)
    lines = [
        "# Porting guide",
        "",
        "Generated from `spec/profiles/*.toml` and the results records; do not edit by hand.",
        "For each rule: the spec's statement, then per framework how to get the canonical semantics",
        "in the native API, what the native default does instead, and the measured size of any difference.",
    ]
    for area in ("initialization", "losses", "optimizers"):
        lines += ["", f"## {area.capitalize()}"]
        for rule in (r for r in rules.values() if r.area == area):
            lines += ["", f"### {rule.id}: {rule.title}", "", rule.statement, ""]
            for framework in frameworks:
                profile = profiles[framework]
                mapping = profile.mapping.get(rule.id, {})
                deviations = [d for d in profile.deviations if d.rule == rule.id]
                measured = [
                    matrix[rule.id][run.key]["all"] for run in runs if run.framework == framework and run.version != "-"
                ]
                lines.append(f"- **{framework}**")
                lines.append(
                    f"  - canonical: {mapping.get('canonical', 'the native API as the adapter configures it')}"
                )
                if "native_default" in mapping:
                    lines.append(f"  - native default: {mapping['native_default']}")
                for deviation in deviations:
                    scope = [", ".join(deviation.questions) or "canonical and native"]
                    if deviation.dtypes:
                        scope.append(f"{', '.join(deviation.dtypes)} only")
                    if deviation.devices:
                        scope.append(f"{', '.join(deviation.devices)} only")
                    scope.append(str(deviation.versions) or "all versions")
                    lines.append(f"  - differs ({'; '.join(scope)}): {deviation.size}. {deviation.reason}")
                for run in runs:
                    if run.framework != framework or run.source == NO_RECORD:
                        continue
                    cell = matrix[rule.id][run.key]
                    for question in ("canonical", "native"):
                        if question not in cell:
                            continue
                        summary = cell[question]
                        native_differences = [d for d in summary["deviations"] if d.get("source") == "native choices"]
                        if native_differences:
                            # The size of a native difference is measured against the spec, case by case.
                            for deviation in native_differences:
                                lines.append(
                                    f"  - measured, {question} ({run.key}): differs from the spec by "
                                    f"{deviation['size']} (largest of {deviation['cases']} case(s))"
                                )
                        else:
                            lines.append(
                                f"  - measured, {question} ({run.key}): {summary['outcome']}, "
                                f"largest error against the expected values {_format_error(summary)}"
                            )
                    if cell["all"]["unsupported_reasons"]:
                        lines.append(f"  - not expressible: {'; '.join(cell['all']['unsupported_reasons'])}")
                if not measured:
                    lines.append("  - no results record: not run")
    return "\n".join(lines) + "\n"


def merge(results_dir, out_dir, frameworks=tuple(ADAPTERS)):
    """Merge the records in ``results_dir`` and write the four report files to ``out_dir``."""
    rules = load_rules()
    profiles = all_profiles()
    records = []
    for path in find_records(results_dir, frameworks):
        record = load_record(path)
        record["path"] = str(path)
        records.append(record)

    runs, matrix = build_matrix(records, frameworks, rules)
    document = {
        "schema": 1,
        "runs": [run.__dict__ | {"key": run.key} for run in runs],
        "rules": {rule_id: rule.__dict__ for rule_id, rule in rules.items()},
        "matrix": matrix,
        "profiles": {
            name: {
                "mapping": profile.mapping,
                "native": profile.native,
                "deviations": [
                    {"rule": d.rule, "versions": str(d.versions), "size": d.size, "reason": d.reason}
                    for d in profile.deviations
                ],
            }
            for name, profile in profiles.items()
        },
        "totals": totals(runs, matrix, records),
    }

    # Render everything first, so that an error leaves no output half-written.
    outputs = {
        "conformance.json": json.dumps(clean_json(document), indent=1, default=str, allow_nan=False) + "\n",
        "conformance.md": render_markdown(runs, matrix, rules),
        "index.html": render_html(document),
        "porting.md": render_porting(rules, profiles, runs, matrix),
    }
    out_dir = Path(out_dir)
    for name, text in outputs.items():
        write_atomic(out_dir / name, text)
    return document, [out_dir / name for name in outputs]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Merge trainspec results records into report/.")
    parser.add_argument(
        "--results", default=str(ROOT / "results"), help="folder of results records (default: results/)"
    )
    parser.add_argument("--out", default=str(ROOT / "report"), help="output folder (default: report/)")
    arguments = parser.parse_args(argv)
    try:
        document, paths = merge(arguments.results, arguments.out)
    except RecordError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print("trainspec conformance summary (cases per framework run)")
    for run in document["runs"]:
        counts = document["totals"][run["key"]]
        if run["source"] == NO_RECORD:
            print(f"  {run['key']}: not run, every rule ({counts['not_run']}) is not_run")
            continue
        order = ("passed", "deviation", "unsupported", "failed", "not_run")
        partial = "" if run["complete"] else " (partial run: rerun without -k or node ids for every case)"
        print(f"  {run['key']}: " + ", ".join(f"{counts[name]} {name}" for name in order) + partial)
    print("report files:")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
