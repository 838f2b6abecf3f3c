"""MADE: autoregressive masks by autograd, exact normalisation over {0,1}^8, sampling frequencies, errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from probgen.flows import MADE


def _all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)


def _perturbed(made: MADE) -> MADE:
    # the direct connection starts at zero: move every weight so that every allowed path is live
    with torch.no_grad():
        for p in made.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return made


@pytest.mark.parametrize("num_masks", [1, 3])
def test_autoregressive_property(num_masks: int) -> None:
    torch.manual_seed(0)
    made = _perturbed(MADE(6, hidden=(32, 32), num_masks=num_masks).double())
    x = torch.rand(6, dtype=torch.float64)
    for k in range(num_masks):
        jac = torch.autograd.functional.jacobian(lambda v: made.logits(v.unsqueeze(0), mask_index=k)[0], x)
        upper = torch.triu(torch.ones(6, 6, dtype=torch.bool))  # entries (i, j) with j >= i
        assert bool((jac[upper] == 0).all())
        # and the allowed connections are used: logit i depends on x_{i-1}
        assert bool((jac.diagonal(-1) != 0).all())


@pytest.mark.parametrize("num_masks", [1, 2])
def test_probabilities_sum_to_one(num_masks: int) -> None:
    torch.manual_seed(1)
    made = _perturbed(MADE(8, hidden=(24,), num_masks=num_masks).double())
    total = made.log_prob(_all_binary(8)).exp().sum().detach()
    assert abs(float(total) - 1.0) < 1e-10


def test_sampling_frequencies_match_exact_distribution() -> None:
    torch.manual_seed(2)
    made = _perturbed(MADE(3, hidden=(16,), num_masks=2).double())
    probs = made.log_prob(_all_binary(3)).exp().detach()
    n = 20000
    x = made.sample(n, generator=torch.Generator().manual_seed(3))
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    codes = (x * torch.tensor([4.0, 2.0, 1.0], dtype=x.dtype)).sum(-1).long()
    counts = torch.bincount(codes, minlength=8).double()
    chi2 = float(((counts - n * probs) ** 2 / (n * probs)).sum())
    # chi-square with 7 degrees of freedom: P(chi2 > 24.32) = 0.001
    assert chi2 < 24.32


def test_loss_gradients_and_protocol() -> None:
    torch.manual_seed(4)
    made = MADE(5, hidden=(16, 16))
    x = torch.randint(0, 2, (10, 5))
    loss = made.loss(x)
    loss.backward()
    for name, p in made.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    d = made.as_distribution()
    torch.testing.assert_close(d.log_prob(x.float()), made.log_prob(x))
    again = MADE(**made.config())
    again.load_state_dict(made.state_dict())
    torch.testing.assert_close(again.log_prob(x), made.log_prob(x))
    assert made.family == "made"


def test_initial_model_is_uniform_without_hidden_signal() -> None:
    # a model whose logits are all zero gives p(x) = 2^-D for every x
    made = MADE(4, hidden=(8,))
    with torch.no_grad():
        for p in made.parameters():
            p.zero_()
    torch.testing.assert_close(made.log_prob(torch.ones(2, 4)), torch.full((2,), -4 * torch.log(torch.tensor(2.0)).item()))


def test_errors() -> None:
    made = MADE(4, hidden=(8,))
    with pytest.raises(ValueError, match=r"x must be binary \(0/1\) for a MADE; got 1 entry not in \{0, 1\}"):
        made.log_prob(torch.tensor([[0.0, 1.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\), got \(2, 3\)"):
        made.log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        made.log_prob(torch.tensor([[0.0, float("nan"), 0.0, 1.0]]))
    with pytest.raises(ValueError, match="num_masks must be >= 1"):
        MADE(4, num_masks=0)
    with pytest.raises(TypeError, match="hidden must be a non-empty sequence"):
        MADE(4, hidden=())
