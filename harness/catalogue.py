"""Load and validate the rule catalogue, ``spec/rules.toml``."""

from __future__ import annotations

import importlib
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from reference.tolerance import CLASSES

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE_PATH = ROOT / "spec" / "rules.toml"
AREAS = ("initialization", "losses", "optimizers")
RULE_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")


@dataclass(frozen=True)
class Rule:
    """One rule of the spec."""

    id: str
    area: str
    title: str
    statement: str
    parameters: dict
    reference: str
    tolerance: str

    def reference_object(self):
        """Import and return the reference entry point named by ``reference``."""
        module_name, _, attribute = self.reference.partition(":")
        return getattr(importlib.import_module(module_name), attribute)


class CatalogueError(ValueError):
    """The rule catalogue is malformed."""


def parse_rules(data, source):
    """Validate the parsed TOML ``data`` and return its rules by id."""
    rules = {}
    for index, entry in enumerate(data.get("rule", [])):
        where = f"{source}: rule #{index + 1}"
        missing = {"id", "area", "title", "statement", "parameters", "reference", "tolerance"} - entry.keys()
        if missing:
            raise CatalogueError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
        rule = Rule(**{key: entry[key] for key in Rule.__dataclass_fields__})
        if not RULE_ID.match(rule.id):
            raise CatalogueError(f"{where}: invalid id {rule.id!r}: expected upper-case words joined by '-'")
        if rule.id in rules:
            raise CatalogueError(f"{where}: duplicate id {rule.id!r}")
        if rule.area not in AREAS:
            raise CatalogueError(f"{where} ({rule.id}): invalid area {rule.area!r}: expected one of {AREAS}")
        if rule.tolerance not in CLASSES:
            raise CatalogueError(
                f"{where} ({rule.id}): invalid tolerance {rule.tolerance!r}: expected one of {CLASSES}"
            )
        rules[rule.id] = rule
    if not rules:
        raise CatalogueError(f"{source}: no [[rule]] tables found")
    return rules


@lru_cache(maxsize=1)
def load_rules(path=CATALOGUE_PATH):
    """Return the catalogue's rules by id."""
    with open(path, "rb") as handle:
        return parse_rules(tomllib.load(handle), path)
