"""Framework profiles: ``spec/profiles/<framework>.toml``.

A profile records, for one framework,

- ``[mapping.RULE-ID]``: how the native API is configured to get the
  canonical semantics of a rule, and what its native default does;
- ``[native.COMPONENT]``: the framework's native behaviour written as the
  reference's named choices, one table per component (``sgd``, ``adam``,
  ``l1_loss``, ``l2_loss``, ``dense_init``, ``conv_init``, ``trainer``),
  used by the native-default tests;
- ``[[deviation]]``: known differences from the spec. Each has a rule id
  (or ``rules``, a list of ids sharing one cause),
  a framework version range (PEP 440 specifiers), optional device, dtype,
  question (canonical or native) and case filters, a kind (``value`` when
  the numbers differ, ``error`` when the framework raises, with ``error``
  the text of the exception as ``"TypeName: message"``), the measured size
  and a reason. A matching test becomes a strict xfail.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from harness.catalogue import ROOT, load_rules
from reference import init

PROFILE_DIR = ROOT / "spec" / "profiles"
QUESTIONS = ("canonical", "native")
NATIVE_COMPONENTS = ("sgd", "adam", "l1_loss", "l2_loss", "dense_init", "conv_init", "trainer")
INITIALIZERS = ("Uniform", "Normal", "Constant", "Xavier", "MSRAPrelu")
# "value": the framework returns numbers that differ (a ConformanceFailure);
# "error": the framework raises where the spec returns a value.
DEVIATION_KINDS = ("value", "error")


class ProfileError(ValueError):
    """A profile is malformed or names a rule that does not exist."""


@dataclass(frozen=True)
class Deviation:
    """One known difference between a framework and the spec."""

    rule: str
    versions: SpecifierSet
    size: str
    reason: str
    devices: tuple = ()
    dtypes: tuple = ()
    questions: tuple = ()
    cases: tuple = ("*",)
    kind: str = "value"
    error: str = ""
    index: int = 0

    def applies_to_run(self, version, device, dtype):
        """Return whether this deviation covers a run of this version, device and dtype."""
        device_kind = device.split(":")[0]
        return (
            Version(version) in self.versions
            and (not self.devices or device_kind in self.devices)
            and (not self.dtypes or dtype in self.dtypes)
        )

    def matches(self, rule_ids, case_id, question, version, device, dtype):
        """Return whether this deviation applies to one test case."""
        return (
            self.rule in rule_ids
            and self.applies_to_run(version, device, dtype)
            and (not self.questions or question in self.questions)
            and any(case_pattern(pattern).fullmatch(case_id) for pattern in self.cases)
        )

    def describe(self):
        """Return a one-line description for xfail reasons and reports."""
        return f"known deviation {self.rule} ({self.versions or 'all versions'}): {self.reason} Measured: {self.size}"


@dataclass
class Profile:
    """A parsed framework profile."""

    framework: str
    path: Path
    mapping: dict = field(default_factory=dict)
    native: dict = field(default_factory=dict)
    deviations: list = field(default_factory=list)

    def native_choices(self, component):
        """Return the reference arguments that describe the native ``component``."""
        if component not in self.native:
            raise ProfileError(f"{self.path}: missing [native.{component}] table")
        return dict(self.native[component])

    def deviations_for(self, rule_ids, case_id, question, version, device, dtype):
        """Return the deviations that apply to one test case."""
        return [d for d in self.deviations if d.matches(rule_ids, case_id, question, version, device, dtype)]


def case_pattern(pattern):
    """Compile a case pattern: ``*`` matches any text, everything else is literal.

    Brackets stay literal, unlike in ``fnmatch``, because case ids contain
    pytest's ``[parameter-ids]``.
    """
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def make_initializer(table, where="profile"):
    """Return ``(initializer, fans_of)`` from a profile table.

    The table names a ``reference.init`` class in ``initializer`` and its
    arguments. ``fans_of = "weight"`` computes the law from the layer's
    weight shape, for a bias whose bound depends on the weight's fans.
    """
    arguments = dict(table)
    name = arguments.pop("initializer", None)
    fans_of = arguments.pop("fans_of", "self")
    if name not in INITIALIZERS:
        raise ProfileError(f"{where}: invalid initializer {name!r}: expected one of {', '.join(INITIALIZERS)}")
    if fans_of not in ("self", "weight"):
        raise ProfileError(f"{where}: invalid fans_of {fans_of!r}: expected 'self' or 'weight'")
    return getattr(init, name)(**arguments), fans_of


def _as_tuple(value, name, where, accepted=None):
    values = (value,) if isinstance(value, str) else tuple(value)
    if accepted is not None:
        for item in values:
            if item not in accepted:
                raise ProfileError(f"{where}: invalid {name} {item!r}: expected one of {', '.join(accepted)}")
    return values


def parse_profile(data, path, rules=None):
    """Validate the parsed TOML ``data`` of the profile at ``path``."""
    rules = load_rules() if rules is None else rules
    framework = data.get("framework")
    if not framework:
        raise ProfileError(f"{path}: missing 'framework'")

    for rule_id in data.get("mapping", {}):
        if rule_id not in rules:
            raise ProfileError(f"{path}: [mapping.{rule_id}] names a rule that does not exist")

    for component, table in data.get("native", {}).items():
        if component not in NATIVE_COMPONENTS:
            raise ProfileError(f"{path}: invalid [native.{component}]: expected one of {', '.join(NATIVE_COMPONENTS)}")
        if component.endswith("_init"):
            for name in ("weight", "bias"):
                make_initializer(table.get(name, {}), f"{path}: [native.{component}].{name}")

    deviations = []
    for index, entry in enumerate(data.get("deviation", [])):
        where = f"{path}: deviation #{index + 1}"
        # "rules" lists several rules that one cause affects; each becomes its own deviation.
        entry = dict(entry)
        if "rules" in entry and "rule" not in entry:
            entry["rule"] = entry.pop("rules")
        missing = {"rule", "versions", "size", "reason"} - entry.keys()
        if missing:
            raise ProfileError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
        rule_ids = [entry["rule"]] if isinstance(entry["rule"], str) else list(entry["rule"])
        for rule_id in rule_ids:
            if rule_id not in rules:
                raise ProfileError(f"{where}: rule {rule_id!r} does not exist in spec/rules.toml")
        if entry.get("kind") == "error" and not entry.get("error"):
            raise ProfileError(f"{where}: kind 'error' needs 'error', text that the raised exception contains")
        try:
            versions = SpecifierSet(entry["versions"])
        except InvalidSpecifier as error:
            raise ProfileError(f"{where}: invalid versions {entry['versions']!r}: {error}") from None
        deviations.extend(
            Deviation(
                rule=rule_id,
                versions=versions,
                size=entry["size"],
                reason=entry["reason"],
                devices=_as_tuple(entry.get("devices", ()), "device", where, ("cpu", "gpu")),
                dtypes=_as_tuple(entry.get("dtypes", ()), "dtype", where, ("float32", "float64")),
                questions=_as_tuple(entry.get("questions", ()), "question", where, QUESTIONS),
                cases=_as_tuple(entry.get("cases", ("*",)), "case", where),
                kind=_as_tuple(entry.get("kind", "value"), "kind", where, DEVIATION_KINDS)[0],
                error=entry.get("error", ""),
                index=index,
            )
            for rule_id in rule_ids
        )

    return Profile(framework, Path(path), data.get("mapping", {}), data.get("native", {}), deviations)


def load_profile(framework, directory=PROFILE_DIR):
    """Load ``spec/profiles/<framework>.toml``."""
    path = Path(directory) / f"{framework}.toml"
    if not path.exists():
        raise ProfileError(f"profile not found: {path}")
    with open(path, "rb") as handle:
        try:
            data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ProfileError(f"{path}: invalid TOML: {error}") from None
    return parse_profile(data, path)


def all_profiles(directory=PROFILE_DIR):
    """Load every profile in ``directory``, by framework name."""
    return {path.stem: load_profile(path.stem, directory) for path in sorted(Path(directory).glob("*.toml"))}
