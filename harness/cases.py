"""Helpers that conformance tests share: inputs in the run's dtype and the
reference objects for each question."""

from __future__ import annotations

import numpy as np

from reference import losses, optim

QUESTIONS = ("canonical", "native")


def quantize(array, dtype):
    """Return ``array`` rounded to ``dtype`` and back to float64.

    The reference then computes from exactly the values the framework receives.
    """
    return np.asarray(array, dtype=dtype).astype(np.float64)


def differing_choices(choices, canonical):
    """Return the entries of ``choices`` whose value differs from ``canonical``."""
    return {key: value for key, value in choices.items() if canonical.get(key, value) != value}


def reference_optimizer(name, question, profile, check=None, **hyperparameters):
    """Return the reference optimizer for one question.

    Canonical: the spec's choices (the reference defaults). Native: the
    profile's ``[native.<name>]`` choices, overridden by the hyperparameters
    the test passes explicitly. ``check`` records the native choices that
    differ from the spec.
    """
    if question != "native":
        return optim.make_optimizer(name, **hyperparameters)
    choices = profile.native_choices(name)
    canonical = {
        key: value for key, value in vars(optim.make_optimizer(name, **hyperparameters)).items() if key != "given"
    }
    if check is not None:
        check.note_native_choices(
            name, differing_choices({k: v for k, v in choices.items() if k not in hyperparameters}, canonical)
        )
    return optim.make_optimizer(name, **{**choices, **hyperparameters})


# The canonical values of the loss choices the reference takes.
CANONICAL_LOSS_CHOICES = {"half": True, "reduction": "per_sample"}


def reference_loss(name, question, profile, check=None):
    """Return ``(loss, grad, choices)`` of reference loss ``name`` for one question."""
    loss, grad = losses.LOSSES[name]
    if question != "native":
        return loss, grad, {}
    choices = profile.native_choices(f"{name}_loss")
    if check is not None:
        check.note_native_choices(f"{name}_loss", differing_choices(choices, CANONICAL_LOSS_CHOICES))
    return loss, grad, choices


def adapter_mode(question):
    """Return the adapter mode for ``question``."""
    return "native" if question == "native" else "canonical"
