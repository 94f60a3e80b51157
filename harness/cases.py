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


def reference_optimizer(name, question, profile, **hyperparameters):
    """Return the reference optimizer for one question.

    Canonical: the spec's choices (the reference defaults). Native: the
    profile's ``[native.<name>]`` choices, overridden by the hyperparameters
    the test passes explicitly.
    """
    choices = profile.native_choices(name) if question == "native" else {}
    return optim.make_optimizer(name, **{**choices, **hyperparameters})


def reference_loss(name, question, profile):
    """Return ``(loss, grad, choices)`` of reference loss ``name`` for one question."""
    loss, grad = losses.LOSSES[name]
    choices = profile.native_choices(f"{name}_loss") if question == "native" else {}
    return loss, grad, choices


def adapter_mode(question):
    """Return the adapter mode that answers ``question``."""
    return "native" if question == "native" else "canonical"
