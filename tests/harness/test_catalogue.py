"""Self-tests of the rule catalogue: every rule has tests, every test names
existing rules, every profile names existing rules."""

import ast
from pathlib import Path

import pytest

from harness.catalogue import ROOT, CatalogueError, load_rules, parse_rules
from harness.profiles import all_profiles

pytestmark = pytest.mark.harness


def rule_marks_in(folder):
    """Return {rule id: [test files]} for every pytest.mark.rule(...) call under ``folder``."""
    found = {}
    for path in sorted(Path(folder).rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "rule"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "mark"
            ):
                for argument in node.args:
                    found.setdefault(argument.value, []).append(path.relative_to(ROOT).as_posix())
    return found


@pytest.mark.parametrize("folder", ["tests/reference", "tests/conformance"])
def test_every_rule_has_a_test(folder):
    marked = rule_marks_in(ROOT / folder)
    missing = sorted(set(load_rules()) - set(marked))
    assert not missing, f"rules without a test in {folder}: {', '.join(missing)}"


@pytest.mark.parametrize("folder", ["tests/reference", "tests/conformance"])
def test_every_rule_mark_exists(folder):
    unknown = {rule: files for rule, files in rule_marks_in(ROOT / folder).items() if rule not in load_rules()}
    assert not unknown, f"tests name rules that are not in spec/rules.toml: {unknown}"


def test_reference_entry_points_import():
    for rule in load_rules().values():
        assert callable(rule.reference_object()), rule.id


def test_profiles_parse_and_name_existing_rules():
    # Loading validates every rule id named in mapping and deviation tables.
    profiles = all_profiles()
    assert "mxnet" in profiles
    for name, profile in profiles.items():
        assert profile.framework == name


# A valid catalogue entry that the tests below break one field at a time.
ENTRY = {
    "id": "LOSS-X",
    "area": "losses",
    "title": "t",
    "statement": "s",
    "parameters": {},
    "reference": "reference.losses:l1_loss",
    "tolerance": "exact",
}


def test_catalogue_rejects_unknown_tolerance():
    entry = {**ENTRY, "tolerance": "loose"}
    with pytest.raises(CatalogueError, match="invalid tolerance 'loose'"):
        parse_rules({"rule": [entry]}, "test")


def test_catalogue_rejects_duplicate_and_bad_ids():
    entry = ENTRY
    with pytest.raises(CatalogueError, match="duplicate id 'LOSS-X'"):
        parse_rules({"rule": [entry, entry]}, "test")
    with pytest.raises(CatalogueError, match="invalid id 'loss_x'"):
        parse_rules({"rule": [{**entry, "id": "loss_x"}]}, "test")
    with pytest.raises(CatalogueError, match="missing field"):
        parse_rules({"rule": [{"id": "LOSS-X"}]}, "test")
