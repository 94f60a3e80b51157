"""Mutation self-test: conformance cases run against deliberately wrong
reference variants must fail.

Each mutation plants one semantic error in the reference and runs a
conformance case that passes against the correct reference. The case must
raise ConformanceFailure, which shows that its tolerance is tight enough to
catch that change. Run it with a framework that passes the affected rules
canonically (MXNet does).
"""

import dataclasses
import functools
import math

import pytest

from reference import init, losses, optim
from tests.conformance import test_init, test_losses, test_optim

pytestmark = pytest.mark.harness


def half_dropped(function):
    return functools.partial(function, half=False)


def wrong_uniform_law(self, shape, layout="OIHW"):
    # The bound taken from fan_out, 1 / sqrt(fan_out), instead of the scale.
    return init._uniform_law(1.0 / math.sqrt(init.fans(shape, layout)[1]))


def rescaled_twice(step):
    @functools.wraps(step)
    def wrapper(self, batch_size, ignore_stale_grad=False):
        return step(self, batch_size * batch_size, ignore_stale_grad)

    return wrapper


def expected_adam_with(**choices):
    # Only the expected side changes: the adapter still gets Gluon's choices.
    original = test_optim.reference_optimizer

    def make(name, question, profile, check=None, **hyperparameters):
        return dataclasses.replace(original(name, question, profile, check, **hyperparameters), **choices)

    return make


MUTATIONS = {
    # L2 without the 1/2.
    "l2_without_half": (
        lambda mp: (
            mp.setattr(losses, "l2_loss", half_dropped(losses.l2_loss)),
            mp.setitem(losses.LOSSES, "l2", (half_dropped(losses.l2_loss), half_dropped(losses.l2_loss_grad))),
        ),
        lambda adapter, check, profile: test_losses.test_l2_normalization(
            adapter, check, profile, "matrix", "canonical"
        ),
    ),
    # Adam's epsilon on the other side of the bias correction.
    "adam_epsilon_after_correction": (
        lambda mp: mp.setattr(
            test_optim, "reference_optimizer", expected_adam_with(epsilon_placement="after_correction")
        ),
        lambda adapter, check, profile: test_optim.test_adam_epsilon_placement(adapter, check, profile, "canonical"),
    ),
    # Weight decay added after clipping instead of before (Adam clips the sum).
    "adam_wd_after_clip": (
        lambda mp: mp.setattr(test_optim, "reference_optimizer", expected_adam_with(clip_order="clip_then_wd")),
        lambda adapter, check, profile: test_optim.test_adam_clip_order(adapter, check, profile, "canonical"),
    ),
    # Gradients rescaled by 1 / batch_size twice.
    "rescaled_twice": (
        lambda mp: mp.setattr(optim.Trainer, "step", rescaled_twice(optim.Trainer.step)),
        lambda adapter, check, profile: test_optim.test_sgd_momentum(adapter, check, profile, "constant", "canonical"),
    ),
    # The Uniform bound computed from fan_out instead of the given scale.
    "uniform_bound_from_fan_out": (
        lambda mp: mp.setattr(init.Uniform, "law", wrong_uniform_law),
        lambda adapter, check, profile: test_init.test_uniform(adapter, check, 0.07),
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_planted_error_is_caught(adapter, check, profile, monkeypatch, tmp_path, mutation):
    plant, run_case = MUTATIONS[mutation]
    if check.dtype != "float32":
        pytest.skip("the mutation self-test runs in float32 runs, where MXNet passes every mutated rule")
    # The expected failure's repro goes to a temporary folder, not results/.
    check.repro_dir = tmp_path

    # The same case passes against the correct reference.
    run_case(adapter, check, profile)

    # And fails once the error is planted.
    plant(monkeypatch)
    with pytest.raises(AssertionError, match="case"):
        run_case(adapter, check, profile)
