"""Tests of probgen.fit: validation, optimisation, determinism, exact resume, NaN guard, checkpoints."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import probgen
from probgen import checkpoint as ckpt
from probgen.checkpoint import CheckpointError, CheckpointWriteError, load, read_checkpoint
from probgen.training import History, NonFiniteLossError, fit


class NoisyRegression(nn.Module):
    """A small MLP regression whose loss draws noise from the global RNG (as probgen models do)."""

    family = "toy-regression"

    def __init__(self, dim: int = 3, hidden: int = 8, input_noise: float = 0.1):
        super().__init__()
        self.dim, self.hidden, self.input_noise = dim, hidden, input_noise
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.seen_steps: list[int] = []

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "input_noise": self.input_noise}

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x + self.input_noise * torch.randn_like(x)
        return (self.net(x).squeeze(-1) - y).pow(2).mean()

    def on_fit_step(self, step: int) -> None:
        self.updates += 1
        self.seen_steps.append(step)


class ToyAdversarial(nn.Module):
    """Two players: a location 'generator' and a logistic linear critic."""

    family = "toy-adversarial"

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim
        self.loc = nn.Parameter(torch.zeros(dim))
        self.critic = nn.Linear(dim, 1)
        self.lr_seen: float | None = None

    def config(self) -> dict:
        return {"dim": self.dim}

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        self.lr_seen = lr
        return [torch.optim.Adam([self.loc], lr=lr, betas=(0.5, 0.9)),
                torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.9))]

    def training_step(self, batch, optimizers) -> dict:
        (x,) = batch
        g_opt, d_opt = optimizers
        fake = self.loc + torch.randn_like(x)
        d_opt.zero_grad()
        real_logit, fake_logit = self.critic(x), self.critic(fake.detach())
        d_loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        d_loss.backward()
        d_opt.step()
        g_opt.zero_grad()
        g_loss = F.softplus(-self.critic(self.loc + torch.randn_like(x))).mean()
        g_loss.backward()
        g_opt.step()
        d_acc = 0.5 * ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean())
        return {"loss": g_loss.detach(), "d_loss": d_loss.detach(), "d_acc": d_acc}


class Quadratic(nn.Module):
    """loss = ½‖p − c‖² (gradient p − c in closed form), optionally NaN from a given call on."""

    family = "toy-quadratic"

    def __init__(self, nan_at_call: int | None = None):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([3.0, -4.0]))
        self.register_buffer("c", torch.zeros(2))
        self.nan_at_call = nan_at_call
        self.calls = 0

    def config(self) -> dict:
        return {"nan_at_call": self.nan_at_call}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        value = 0.5 * (self.p - self.c).pow(2).sum() + 0.0 * x.sum()
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            value = value * float("nan")
        return value


FAMILIES = {"toy-regression": NoisyRegression, "toy-adversarial": ToyAdversarial, "toy-quadratic": Quadratic}


def _regression_data(n: int = 50, dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])[:dim] + 0.1 * torch.randn(n, generator=g)
    return x, y


def _model(seed: int = 0, **kw) -> NoisyRegression:
    torch.manual_seed(seed)
    return NoisyRegression(**kw)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"steps": 0}, ValueError, "steps must be >= 1, got 0"),
        ({"steps": 2.5}, TypeError, "steps must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be finite"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
        ({"grad_clip": 0}, ValueError, "grad_clip must be > 0"),
        ({"lr_schedule": "linear"}, ValueError, r"unknown lr_schedule 'linear'; valid choices: 'constant', 'cosine'"),
        ({"resume": True}, ValueError, r"resume=True needs checkpoint=<path>"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_every is set but checkpoint is None"),
        ({"progress": "yes"}, TypeError, "progress must be a bool, got str 'yes'"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"device": "nonsense"}, ValueError, r"device 'nonsense' is not a torch device"),
        ({"device": 7}, TypeError, "device must be None, a str or a torch.device"),
        ({"log_every": 0}, ValueError, "log_every must be >= 1"),
    ],
)
def test_argument_validation(kwargs, error, match):
    options = {"steps": 3, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        fit(_model(), _regression_data(), **options)


@pytest.mark.parametrize(
    "data, error, match",
    [
        ([1.0, 2.0], TypeError, r"data\[0\] must be a torch.Tensor"),
        ("x", TypeError, "data must be a Tensor"),
        ((), ValueError, "data is an empty tuple"),
        (torch.empty(0, 3), ValueError, r"data is empty \(shape \(0, 3\)\)"),
        (torch.tensor([[1.0, float("nan")]]), ValueError, "data contains 1 NaN or infinite values"),
        (torch.ones(4, 3, dtype=torch.long), TypeError, "data must be float32 or float64, got torch.int64"),
        (torch.ones(4, 3, dtype=torch.float16), TypeError, "half precision is not supported"),
        ((torch.ones(4, 3), torch.ones(5)), ValueError, r"data\[1\] has 5 rows but data\[0\] has 4"),
        (torch.ones(4, 3, dtype=torch.float64), ValueError, "data has dtype torch.float64 but the model's"),
    ],
)
def test_data_validation(data, error, match):
    with pytest.raises(error, match=match):
        fit(_model(), data, steps=2, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device 'cuda' was requested but CUDA is not available.*device='cpu'"):
        fit(_model(), _regression_data(), steps=2, device="cuda", progress=False)


def test_model_contract_errors():
    class NoLoss(nn.Module):
        pass

    class HalfTwoPlayer(nn.Module):
        def training_step(self, batch, optimizers):
            return {"loss": 0.0}

    class VectorLoss(nn.Linear):
        def loss(self, x):
            return self(x).squeeze(-1)

    class FloatLoss(nn.Linear):
        def loss(self, x):
            return 1.0

    class ConstantLoss(nn.Linear):
        def loss(self, x):
            return torch.tensor(1.0)

    x = torch.randn(8, 3)
    with pytest.raises(TypeError, match="NoLoss has no loss"):
        fit(NoLoss(), x, steps=1, progress=False)
    with pytest.raises(TypeError, match="defines training_step but not configure_optimizers"):
        fit(HalfTwoPlayer(), x, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"VectorLoss.loss returned shape \(8,\); expected a scalar"):
        fit(VectorLoss(3, 1), x, steps=1, progress=False)
    with pytest.raises(TypeError, match="FloatLoss.loss must return a scalar torch.Tensor, got float"):
        fit(FloatLoss(3, 1), x, steps=1, progress=False)
    with pytest.raises(ValueError, match="does not require grad"):
        fit(ConstantLoss(3, 1), x, steps=1, progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fit(object(), x, steps=1, progress=False)
    with pytest.raises(ValueError, match="grad_clip applies to the default step only"):
        fit(ToyAdversarial(), x[:, :2], steps=1, grad_clip=1.0, progress=False)


# ---------------------------------------------------------------------------------------------
# optimisation and data handling


def test_least_squares_is_recovered():
    # A linear model on noiseless-design data: the minimiser is the least-squares solution.
    # Full batch (N <= batch_size) and a cosine-annealed lr let Adam settle; 1e-2 is far above
    # the residual oscillation of Adam at the end of the schedule.
    torch.manual_seed(0)
    x, y = _regression_data(n=64)
    model = nn.Linear(3, 1)
    model.loss = lambda a, b: (model(a).squeeze(-1) - b).pow(2).mean()  # type: ignore[assignment]
    history = fit(model, (x, y), steps=600, lr=0.05, lr_schedule="cosine", seed=0, progress=False)
    design = torch.cat([x, torch.ones(64, 1)], 1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(-1)
    fitted = torch.cat([model.weight.detach().squeeze(0), model.bias.detach()])
    assert torch.allclose(fitted, solution, atol=1e-2)
    assert history.final_loss < 0.05 * history.losses[0]
    assert history.steps_done == len(history.losses) == 600 and history.wall_time > 0


def test_loss_decreases_with_minibatches():
    history = fit(_model(), _regression_data(n=200), steps=150, batch_size=32, lr=0.02, seed=1, progress=False)
    first, last = sum(history.losses[:10]) / 10, sum(history.losses[-10:]) / 10
    assert last < 0.25 * first


def test_minibatches_are_permutation_epochs_and_whole_data_when_small():
    seen: list[torch.Tensor] = []

    class Recorder(nn.Linear):
        def loss(self, x):
            seen.append(x[:, 0].clone())
            return self(x).pow(2).mean()

    rows = torch.arange(12.0)[:, None].repeat(1, 2)
    fit(Recorder(2, 1), rows, steps=6, batch_size=4, seed=3, progress=False)
    assert all(b.shape == (4,) for b in seen)
    for epoch in (seen[:3], seen[3:]):  # each epoch of 3 batches visits every row exactly once
        assert sorted(torch.cat(epoch).tolist()) == list(range(12))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))  # reshuffled
    seen.clear()
    fit(Recorder(2, 1), rows, steps=2, batch_size=100, seed=3, progress=False)
    assert all(torch.equal(b, rows[:, 0]) for b in seen)


def test_dataset_object_uses_train():
    class DataSet:
        train = torch.randn(40, 3)
        test = torch.full((5, 3), float("nan"))  # would fail validation if used

    class Auto(nn.Linear):
        def loss(self, x):
            return (self(x) - x).pow(2).mean()

    history = fit(Auto(3, 3), DataSet(), steps=5, batch_size=8, seed=0, progress=False)
    assert history.steps_done == 5


def test_same_seed_same_weights_and_different_seed_differs():
    data = _regression_data()
    a, b, c = _model(), _model(), _model()
    ha = fit(a, data, steps=15, batch_size=16, seed=7, progress=False)
    hb = fit(b, data, steps=15, batch_size=16, seed=7, progress=False)
    hc = fit(c, data, steps=15, batch_size=16, seed=8, progress=False)
    assert _same_weights(a, b) and ha.losses == hb.losses
    assert ha.losses != hc.losses and not _same_weights(a, c)


def test_lr_schedule_callable_factor_is_applied():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, _regression_data(), steps=5, lr_schedule=lambda k: 0.0, seed=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k != "updates")
    with pytest.raises(ValueError, match=r"lr_schedule\(0\) must return a finite number >= 0"):
        fit(_model(), _regression_data(), steps=2, lr_schedule=lambda k: -1.0, progress=False)


def test_grad_clip_clips_and_records_the_norm():
    model = Quadratic()
    post_clip: list[float] = []

    def callback(step, loss, metrics):
        post_clip.append(float(model.p.grad.norm()))

    history = fit(model, torch.zeros(4, 1), steps=3, lr=0.1, grad_clip=0.5, callback=callback, progress=False)
    # step 1: gradient p0 - c = (3, -4), norm 5 exactly; after clipping its norm is the clip value
    assert history.metrics["grad_norm"][0] == pytest.approx(5.0, rel=1e-6)
    assert post_clip == pytest.approx([0.5, 0.5, 0.5], rel=1e-5)
    assert len(history.metrics["grad_norm"]) == 3


def test_callback_and_on_fit_step_see_one_based_steps():
    calls = []
    model = _model()
    history = fit(model, _regression_data(), steps=4, seed=0, progress=False,
                  callback=lambda step, loss, metrics: calls.append((step, loss)))
    assert [s for s, _ in calls] == [1, 2, 3, 4] == model.seen_steps
    assert [v for _, v in calls] == history.losses and int(model.updates) == 4


def test_history_is_json_serialisable():
    history = fit(Quadratic(), torch.zeros(3, 1), steps=3, grad_clip=10.0, progress=False)
    d = json.loads(json.dumps(history.to_dict()))
    assert d["steps_done"] == 3 and d["final_loss"] == history.losses[-1] and len(d["metrics"]["grad_norm"]) == 3
    assert History.from_dict(d) == history


def test_progress_false_prints_nothing_and_true_goes_to_stderr(capsys):
    fit(_model(), _regression_data(), steps=3, progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    fit(_model(), _regression_data(), steps=3, progress=True, log_every=1)
    out, err = capsys.readouterr()
    assert out == "" and "fit toy-regression" in err and "loss=" in err


# ---------------------------------------------------------------------------------------------
# two-player models


def test_two_player_path_records_metrics_and_learns():
    torch.manual_seed(0)
    data = torch.randn(256, 2) + torch.tensor([2.0, -1.0])
    model = ToyAdversarial()
    history = fit(model, data, steps=300, batch_size=64, lr=0.02, seed=0, progress=False)
    assert model.lr_seen == 0.02
    assert set(history.metrics) == {"d_loss", "d_acc"}
    assert len(history.metrics["d_loss"]) == len(history.metrics["d_acc"]) == len(history.losses) == 300
    assert all(0.0 <= a <= 1.0 for a in history.metrics["d_acc"])
    # the generator's location moves most of the way from 0 to the data mean (distance 2.24)
    assert float((model.loc.detach() - torch.tensor([2.0, -1.0])).norm()) < 0.5


def test_two_player_resume_is_exact(tmp_path):
    def make() -> ToyAdversarial:
        torch.manual_seed(0)
        return ToyAdversarial()

    data = torch.randn(100, 2, generator=torch.Generator().manual_seed(1)) + 1.0
    straight = make()
    h_straight = fit(straight, data, steps=12, batch_size=32, lr=0.01, seed=4, progress=False)
    first = make()
    fit(first, data, steps=6, batch_size=32, lr=0.01, seed=4, progress=False, checkpoint=tmp_path)
    torch.manual_seed(321)
    second = ToyAdversarial()  # other initial weights: the checkpoint overwrites them
    h = fit(second, data, steps=12, batch_size=32, lr=0.01, seed=4, progress=False, checkpoint=tmp_path, resume=True)
    assert _same_weights(second, straight)
    assert h.losses == h_straight.losses and h.metrics == h_straight.metrics
    assert len(read_checkpoint(tmp_path)["training"]["optimizers"]) == 2


# ---------------------------------------------------------------------------------------------
# checkpoints and exact resume


def test_resume_reproduces_uninterrupted_run_bit_for_bit(tmp_path):
    data = _regression_data()  # N = 50, batch 16: 3 batches per epoch, 2 rows skipped, reshuffled
    straight = _model()
    h_straight = fit(straight, data, steps=20, batch_size=16, lr=0.01, seed=11, progress=False)

    path = tmp_path / "run" / "checkpoint.pt"
    first = _model()
    h_first = fit(first, data, steps=10, batch_size=16, lr=0.01, seed=11, progress=False, checkpoint=path)
    assert read_checkpoint(path)["training"]["step"] == 10
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    second = _model(seed=99)  # different initial weights: resume must overwrite them
    h = fit(second, data, steps=20, batch_size=16, lr=0.01, seed=11, progress=False, checkpoint=path, resume=True)
    assert _same_weights(second, straight)
    assert h.losses == h_straight.losses and h.losses[:10] == h_first.losses
    assert h.steps_done == 20 and int(second.updates) == 20
    assert second.seen_steps == list(range(11, 21))
    assert read_checkpoint(path)["training"]["step"] == 20
    loaded = load(path, families=FAMILIES)
    assert _same_weights(loaded, straight)


def test_resume_after_crash_with_cosine_clip_and_weight_decay(tmp_path):
    data = _regression_data(n=70)
    options = dict(steps=20, batch_size=16, lr=0.02, seed=5, progress=False, lr_schedule="cosine",
                   grad_clip=0.5, weight_decay=1e-3)
    straight = _model()
    h_straight = fit(straight, data, **options)

    def crash(step, loss, metrics):
        if step == 13:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(_model(), data, checkpoint=tmp_path, checkpoint_every=5, callback=crash, **options)
    assert read_checkpoint(tmp_path)["training"]["step"] == 10
    resumed = _model()
    h = fit(resumed, data, checkpoint=tmp_path, checkpoint_every=5, resume=True, **options)
    assert _same_weights(resumed, straight)
    assert h.losses == h_straight.losses and h.metrics["grad_norm"] == h_straight.metrics["grad_norm"]
    with pytest.raises(ValueError, match=r"steps=30 but the checkpoint was trained with steps=20"):
        fit(_model(), data, checkpoint=tmp_path, resume=True, **{**options, "steps": 30})


def test_resume_without_file_starts_fresh_silently(tmp_path):
    data = _regression_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = fit(_model(), data, steps=4, seed=0, progress=False, checkpoint=tmp_path / "new.pt", resume=True)
    reference = fit(_model(), data, steps=4, seed=0, progress=False)
    assert h.losses == reference.losses and (tmp_path / "new.pt").is_file()


def test_resume_refuses_other_arguments_and_models(tmp_path):
    data = _regression_data()
    fit(_model(), data, steps=4, batch_size=16, seed=0, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match=r"batch_size=8 but the checkpoint was trained with batch_size=16"):
        fit(_model(), data, steps=8, batch_size=8, seed=0, progress=False, checkpoint=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"seed=1 but the checkpoint was trained with seed=0"):
        fit(_model(), data, steps=8, batch_size=16, seed=1, progress=False, checkpoint=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"holds a model with config .*'hidden': 8.*'hidden': 4"):
        fit(_model(hidden=4), data, steps=8, batch_size=16, seed=0, progress=False, checkpoint=tmp_path,
            resume=True)
    with pytest.raises(CheckpointError, match=r"'toy-regression' model; the model passed to fit is a 'toy-quadratic'"):
        fit(Quadratic(), data[0], steps=8, batch_size=16, seed=0, progress=False, checkpoint=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"it is at step 4, beyond steps=2"):
        fit(_model(), data, steps=2, batch_size=16, seed=0, progress=False, checkpoint=tmp_path, resume=True)


def test_resume_from_a_save_file_is_refused(tmp_path):
    probgen.save(tmp_path, _model())
    with pytest.raises(CheckpointError, match="written by save\\(\\), not by fit"):
        fit(_model(), _regression_data(), steps=3, progress=False, checkpoint=tmp_path, resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = Quadratic(nan_at_call=8)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at step 8 of 20.*last good checkpoint \(step 6\) "
                                                 r"is kept at .*checkpoint\.pt") as info:
        fit(model, torch.zeros(4, 1), steps=20, lr=0.1, checkpoint=path, checkpoint_every=3, progress=False)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert error.step == 8 and error.checkpoint_step == 6 and error.checkpoint_path == path
    assert error.history.steps_done == 7 and all(math.isfinite(v) for v in error.history.losses)
    record = read_checkpoint(path)
    assert record["training"]["step"] == 6 and len(record["training"]["history"]["losses"]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    loaded = load(path, families=FAMILIES)
    assert torch.isfinite(loaded.p).all()


def test_nan_loss_without_checkpoint_says_so():
    with pytest.raises(NonFiniteLossError, match=r"step 1 of 5.*no checkpoint was requested"):
        fit(Quadratic(nan_at_call=1), torch.zeros(2, 1), steps=5, progress=False)


def test_nonfinite_gradient_never_reaches_a_checkpoint(tmp_path):
    def make(poison_from: int) -> Quadratic:
        model = Quadratic()
        model.p.register_hook(lambda g: g * float("nan") if model.calls >= poison_from else g)
        return model

    # without grad_clip the NaN gradient corrupts the weights after a finite loss: the write is refused
    with pytest.raises(NonFiniteLossError, match=r"parameters of toy-quadratic are NaN/inf after step 4.*step 3"):
        fit(make(4), torch.zeros(2, 1), steps=10, checkpoint=tmp_path, checkpoint_every=1, progress=False)
    assert read_checkpoint(tmp_path)["training"]["step"] == 3
    # with grad_clip the norm is checked before the update
    model = make(2)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm is nan at step 2 of 10"):
        fit(model, torch.zeros(2, 1), steps=10, grad_clip=1.0, progress=False)
    assert torch.isfinite(model.p).all()


def test_failed_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    real_save = ckpt.torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            f.write(b"half a checkpoint")
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", flaky_save)
    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*checkpoint\.pt"):
        fit(_model(), _regression_data(), steps=10, checkpoint=path, checkpoint_every=2, seed=0, progress=False)
    monkeypatch.undo()
    assert read_checkpoint(path)["training"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_checkpoint_contents(tmp_path):
    fit(_model(), _regression_data(), steps=6, batch_size=16, seed=2, lr=0.01, progress=False, checkpoint=tmp_path)
    record = read_checkpoint(tmp_path)
    training = record["training"]
    assert record["family"] == "toy-regression" and record["config"] == {"dim": 3, "hidden": 8, "input_noise": 0.1}
    assert set(record["versions"]) == {"probgen", "torch", "pyro"}
    assert training["fit_args"]["batch_size"] == 16 and training["fit_args"]["seed"] == 2
    assert training["fit_args"]["lr"] == 0.01 and training["fit_args"]["steps"] == 6
    assert set(training["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert training["sampler"]["permutation"].shape == (50,) and training["sampler"]["position"] == 48
    assert len(training["optimizers"]) == 1 and training["schedulers"] == []
    # default checkpoint_every = max(steps // 10, 1) = 1: the file follows every step
    assert training["fit_args"]["checkpoint_every"] == 1


def test_resume_from_malformed_training_state_is_refused(tmp_path):
    # a file with a valid digest but a damaged structure (e.g. written by another tool)
    data = _regression_data()
    fit(_model(), data, steps=4, seed=0, progress=False, checkpoint=tmp_path)
    record = read_checkpoint(tmp_path)
    del record["training"]["rng"]
    ckpt.write_checkpoint(tmp_path, record)
    with pytest.raises(CheckpointError, match=r"malformed training state \(KeyError: 'rng'\)"):
        fit(_model(), data, steps=8, seed=0, progress=False, checkpoint=tmp_path, resume=True)


def test_batch_transform_is_applied_each_step_and_resume_stays_exact(tmp_path):
    data = _regression_data()
    seen: list[torch.Tensor] = []

    def jitter(x: torch.Tensor) -> torch.Tensor:  # random, from the global RNG, like dequantization noise
        out = x + 0.05 * torch.rand_like(x)
        seen.append(out - x)
        return out

    straight = _model()
    h_straight = fit(straight, data, steps=12, batch_size=16, lr=0.01, seed=3, progress=False,
                     batch_transform=jitter)
    assert len(seen) == 12 and all(((d >= 0) & (d < 0.05)).all() for d in seen)
    assert not torch.equal(seen[0], seen[1])  # fresh noise every step

    path = tmp_path / "checkpoint.pt"
    fit(_model(), data, steps=6, batch_size=16, lr=0.01, seed=3, progress=False, batch_transform=jitter,
        checkpoint=path)
    resumed = _model(seed=5)
    h = fit(resumed, data, steps=12, batch_size=16, lr=0.01, seed=3, progress=False, batch_transform=jitter,
            checkpoint=path, resume=True)
    assert _same_weights(resumed, straight) and h.losses == h_straight.losses


def test_batch_transform_must_be_callable():
    with pytest.raises(TypeError, match="batch_transform must be callable"):
        fit(_model(), _regression_data(), steps=1, batch_transform=3, progress=False)
