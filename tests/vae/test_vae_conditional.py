"""``probgen.vae.ConditionalVAE`` (M2): the enumerated label marginal, IWAE over classes, class-conditional samples."""

from __future__ import annotations

import math

import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn import functional as F

import probgen as pg
from probgen.vae import ConditionalVAE


def tiny(**kw) -> ConditionalVAE:
    torch.manual_seed(0)
    return ConditionalVAE((4,), 3, 2, hidden=(8,), **kw).double()


def explicit_elbo_sum(m: ConditionalVAE, x, y):
    """Σ_b ELBO_b written out by hand from the nets, drawing z in the guide's order (labelled rows first)."""
    known = y >= 0
    total = x.new_zeros(())
    log_prior_y = -math.log(m.num_classes)

    def term(xs, onehot):
        loc, scale = m.encoder(xs, onehot)
        z = torch.distributions.Normal(loc, scale).rsample()
        log_px = torch.distributions.Normal(m.decoder(z, onehot), 1.0).log_prob(xs).sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return log_px + log_prior_y + log_pz - log_qz

    if known.any():
        total = total + term(x[known], F.one_hot(y[known], 3).double()).sum()
    if (~known).any():
        xu = x[~known]
        n = xu.shape[0]
        # one z per (class, row), drawn as one (C, n, L) block like Pyro's parallel enumeration
        onehot = F.one_hot(torch.arange(3), 3).double()[:, None, :].expand(3, n, 3)
        loc, scale = m.encoder(xu.expand(3, n, 4), onehot)
        z = torch.distributions.Normal(loc, scale).rsample()
        log_l = (torch.distributions.Normal(m.decoder(z, onehot), 1.0).log_prob(xu).sum(-1) + log_prior_y
                 + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                 - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1))  # (C, n)
        log_q = torch.log_softmax(m.classifier(xu), -1).T
        total = total + (log_q.exp() * (log_l - log_q)).sum()
    return total


@pytest.mark.parametrize("labels", [[0, 1, 2, -1, -1, 0], [-1] * 6, [2, 1, 0, 0, 1, 2]])
def test_enumerated_label_marginal_matches_the_explicit_sum(labels):
    m = tiny()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor(labels)
    torch.manual_seed(1)
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False).differentiable_loss(
        m.model, m.guide, x, y)
    torch.manual_seed(1)
    by_hand = explicit_elbo_sum(m, x, y)
    torch.manual_seed(1)
    elbo = m.elbo(x, y)
    torch.testing.assert_close(pyro_loss, -by_hand, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(elbo.sum(), by_hand, rtol=1e-12, atol=1e-10)
    # the loss adds α · cross-entropy on the labelled rows, divided by the batch size
    known = y >= 0
    ce = F.cross_entropy(m.classifier(x[known]), y[known], reduction="sum") if known.any() else 0.0
    torch.manual_seed(1)
    torch.testing.assert_close(m.loss(x, y), (pyro_loss + m.alpha * ce) / 6, rtol=1e-12, atol=1e-10)


def test_log_likelihood_sums_classes_exactly():
    m = tiny()
    x = torch.randn(5, 4, dtype=torch.float64)
    marginal = m.log_likelihood(x, 30, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # same stream: the classes are visited in order 0, 1, 2
    per_class = torch.stack([m.log_likelihood(x, 30, y=torch.full((5,), c), generator=g) for c in range(3)])
    torch.testing.assert_close(marginal, torch.logsumexp(per_class, 0) - math.log(3), rtol=1e-12, atol=1e-12)
    # a lower bound of log p(x | y) that tightens: K = 300 above K = 1 (paired over 400 copies, 3 SE)
    xr = x[:1].expand(400, 4)
    yr = torch.zeros(400, dtype=torch.long)
    diff = m.log_likelihood(xr, 300, y=yr) - m.log_likelihood(xr, 1, y=yr)
    assert diff.mean() > 3 * diff.std() / math.sqrt(400)


def test_sampling_classification_and_errors():
    m = tiny()
    assert m.sample(4, y=2).shape == (4, 4)
    assert m.sample(3, y=torch.tensor([0, 1, 2])).shape == (3, 4)
    assert m.sample(3).shape == (3, 4)
    x = torch.randn(5, 4, dtype=torch.float64)
    assert m.classify(x).dtype == torch.long and m.class_probs(x).sum(-1).allclose(torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"y must hold labels in \{-1 \(missing\), 0, ..., 2\}, got values in \[0, 3\]"):
        m.loss(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(TypeError, match="y must be an integer"):
        m.loss(x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        m.elbo(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="y must be <= 2"):
        m.sample(2, y=3)
    with pytest.raises(ValueError, match=r"y must hold labels in \{0, ..., 2\}"):
        m.log_likelihood(x, 5, y=torch.tensor([0, -1, 0, 0, 0]))
    with pytest.raises(ValueError, match="unknown likelihood 'beta'; valid choices: 'gaussian', 'bernoulli'"):
        ConditionalVAE((4,), 3, 2, likelihood="beta")
    with pytest.raises(ValueError, match=r"must be binary \(0/1\)"):
        ConditionalVAE((4,), 3, 2, likelihood="bernoulli").loss(torch.rand(2, 4), torch.tensor([0, 1]))


def test_fit_with_partly_labelled_tuples_and_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (300,), generator=g)
    x = F.one_hot(y, 3).float() @ torch.randn(3, 4, generator=g) * 3 + 0.3 * torch.randn(300, 4, generator=g)
    y_obs = torch.where(torch.rand(300, generator=g) < 0.2, y, torch.full_like(y, -1))  # 20% labelled
    torch.manual_seed(0)
    m = ConditionalVAE((4,), 3, 2, hidden=(32,), obs_scale=0.3)
    history = pg.fit(m, (x, y_obs), steps=80, batch_size=64, lr=5e-3, seed=0, progress=False)
    assert history.losses[-1] < history.losses[0]
    accuracy = (m.classify(x) == y).float().mean().item()
    assert accuracy > 0.9  # well-separated clusters; chance is 1/3
    path = pg.save(tmp_path / "cvae.pt", m)
    back = pg.load(path, model=ConditionalVAE(**m.config()))
    torch.testing.assert_close(back.class_probs(x), m.class_probs(x), rtol=0, atol=0)


@pytest.mark.slow
def test_class_conditional_digits_are_recognised_by_the_shipped_classifier():
    from probgen.metrics.classifier import digits_probs

    x, y = pg.data.digits("train")
    torch.manual_seed(0)
    m = ConditionalVAE((1, 8, 8), 10, 8, obs_scale=0.3)
    pg.fit(m, (x, y), steps=400, batch_size=128, lr=1e-3, seed=0, progress=False)
    labels = torch.arange(10).repeat_interleave(50)
    samples = m.sample(500, y=labels, generator=torch.Generator().manual_seed(0))
    accuracy = (digits_probs(samples).argmax(-1) == labels).float().mean().item()
    # chance is 0.1; a binomial SE at p = 0.8 over 500 draws is 0.018, so 0.7 is > 5 SE below the level measured
    assert accuracy > 0.7, accuracy
