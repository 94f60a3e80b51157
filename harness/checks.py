"""Comparisons inside a conformance test, with the facts a failure needs.

A test gets one ``Checker`` per case (the ``check`` fixture). Every
comparison is recorded, pass or fail, so the results record can show the
largest error of every case and how much room its tolerance leaves. A failed
comparison raises ``ConformanceFailure`` whose message names the rule, the
case, the seed, the largest error and where it is, and writes a repro under
``results/repro/``.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np

from harness.catalogue import ROOT
from reference.stats import check_law
from reference.tolerance import compare, machine_epsilon, rtol_for


class ConformanceFailure(AssertionError):
    """A framework value that differs from the reference beyond tolerance."""


def case_seed(case_id):
    """Return the seed of a case: CRC-32 of its id, stable across runs and machines."""
    return zlib.crc32(case_id.encode("utf-8"))


def _ratio(value, limit):
    # A statistic over its limit; a limit of 0 allows only 0.
    if limit:
        return value / limit
    return 0.0 if value == 0 else float("inf")


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


class Checker:
    """Compare a framework's values with the reference for one test case."""

    def __init__(self, *, rule_ids, case_id, nodeid, dtype, repro_dir, rerun_command):
        self.rule_ids = tuple(rule_ids)
        self.case_id = case_id
        self.nodeid = nodeid
        self.dtype = dtype
        self.seed = case_seed(case_id)
        self.repro_dir = Path(repro_dir)
        self.rerun_command = rerun_command
        self.comparisons = []
        self.inputs = {}
        self.canonical_differences = []
        self.native_choices = {}
        self.write_repros = True

    def rng(self):
        """Return a NumPy generator seeded by the case id."""
        return np.random.default_rng(self.seed)

    def record_inputs(self, **arrays):
        """Keep the case's inputs for the repro written on failure."""
        for name, value in arrays.items():
            self.inputs[name] = np.asarray(value)

    def close(self, what, actual, expected, tolerance, *, n=1, steps=1, scale=None):
        """Check ``actual`` against ``expected`` within a tolerance class."""
        rtol = rtol_for(tolerance, self.dtype, n=n, steps=steps)
        expected = np.asarray(expected, dtype=np.float64)
        actual = np.asarray(actual, dtype=np.float64)
        if actual.shape != expected.shape:
            self._fail(what, f"shape {actual.shape} differs from the expected shape {expected.shape}", actual, expected)
        result = compare(actual, expected, rtol=rtol, dtype=self.dtype, scale=scale)
        self.comparisons.append({"what": what, "tolerance": tolerance, **result.as_record()})
        if not result.passed:
            detail = (
                f"max abs error {result.max_abs_error:.6g} at index {result.worst_index} "
                f"(actual {result.actual_at_worst:.9g}, expected {result.expected_at_worst:.9g}); "
                f"max rel error {result.max_rel_error:.3g}, {result.max_ulp_error:.3g} ulp; "
                f"allowed {rtol:.3g} x scale {result.scale:.6g} ({tolerance}, {self.dtype})"
            )
            self._fail(what, detail, actual, expected)
        return result

    def law(self, what, samples, law):
        """Check that ``samples`` follow the reference ``law`` (reference.stats)."""
        result = check_law(samples, law, dtype_eps=machine_epsilon(self.dtype))
        headroom = max(_ratio(value, limit) for value, limit in result.statistics.values())
        self.comparisons.append(
            {
                "what": what,
                "tolerance": "statistical",
                "alpha": result.alpha,
                "headroom": headroom,
                "statistics": result.summary(),
            }
        )
        if not result.passed:
            detail = f"samples do not follow {law}: failed {', '.join(result.failures)}; {result.summary()}"
            self._fail(what, detail, np.asarray(samples), None)
        return result

    def equal(self, what, actual, expected):
        """Check exact equality of two values of any kind (shapes, flags, counts)."""
        self.comparisons.append(
            {"what": what, "tolerance": "exact", "headroom": 0.0 if actual == expected else float("inf")}
        )
        if actual != expected:
            self._fail(what, f"got {actual!r}, expected {expected!r}", None, None)

    # NOTE: Native questions. A native case must match the reference configured
    # with the profile's native choices (a failed comparison fails the case).
    # It also measures, without failing, how far the native result is from the
    # canonical semantics. When that difference exceeds the tolerance, the
    # case is recorded as a deviation whose size is the measured difference
    # and whose reason lists the native choices that differ from the spec.

    def note_native_choices(self, component, differing):
        """Record the native choices of ``component`` that differ from the spec's."""
        if differing:
            self.native_choices.setdefault(component, {}).update(differing)

    def versus_canonical(self, what, actual, canonical, tolerance, *, n=1, steps=1, scale=None):
        """Measure how far a native result is from the canonical expectation, without raising."""
        actual = np.asarray(actual, dtype=np.float64)
        canonical = np.asarray(canonical, dtype=np.float64)
        if actual.shape != canonical.shape:
            # Different shapes (a scalar mean against per-sample values, say):
            # the means of both still show how far the numbers are apart.
            native_mean, canonical_mean = float(actual.mean()), float(canonical.mean())
            ratio = native_mean / canonical_mean if canonical_mean else float("inf")
            self.canonical_differences.append(
                {
                    "what": what,
                    "exceeds_tolerance": True,
                    "shape": f"{actual.shape} instead of {canonical.shape}; mean {native_mean:.4g} instead of "
                    f"{canonical_mean:.4g} (ratio {ratio:.4g})",
                }
            )
            return
        rtol = rtol_for(tolerance, self.dtype, n=n, steps=steps)
        result = compare(actual, canonical, rtol=rtol, dtype=self.dtype, scale=scale)
        self.canonical_differences.append({"what": what, "exceeds_tolerance": not result.passed, **result.as_record()})

    def law_versus_canonical(self, what, native_law, canonical_law):
        """Record how a native law differs from the canonical one, without raising."""
        if native_law == canonical_law:
            return
        ratio = native_law.std / canonical_law.std if canonical_law.std else float("inf")
        self.canonical_differences.append(
            {
                "what": what,
                "exceeds_tolerance": True,
                "law": f"{native_law.kind} std {native_law.std:.4g} on [{native_law.low:.4g}, {native_law.high:.4g}] "
                f"instead of {canonical_law.kind} std {canonical_law.std:.4g} "
                f"on [{canonical_law.low:.4g}, {canonical_law.high:.4g}]",
                "std_ratio": ratio,
            }
        )

    def native_deviation(self):
        """Return the deviation entry of a native case that differs from the spec, or None."""
        exceeding = [entry for entry in self.canonical_differences if entry["exceeds_tolerance"]]
        if not exceeding:
            return None
        worst = max(exceeding, key=lambda entry: entry.get("max_abs_error", float("inf")))
        if "shape" in worst:
            size = f"{worst['what']}: shape {worst['shape']}"
        elif "law" in worst:
            size = f"{worst['what']}: {worst['law']} (std ratio {worst['std_ratio']:.4g})"
        else:
            size = (
                f"{worst['what']}: max abs difference {worst['max_abs_error']:.3g}, "
                f"max rel {worst['max_rel_error']:.3g} from the canonical result"
            )
        size = f"{size} (case {self.case_id})"
        choices = "; ".join(
            f"{component}: " + ", ".join(f"{key}={value!r}" for key, value in differing.items())
            for component, differing in self.native_choices.items()
        )
        reason = "the native default behaves as the profile's native choices say, which differ from the spec"
        return {
            "rule": self.rule_ids[0],
            "size": size,
            "reason": f"{reason} ({choices or 'see the profile'})",
            "max_abs_difference": worst.get("max_abs_error"),
        }

    def summary(self):
        """Return the largest errors over every comparison of the case."""

        def largest(key):
            values = [c[key] for c in self.comparisons if key in c]
            return max(values) if values else None

        return {
            "max_abs_error": largest("max_abs_error"),
            "max_rel_error": largest("max_rel_error"),
            "max_ulp_error": largest("max_ulp_error"),
            "headroom": largest("headroom"),
        }

    def _fail(self, what, detail, actual, expected):
        message = f"{', '.join(self.rule_ids)} case {self.case_id} (seed {self.seed}): {what}: {detail}"
        if self.write_repros:
            message += f"\nrepro: {self._write_repro(what, actual, expected)}"
        raise ConformanceFailure(message)

    def _write_repro(self, what, actual, expected):
        folder = self.repro_dir / _safe_name(self.case_id)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = dict(self.inputs)
        if actual is not None:
            arrays["actual"] = actual
        if expected is not None:
            arrays["expected"] = expected
        np.savez(folder / "inputs.npz", **arrays)
        script = folder / "repro.py"
        script.write_text(
            f'"""Rerun one conformance case: {self.case_id}\n\n'
            f"Rules {', '.join(self.rule_ids)}; failed check: {what}.\n"
            f"inputs.npz beside this file holds the case's inputs (seed {self.seed})\n"
            'and the actual and expected values of the failed check.\n"""\n\n'
            "import subprocess\nimport sys\n\n"
            f"sys.exit(subprocess.call({self.rerun_command!r}, cwd={str(ROOT)!r}))\n"
        )
        return folder
