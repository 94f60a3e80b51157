"""Errors that the spec defines, raised by the reference and by adapters.

Adapters translate a framework's native exception into one of these classes,
so a conformance test can check the spec's error without knowing which
framework raised it.
"""


class LabelShapeError(ValueError):
    """A loss label whose number of elements differs from the prediction's."""


class StaleGradientError(RuntimeError):
    """A Trainer step on a parameter whose gradient no backward pass has
    written since the previous step."""


def check_choice(name, value, accepted):
    """Raise ValueError unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"invalid {name} {value!r}: expected one of {', '.join(map(repr, accepted))}")


def check_non_negative(name, value):
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"invalid {name} {value!r}: expected a finite number >= 0")


def check_positive(name, value):
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"invalid {name} {value!r}: expected a finite number > 0")
