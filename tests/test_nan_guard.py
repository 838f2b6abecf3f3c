"""The NaN guard of `probgen.fit`: every non-finite value of a step (loss, gradients, parameters after the update,
a validation error inside the model) is reported as `NonFiniteLossError` naming the step and the last good
checkpoint; the CLI turns it into exit 1 and one short line. Other exceptions still propagate unchanged."""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probgen as pg
from probgen import cli
from probgen.checkpoint import read_checkpoint
from probgen.training import NonFiniteLossError, fit


class Overflowing(nn.Module):
    """A Gaussian whose mean is ``p s - p s + p``: finite parameters, but ``s`` = 1e39 overflows float32 to inf
    and the mean becomes NaN, so the distribution's argument validation raises
    ValueError("... found invalid values: tensor([nan, nan])")."""

    family = "toy-overflow"

    def __init__(self, overflow_at_call: int):
        super().__init__()
        self.p = nn.Parameter(torch.ones(2))
        self.overflow_at_call = overflow_at_call
        self.calls = 0

    def config(self) -> dict:
        return {"overflow_at_call": self.overflow_at_call}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        scale = 1e38 if self.calls >= self.overflow_at_call else 1.0
        big = self.p * scale * 10.0  # inf in float32 once scale is 1e38
        loc = big - big + self.p
        return -dist.Normal(loc, 1.0, validate_args=None).log_prob(x).sum(-1).mean()


class Raises(nn.Module):
    """Raises a given exception from ``loss`` at a given call (finite parameters throughout)."""

    def __init__(self, error: Exception, at_call: int):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))
        self.error, self.at_call, self.calls = error, at_call, 0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls >= self.at_call:
            raise self.error
        return ((x - self.p) ** 2).sum(-1).mean()


def test_a_validation_error_from_an_overflow_is_a_nonfinite_loss_error(tmp_path):
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match=r"a value inside toy-overflow is NaN/inf at step 5 of 10: "
                                                 r"Overflowing.loss failed with ValueError: .*last good checkpoint "
                                                 r"\(step 4\) is kept") as info:
        fit(Overflowing(overflow_at_call=5), torch.randn(16, 2), steps=10, checkpoint=target, checkpoint_every=2,
            progress=False)
    error = info.value
    assert error.step == 5 and error.checkpoint_step == 4 and error.checkpoint_path == target
    assert isinstance(error.__cause__, ValueError)  # the model's own error is kept as the cause
    assert "tensor(" not in str(error) and "\n" not in str(error) and len(str(error)) < 600
    assert read_checkpoint(target)["training"]["step"] == 4


class ChecksWhenValidating(nn.Module):
    """Like a distribution with ``validate_args``: raises a message without values when validation is on and
    its mean is not finite, and returns the (NaN) loss when validation is off."""

    def __init__(self, nan_at_call: int):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))
        self.nan_at_call, self.calls = nan_at_call, 0

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loc = self.p * float("nan") if self.calls >= self.nan_at_call else self.p
        if torch.distributions.Distribution._validate_args and not torch.isfinite(loc).all():
            raise ValueError("loc is outside the support of the model")
        return ((x - loc) ** 2).sum(-1).mean()


def test_an_error_that_goes_away_without_validation_and_leaves_nan_is_recognised():
    with pytest.raises(NonFiniteLossError, match=r"a value inside ChecksWhenValidating is NaN/inf at step 2 of 4: "
                                                 r"ChecksWhenValidating.loss failed with ValueError: loc is outside"):
        fit(ChecksWhenValidating(nan_at_call=2), torch.randn(8, 2), steps=4, progress=False)
    assert torch.distributions.Distribution._validate_args  # validation is back on after the check


def test_an_error_reporting_nan_values_is_recognised_by_its_message():
    # validation off does not help here (the model raises it itself): the message says NaN invalid values
    error = ValueError("Expected parameter scale (Tensor of shape (2,)) to satisfy the constraint GreaterThan(0), "
                       "but found invalid values:\ntensor([nan, 1.])")
    with pytest.raises(NonFiniteLossError, match=r"at step 3 of 5: Raises.loss failed with ValueError: Expected "
                                                 r"parameter scale .*no checkpoint was requested"):
        fit(Raises(error, at_call=3), torch.randn(8, 2), steps=5, progress=False)


@pytest.mark.parametrize("error", [ValueError("the batch has the wrong shape"), RuntimeError("simulated crash"),
                                   ValueError("found invalid values: tensor([0.5, 2.0])")])
def test_other_errors_of_the_model_propagate_unchanged(error):
    with pytest.raises(type(error)) as info:
        fit(Raises(error, at_call=2), torch.randn(8, 2), steps=5, progress=False)
    assert info.value is error


def test_nonfinite_parameters_after_the_last_update_are_reported():
    model = Raises(ValueError("unused"), at_call=10**9)
    model.p.register_hook(lambda g: g * float("nan") if model.calls >= 3 else g)
    with pytest.raises(NonFiniteLossError, match=r"parameters of Raises are NaN/inf after step 3 of 3"):
        fit(model, torch.randn(8, 2), steps=3, progress=False)


def test_nonfinite_parameters_found_by_the_next_step_name_the_update_that_made_them():
    model = Raises(ValueError("unused"), at_call=10**9)
    model.p.register_hook(lambda g: g * float("nan") if model.calls == 2 else g)
    with pytest.raises(NonFiniteLossError, match=r"parameters of Raises are NaN/inf at step 3 of 6 \(the update of "
                                                 r"step 2 made them so\)") as info:
        fit(model, torch.randn(8, 2), steps=6, progress=False)
    assert info.value.step == 3 and info.value.history.steps_done == 2


def test_a_flow_with_a_huge_learning_rate_stops_with_nonfinite_loss_error():
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    with pytest.raises(NonFiniteLossError) as info:
        pg.fit(pg.flows.Flow(2, "realnvp"), x, steps=30, lr=1e6, seed=0, progress=False)
    assert 1 <= info.value.step <= 30
    assert "tensor(" not in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize("kind", ["realnvp", "spline-ar", "spline"])
def test_cli_divergence_exits_1_with_one_short_line(tmp_path, capsys, kind):
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32))
    argv = ["fit", "flow", "--data", str(data), "--kind", kind, "--lr", "100", "--steps", "20", "--no-progress",
            "--out", str(tmp_path / "run"), "--num-samples", "16"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and len(err) < 700, err
    assert err.startswith("probgen: error: NonFiniteLossError: ") and " at step " in err and "tensor(" not in err
