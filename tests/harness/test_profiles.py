"""Self-tests of profile parsing and deviation matching."""

import pytest

from harness.profiles import ProfileError, case_pattern, make_initializer, parse_profile
from reference import init

pytestmark = pytest.mark.harness

DEVIATION = {"rule": "ADAM-EPSILON", "versions": ">=2,<3", "size": "x29", "reason": "epsilon after the correction"}


def parse(**extra):
    return parse_profile({"framework": "demo", "deviation": [{**DEVIATION, **extra}]}, "demo.toml")


def test_deviation_matches_version_range():
    deviation = parse().deviations[0]
    assert deviation.matches(("ADAM-EPSILON",), "test_optim::x", "canonical", "2.13.0", "cpu", "float32")
    assert not deviation.matches(("ADAM-EPSILON",), "test_optim::x", "canonical", "3.0.0", "cpu", "float32")
    assert not deviation.matches(("ADAM-UPDATE",), "test_optim::x", "canonical", "2.13.0", "cpu", "float32")


def test_deviation_filters_device_dtype_question():
    deviation = parse(devices=["gpu"], dtypes=["float64"], questions=["native"]).deviations[0]
    assert deviation.matches(("ADAM-EPSILON",), "c", "native", "2.1", "gpu:1", "float64")
    assert not deviation.matches(("ADAM-EPSILON",), "c", "native", "2.1", "cpu", "float64")
    assert not deviation.matches(("ADAM-EPSILON",), "c", "native", "2.1", "gpu", "float32")
    assert not deviation.matches(("ADAM-EPSILON",), "c", "canonical", "2.1", "gpu", "float64")


def test_case_pattern_keeps_brackets_literal():
    assert case_pattern("test_optim::test_a[x-*]").fullmatch("test_optim::test_a[x-native]")
    assert not case_pattern("test_optim::test_a[x-*]").fullmatch("test_optim::test_a_x")
    assert not case_pattern("test_optim::test_a").fullmatch("test_optim::test_ab")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"rule": "NO-SUCH-RULE"}, "rule 'NO-SUCH-RULE' does not exist"),
        ({"versions": "about 2"}, "invalid versions 'about 2'"),
        ({"devices": ["tpu"]}, "invalid device 'tpu': expected one of cpu, gpu"),
        ({"questions": ["both"]}, "invalid question 'both'"),
        ({"kind": "crash"}, "invalid kind 'crash': expected one of value, error"),
        ({"kind": "error"}, "kind 'error' needs 'error'"),
    ],
)
def test_invalid_deviation(extra, message):
    with pytest.raises(ProfileError, match=message):
        parse(**extra)


def test_deviation_requires_size_and_reason():
    entry = dict(DEVIATION)
    del entry["size"]
    with pytest.raises(ProfileError, match="missing field.*size"):
        parse_profile({"framework": "demo", "deviation": [entry]}, "demo.toml")


def test_mapping_of_unknown_rule_rejected():
    with pytest.raises(ProfileError, match=r"\[mapping.NOPE\] names a rule that does not exist"):
        parse_profile({"framework": "demo", "mapping": {"NOPE": {}}}, "demo.toml")


def test_native_initializer_tables():
    initializer, fans_of = make_initializer(
        {"initializer": "Xavier", "factor_type": "in", "magnitude": 1.0, "fans_of": "weight"}
    )
    assert initializer == init.Xavier("uniform", "in", 1.0)
    assert fans_of == "weight"
    with pytest.raises(ProfileError, match="invalid initializer 'Kaiming'"):
        make_initializer({"initializer": "Kaiming"})


def test_rules_list_expands_to_one_deviation_per_rule():
    entry = {k: v for k, v in DEVIATION.items() if k != "rule"}
    profile = parse_profile(
        {"framework": "demo", "deviation": [{**entry, "rules": ["ADAM-EPSILON", "SGD-UPDATE"]}]}, "p"
    )
    assert [d.rule for d in profile.deviations] == ["ADAM-EPSILON", "SGD-UPDATE"]
    assert {d.index for d in profile.deviations} == {0}


def test_applies_to_run_ignores_case_filters():
    deviation = parse(dtypes=["float64"], cases=["test_x::*"]).deviations[0]
    assert deviation.applies_to_run("2.5", "cpu", "float64")
    assert not deviation.applies_to_run("2.5", "cpu", "float32")
