"""Framework-free machinery of the conformance suite: the rule catalogue,
profiles, case seeds, comparisons and results records."""
