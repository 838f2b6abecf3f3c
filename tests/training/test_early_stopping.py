"""``fit(..., validation=, eval_every=, patience=)``: the held-out rows are never trained on, the scores are
the model's loss on them, the restored parameters are those of the best evaluation, patience stops the run,
checkpoints resume exactly, and bad arguments are refused with their name."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from probgen import fit
from probgen.checkpoint import read_checkpoint
from probgen.training import TrainingInterrupted


class Regression(torch.nn.Module):
    """Least squares with more weights than training rows: the training loss goes to 0 and the held-out loss
    rises again (overfitting), so the best validation step is not the last one."""

    family = "toy-regression"

    def __init__(self, dim: int = 40):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def config(self) -> dict:
        return {"dim": self.dim}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x @ self.w - y) ** 2).mean()


def _overfit_data(n: int = 40, dim: int = 40):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, dim, generator=g)
    w = torch.zeros(dim)
    w[:3] = torch.tensor([2.0, -1.0, 0.5])
    y = x @ w + 1.0 * torch.randn(n, generator=g)
    return x, y


class Noisy(torch.nn.Module):
    """A loss that draws from the global RNG (as diffusion and VAE losses do) and records its batches."""

    family = "toy-noisy-mean"

    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2))
        self.seen: list[torch.Tensor] = []

    def config(self) -> dict:
        return {}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append(x.detach().clone())
        return ((x + 0.1 * torch.randn_like(x) - self.mu) ** 2).sum(-1).mean()


def test_the_restored_parameters_are_those_of_the_best_validation_score_of_an_overfitting_model():
    x, y = _overfit_data()
    g = torch.Generator().manual_seed(11)  # held-out rows of the same law
    x_val = torch.randn(200, 40, generator=g)
    y_val = x_val[:, :3] @ torch.tensor([2.0, -1.0, 0.5]) + torch.randn(200, generator=g)
    snapshots = {}
    model = Regression()
    history = fit(model, (x, y), steps=300, batch_size=40, lr=0.02, seed=0, progress=False,
                  validation=(x_val, y_val), eval_every=5,
                  callback=lambda step, loss, m: snapshots.__setitem__(step, model.w.detach().clone()))
    assert history.validation_steps == list(range(5, 301, 5))
    # every score is the mean held-out loss of the parameters after that step
    for step, score in zip(history.validation_steps, history.validation_losses):
        expected = float(((x_val @ snapshots[step] - y_val) ** 2).mean())
        assert score == pytest.approx(expected, rel=1e-5)
    best = min(zip(history.validation_losses, history.validation_steps))[1]
    assert history.best_step == best and history.best_validation_loss == min(history.validation_losses)
    assert best < 300 and history.validation_losses[-1] > 1.2 * history.best_validation_loss  # it did overfit
    assert torch.equal(model.w.detach(), snapshots[best])  # restored: not the last parameters
    assert history.steps_done == 300 and not history.stopped_early
    assert history.losses[-1] < 0.3 * history.best_validation_loss  # the training loss kept falling


def test_a_validation_fraction_is_held_out_of_every_training_batch_and_patience_stops_the_run():
    data = torch.stack([torch.arange(100.0) / 100, torch.zeros(100)], 1)  # column 0: the row's id / 100
    model = Noisy()
    history = fit(model, data, steps=2000, batch_size=16, lr=0.05, seed=1, progress=False, validation=0.2,
                  patience=3)
    trained = (torch.cat(model.seen)[:, 0] * 100).round().long().unique()
    assert len(trained) == 80  # every one of the 80 training rows was seen, no validation row ever
    held_out = set(range(100)) - set(trained.tolist())
    assert len(held_out) == 20
    # the run stopped after 3 evaluations without improvement (one per pass: 80 // 16 = 5 steps)
    assert history.stopped_early and history.steps_done < 2000
    assert history.validation_steps == list(range(5, history.steps_done + 1, 5))
    assert history.validation_steps[-1] == history.steps_done
    assert history.validation_steps.index(history.best_step) == len(history.validation_steps) - 4


def test_validation_does_not_perturb_the_training_run():
    data = torch.randn(64, 2)
    kwargs = dict(steps=30, batch_size=16, lr=0.05, seed=0, progress=False)
    plain, validated = Noisy(), Noisy()
    fit(plain, data, **kwargs)
    history = fit(validated, data, validation=torch.randn(20, 2), eval_every=1000, **kwargs)
    assert history.validation_steps == [30] and history.best_step == 30  # scored once, at the end
    assert torch.equal(plain.mu, validated.mu)  # same batches and the same training noise


def _signal_at(step_to_stop: int):
    def callback(step, loss, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


def test_an_interrupted_validated_run_resumes_exactly_and_an_early_stopped_run_stays_stopped(tmp_path):
    x, y = _overfit_data()
    kwargs = dict(steps=400, batch_size=8, lr=0.02, seed=2, progress=False, validation=0.25, patience=4,
                  checkpoint_every=10)
    full = Regression()
    h_full = fit(full, (x, y), checkpoint=tmp_path / "full.pt", **kwargs)
    assert h_full.stopped_early
    stop_at = h_full.best_step + 2  # after the best evaluation, before the stop: the best is in the checkpoint
    part = Regression()
    with pytest.raises(TrainingInterrupted):
        fit(part, (x, y), checkpoint=tmp_path / "part.pt", callback=_signal_at(stop_at), **kwargs)
    resumed = Regression()
    h = fit(resumed, (x, y), checkpoint=tmp_path / "part.pt", resume=True, **kwargs)
    assert torch.equal(resumed.w, full.w)
    assert h.to_dict() | {"wall_time": 0} == h_full.to_dict() | {"wall_time": 0}
    # the final checkpoint holds the restored best parameters; resuming it trains nothing
    record = read_checkpoint(tmp_path / "full.pt")
    assert torch.equal(record["state_dict"]["w"], full.w.detach())
    again = Regression()
    h_again = fit(again, (x, y), checkpoint=tmp_path / "full.pt", resume=True, **kwargs)
    assert h_again.steps_done == h_full.steps_done and torch.equal(again.w, full.w)


def test_a_finished_validated_run_cannot_continue_to_more_steps(tmp_path):
    x, y = _overfit_data()
    kwargs = dict(batch_size=8, lr=0.02, seed=0, progress=False, validation=0.25)
    fit(Regression(), (x, y), steps=20, checkpoint=tmp_path / "c.pt", **kwargs)
    with pytest.raises(ValueError, match=r"cannot resume .* to steps=40: that run finished at step 20 .* best "
                                         r"validation score"):
        fit(Regression(), (x, y), steps=40, checkpoint=tmp_path / "c.pt", resume=True, **kwargs)
    with pytest.raises(ValueError, match=r"validation='fraction 0.25' but the checkpoint was trained with "
                                         r"validation=None"):
        fit(Regression(), (x, y), steps=20, checkpoint=tmp_path / "d.pt", batch_size=8, lr=0.02, seed=0,
            progress=False)
        fit(Regression(), (x, y), steps=20, checkpoint=tmp_path / "d.pt", resume=True, **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"validation": 1.0}, ValueError, r"validation must lie in \(0, 1\), got 1.0"),
    ({"validation": 0}, ValueError, r"validation must lie in \(0, 1\), got 0"),
    ({"validation": "10%"}, TypeError, r"validation must be None, a fraction in \(0, 1\) .* got str"),
    ({"validation": torch.randn(5, 3)}, ValueError, r"validation has rows of shape \(3,\) .* the data's are \(2,\)"),
    ({"validation": (torch.randn(5, 2), torch.randn(5, 2))}, ValueError,
     r"validation has 2 tensor\(s\) but data has 1"),
    ({"validation": torch.full((4, 2), float("nan"))}, ValueError, r"validation: data contains 8 NaN or infinite values"),
    ({"validation": 0.001}, ValueError, r"validation=0.001 of 64 rows leaves 0 validation and 64 training rows"),
    ({"patience": 5}, ValueError, r"patience=5 needs validation="),
    ({"eval_every": 5}, ValueError, r"eval_every=5 needs validation="),
    ({"validation": 0.1, "patience": 0}, ValueError, r"patience must be >= 1, got 0"),
    ({"validation": 0.1, "eval_every": 2.5}, TypeError, r"eval_every must be an integer, got float 2.5"),
])
def test_bad_validation_arguments_are_refused_with_their_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(Noisy(), torch.randn(64, 2), steps=5, progress=False, **kwargs)


def test_a_model_without_loss_cannot_be_validated():
    class TwoPlayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.zeros(1))

        def configure_optimizers(self, lr):
            return [torch.optim.SGD(self.parameters(), lr=lr)]

        def training_step(self, batch, optimizers):
            return {"loss": 0.0}

    with pytest.raises(TypeError, match=r"validation= scores the model's loss\(\*batch\), which TwoPlayer does not"):
        fit(TwoPlayer(), torch.randn(8, 2), steps=2, progress=False, validation=0.5)
