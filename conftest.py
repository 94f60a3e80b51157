"""pytest configuration of trainspec: options, adapter, rules, outcomes, records.

Sections:
1. Options: --framework, --device, --dtype, --allow-missing-device, --results-dir.
2. Run setup: import the adapter (an import failure ends the run), load the
   profile, print the run facts in the header.
3. Collection: every conformance test names existing rules; known
   deviations become strict xfails; a missing device marks cases not run.
4. Fixtures: adapter, profile, check.
5. Outcomes: passed, failed, deviation, unsupported, not_run.
6. Session end: the results record, stale deviation entries, exit status.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from adapters import ADAPTERS, load_adapter
from adapters.base import FrameworkUnavailable, Unsupported
from harness.catalogue import ROOT, load_rules
from harness.checks import Checker, ConformanceFailure, case_seed
from harness.profiles import ProfileError, load_profile
from harness.results import results_filename, write_record

DEVICE_PATTERN = re.compile(r"^(cpu|gpu(:\d+)?)$")
CONFORMANCE_DIR = ROOT / "tests" / "conformance"
ADAPTER_KEY = pytest.StashKey()
PROFILE_KEY = pytest.StashKey()
RECORDS_KEY = pytest.StashKey()
DEVICE_MISSING_KEY = pytest.StashKey()
CHECKER_KEY = pytest.StashKey()
DEVIATION_KEY = pytest.StashKey()
OUTCOME_KEY = pytest.StashKey()
RESULTS_PATH_KEY = pytest.StashKey()
MATCHED_DEVIATIONS_KEY = pytest.StashKey()
DESELECTED_KEY = pytest.StashKey()


# 1. Options -----------------------------------------------------------------


def pytest_addoption(parser):
    group = parser.getgroup("trainspec")
    group.addoption(
        "--framework",
        choices=sorted(ADAPTERS),
        help="framework to run tests/conformance against (required there)",
    )
    group.addoption("--device", default="cpu", help="device: cpu, gpu or gpu:N (default: cpu)")
    group.addoption(
        "--dtype",
        default="float32",
        choices=("float32", "float64"),
        help="dtype of the framework's tensors (default: float32)",
    )
    group.addoption(
        "--allow-missing-device",
        action="store_true",
        help="exit 0 when the requested device is absent; the cases are still recorded as not_run",
    )
    group.addoption(
        "--profile",
        help="profile TOML to use instead of spec/profiles/<framework>.toml, for trying out a new profile",
    )
    group.addoption(
        "--results-dir",
        default=str(ROOT / "results"),
        help="folder for the results record and repros (default: results/)",
    )


# 2. Run setup ---------------------------------------------------------------


def pytest_configure(config):
    config.stash[RECORDS_KEY] = []
    config.stash[DEVICE_MISSING_KEY] = False
    framework = config.getoption("--framework")
    device = config.getoption("--device")
    if not DEVICE_PATTERN.match(device):
        raise pytest.UsageError(f"invalid --device {device!r}: expected cpu, gpu or gpu:N")
    if framework is None:
        return

    try:
        adapter = load_adapter(framework, device=device, dtype=config.getoption("--dtype"))
    except FrameworkUnavailable as error:
        raise pytest.UsageError(
            f"{error}. Install it (see tox.ini, environment {framework!r}); the run is not counted as passed."
        ) from error
    config.stash[ADAPTER_KEY] = adapter
    try:
        profile_path = config.getoption("--profile")
        if profile_path is None:
            config.stash[PROFILE_KEY] = load_profile(framework)
        elif not Path(profile_path).is_file():
            raise ProfileError(
                f"profile not found: {Path(profile_path).resolve()}; start from a copy of "
                f"spec/profiles/{framework}.toml"
            )
        else:
            config.stash[PROFILE_KEY] = load_profile(Path(profile_path).stem, Path(profile_path).resolve().parent)
    except ProfileError as error:
        raise pytest.UsageError(str(error)) from error
    config.stash[DEVICE_MISSING_KEY] = not adapter.device_available()


def pytest_report_header(config):
    adapter = config.stash.get(ADAPTER_KEY, None)
    if adapter is None:
        return "trainspec: no --framework given; reference and harness self-tests only"
    facts = adapter.run_facts()
    numerics = ", ".join(f"{key}={value}" for key, value in facts["numerics"].items())
    lines = [
        f"trainspec: framework {facts['framework']} {facts['version']}, "
        f"device {facts['device']}, dtype {facts['dtype']}"
    ]
    lines.append(f"trainspec numerics: {numerics}")
    lines.append(f"trainspec profile: {config.stash[PROFILE_KEY].path}")
    if config.stash[DEVICE_MISSING_KEY]:
        lines.append(f"trainspec: device {facts['device']} is not available: every case is recorded as not_run")
    return lines


# 3. Collection ---------------------------------------------------------------


def rule_ids_of(item):
    """Return the rule ids named by every ``rule`` mark of ``item``."""
    ids = []
    for mark in item.iter_markers("rule"):
        ids.extend(mark.args)
    return tuple(dict.fromkeys(ids))


def case_id_of(item):
    """Return the case id: module stem and test name with parameters."""
    return f"{Path(str(item.path)).stem}::{item.name}"


def question_of(item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("question", "canonical") if callspec else "canonical"


def _is_conformance(item):
    return Path(str(item.path)).is_relative_to(CONFORMANCE_DIR)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    rules = load_rules()
    adapter = config.stash.get(ADAPTER_KEY, None)

    # Every rule mark names a catalogue rule; every conformance test has one.
    for item in items:
        ids = rule_ids_of(item)
        unknown = [rule_id for rule_id in ids if rule_id not in rules]
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: rule mark names unknown rule(s) {', '.join(unknown)} (see spec/rules.toml)"
            )
        # "-k RULE-ID" selects a rule's cases.
        item.extra_keyword_matches.update(ids)
        if _is_conformance(item) and not ids and item.get_closest_marker("harness") is None:
            raise pytest.UsageError(
                f"{item.nodeid}: a conformance test must carry @pytest.mark.rule(...) or @pytest.mark.harness"
            )

    conformance = [item for item in items if _is_conformance(item)]
    if conformance and adapter is None:
        raise pytest.UsageError(f"tests/conformance needs --framework NAME, one of: {', '.join(sorted(ADAPTERS))}")
    if adapter is None:
        return

    profile = config.stash[PROFILE_KEY]
    facts = adapter.run_facts()
    # Deviations are checked for staleness only in runs that collect conformance cases.
    if conformance:
        config.stash[MATCHED_DEVIATIONS_KEY] = set()
    for item in conformance:
        # A missing device: nothing runs, every case is recorded as not_run.
        if config.stash[DEVICE_MISSING_KEY]:
            item.add_marker(pytest.mark.skip(reason=f"not_run: device {adapter.device} is not available"))
            continue

        # Known deviations of this framework version become strict xfails.
        matches = profile.deviations_for(
            rule_ids_of(item), case_id_of(item), question_of(item), facts["version"], facts["device"], facts["dtype"]
        )
        config.stash[MATCHED_DEVIATIONS_KEY].update(d.index for d in matches)
        if matches:
            deviation = matches[0]
            item.stash[DEVIATION_KEY] = deviation
            raises = ConformanceFailure if deviation.kind == "value" else None
            item.add_marker(pytest.mark.xfail(strict=True, raises=raises, reason=deviation.describe()))


# 4. Fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session")
def adapter(pytestconfig):
    """The adapter of the framework named by --framework."""
    return pytestconfig.stash[ADAPTER_KEY]


@pytest.fixture(scope="session")
def profile(pytestconfig):
    """The profile of the framework named by --framework."""
    return pytestconfig.stash[PROFILE_KEY]


@pytest.fixture
def check(request, pytestconfig):
    """A ``Checker`` for the current case: comparisons, seed and repro."""
    framework = pytestconfig.getoption("--framework")
    rerun = [
        sys.executable,
        "-m",
        "pytest",
        request.node.nodeid,
        "--framework",
        str(framework),
        "--device",
        pytestconfig.getoption("--device"),
        "--dtype",
        pytestconfig.getoption("--dtype"),
    ]
    checker = Checker(
        rule_ids=rule_ids_of(request.node),
        case_id=case_id_of(request.node),
        nodeid=request.node.nodeid,
        dtype=pytestconfig.getoption("--dtype"),
        # One folder per framework run, so runs of other dtypes or devices keep theirs.
        repro_dir=Path(pytestconfig.getoption("--results-dir"))
        / "repro"
        / f"{framework}-{pytestconfig.getoption('--device').replace(':', '')}-{pytestconfig.getoption('--dtype')}",
        rerun_command=rerun,
    )
    # A known deviation fails as expected: its inputs are in the profile's
    # measured size, and a repro is written only for unexpected failures.
    checker.write_repros = DEVIATION_KEY not in request.node.stash
    request.node.stash[CHECKER_KEY] = checker
    return checker


# 5. Outcomes ---------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()

    # Unsupported: the adapter cannot express the case. Shown as a skip
    # whose reason starts with "unsupported:", recorded as unsupported.
    if call.excinfo is not None and call.excinfo.errisinstance(Unsupported):
        report.outcome = "skipped"
        report.wasxfail = None
        del report.wasxfail
        report.longrepr = (str(item.path), item.location[1], f"unsupported: {call.excinfo.value}")
        item.stash[OUTCOME_KEY] = ("unsupported", str(call.excinfo.value))
        return

    # An "error" deviation covers only the exception its profile entry names;
    # any other exception is a failure, not the known deviation.
    deviation = item.stash.get(DEVIATION_KEY, None)
    if (
        deviation is not None
        and deviation.kind == "error"
        and call.when == "call"
        and call.excinfo is not None
        and deviation.error not in f"{call.excinfo.typename}: {call.excinfo.value}"
    ):
        report.outcome = "failed"
        if hasattr(report, "wasxfail"):
            del report.wasxfail
        report.sections.append(
            ("trainspec", f"the exception is not the known deviation, which expects {deviation.error!r}")
        )

    # A failure that is not a comparison (a framework exception, say)
    # gets the rule and case in front of its traceback.
    if (
        report.failed
        and call.when == "call"
        and rule_ids_of(item)
        and call.excinfo is not None
        and not call.excinfo.errisinstance(ConformanceFailure)
    ):
        case_id = case_id_of(item)
        header = f"{', '.join(rule_ids_of(item)) or 'no rule'} case {case_id} (seed {case_seed(case_id)}) raised:"
        report.sections.append(("trainspec", header))

    if call.when == "call" or (call.when == "setup" and report.outcome != "passed"):
        item.stash[OUTCOME_KEY] = _classify(report, item)


def _classify(report, item):
    # A strict xfail that passed: the framework no longer shows the deviation.
    if report.failed and str(report.longrepr).startswith("[XPASS(strict)]"):
        return ("failed", "deviation no longer reproduces; update the profile: " + str(report.longrepr))
    if hasattr(report, "wasxfail"):
        return (
            ("deviation", report.wasxfail)
            if report.skipped
            else ("failed", "deviation no longer reproduces: " + report.wasxfail)
        )
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return ("not_run", reason)
    if report.failed:
        message = str(report.longrepr).strip().splitlines()
        return ("failed", message[-1] if message else "failed")
    return ("passed", "")


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    config = item.config

    # Harness self-tests check no rule, so they have no place in the record.
    if ADAPTER_KEY not in config.stash or not _is_conformance(item) or not rule_ids_of(item):
        return

    outcome, message = item.stash.get(OUTCOME_KEY, ("not_run", "no outcome recorded"))
    checker = item.stash.get(CHECKER_KEY, None)
    deviation = item.stash.get(DEVIATION_KEY, None)
    entry = {
        "nodeid": item.nodeid,
        "case_id": case_id_of(item),
        "rule_ids": list(rule_ids_of(item)),
        "question": question_of(item),
        "outcome": outcome,
        "message": message,
        "seed": case_seed(case_id_of(item)),
    }
    if checker is not None:
        entry.update(checker.summary())
        entry["comparisons"] = checker.comparisons

    # A native case that matched its profile's native choices but differs
    # from the spec is a known deviation, sized by the measured difference.
    native_deviation = checker.native_deviation() if checker is not None else None
    if outcome == "passed" and native_deviation is not None:
        outcome = entry["outcome"] = "deviation"
        entry["message"] = f"native choices differ from the spec: {native_deviation['size']}"
        entry["deviation"] = {
            **native_deviation,
            "versions": f"=={adapter_version(config)}",
            "source": "native choices",
        }
        entry["canonical_differences"] = checker.canonical_differences
    elif deviation is not None:
        entry["deviation"] = {
            "rule": deviation.rule,
            "versions": str(deviation.versions),
            "size": deviation.size,
            "reason": deviation.reason,
        }

    config.stash[RECORDS_KEY].append(entry)


def adapter_version(config):
    return config.stash[ADAPTER_KEY].version


# 6. Session end ----------------------------------------------------------------------


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    adapter = config.stash.get(ADAPTER_KEY, None)
    records = config.stash[RECORDS_KEY]
    if adapter is None or not records:
        return

    # Cases deselected or never reached are not in the record, and "complete"
    # is false for a run that selected part of tests/conformance.
    facts = adapter.run_facts()
    path = Path(config.getoption("--results-dir")) / results_filename(
        facts["framework"], facts["version"], facts["device"], facts["dtype"]
    )
    run = {
        **facts,
        "python": sys.version.split()[0],
        "pytest_exit_status": int(exitstatus),
        "device_missing": config.stash[DEVICE_MISSING_KEY],
        "complete": _is_complete_run(config),
        "arguments": list(config.invocation_params.args),
    }
    write_record(path, run, records)
    config.stash[RESULTS_PATH_KEY] = path

    if config.stash[DEVICE_MISSING_KEY] and not config.getoption("--allow-missing-device"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_deselected(items):
    if items:
        items[0].config.stash[DESELECTED_KEY] = True


def _collects_all_conformance(config):
    # A path argument contains all of tests/conformance and no argument names single tests.
    if any("::" in arg for arg in config.args):
        return False
    return any(CONFORMANCE_DIR.is_relative_to(Path(arg).resolve()) for arg in config.args)


def _is_complete_run(config):
    # Complete: every conformance test collected and none deselected.
    return _collects_all_conformance(config) and not config.stash.get(DESELECTED_KEY, False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    adapter = config.stash.get(ADAPTER_KEY, None)
    records = config.stash[RECORDS_KEY]
    # Runs without conformance cases (benchmarks, harness self-tests) have nothing to summarize.
    if adapter is None or (not records and MATCHED_DEVIATIONS_KEY not in config.stash):
        return
    counts = {}
    for entry in records:
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    terminalreporter.section("trainspec")
    terminalreporter.write_line(
        "outcomes: "
        + ", ".join(
            f"{counts.get(name, 0)} {name}" for name in ("passed", "deviation", "unsupported", "failed", "not_run")
        )
    )
    path = config.stash.get(RESULTS_PATH_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"results record: {path}")

    # Stale deviation entries: they match no case of this framework version,
    # device and dtype, so the profile needs a look. Matching runs before
    # -k deselection, but only a run that collects all of tests/conformance
    # can tell.
    profile = config.stash[PROFILE_KEY]
    matched = config.stash.get(MATCHED_DEVIATIONS_KEY, None) if _collects_all_conformance(config) else None
    facts = adapter.run_facts()
    warned = set()
    for deviation in profile.deviations if matched is not None else ():
        applicable = deviation.applies_to_run(facts["version"], facts["device"], facts["dtype"])
        if deviation.index in matched or deviation.index in warned or not applicable:
            continue
        warned.add(deviation.index)
        if not config.stash[DEVICE_MISSING_KEY]:
            message = (
                f"stale profile entry: deviation #{deviation.index + 1} "
                f"({deviation.rule}, {deviation.versions or 'all versions'}) "
                "matches no collected test case"
            )
            terminalreporter.write_line(f"warning: {message}", yellow=True)
    if config.stash[DEVICE_MISSING_KEY]:
        hint = (
            ""
            if config.getoption("--allow-missing-device")
            else " (exit status 1; pass --allow-missing-device to exit 0)"
        )
        terminalreporter.write_line(f"device {adapter.device} is not available: every case is not_run{hint}", red=True)
