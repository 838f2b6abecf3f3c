"""One MCMC driver for every kernel (issue 16, point 6), the module layout of probgen.infer (transitions,
chains, pyro_model, targets; old names still import), and ``probgen mcmc``'s convergence warning (issue 17)."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch

from probgen.infer import ChainResult, run_chains
from probgen.infer.targets import get_potential

F64 = torch.float64


def test_old_module_names_still_import():
    import probgen.infer.batched as batched
    import probgen.infer.chains as chains
    import probgen.infer.pyro_model as pyro_model
    import probgen.infer.transitions as transitions

    assert batched.run_chains is chains.run_chains and batched.hmc_step is transitions.hmc_step
    assert batched.model_potential is pyro_model.model_potential
    sys.modules.pop("probgen.infer.potentials", None)
    with pytest.warns(DeprecationWarning, match="renamed probgen.infer.targets"):
        old = importlib.import_module("probgen.infer.potentials")
    assert old.get_potential is get_potential


def test_run_chains_drives_pyro_nuts_too():
    """kernel='nuts' runs Pyro's NUTS chain by chain and returns a ChainResult like the batched kernels
    (here on N(3, 0.5^2) in 2-D: 2 x 150 draws, the mean within 4 SE)."""
    U = lambda x: 0.5 * (((x - 3.0) / 0.5) ** 2).sum(-1)  # noqa: E731
    init = torch.zeros(2, 2, dtype=F64)
    res = run_chains(U, init, kernel="nuts", num_samples=150, warmup_steps=100,
                     generator=torch.Generator().manual_seed(0))
    assert isinstance(res, ChainResult) and res.kernel == "nuts"
    assert res.samples.shape == (2, 150, 2) and res.samples.dtype == F64
    assert res.accept_prob.shape == res.diverging.shape == res.potential.shape == (2, 150)
    torch.testing.assert_close(res.potential, U(res.samples.reshape(-1, 2)).reshape(2, 150))
    assert res.step_size.shape == (2,) and bool((res.step_size != 1.0).all())  # adapted
    se = 0.5 / math.sqrt(2 * 150 / 3)
    assert float((res.samples.mean((0, 1)) - 3.0).abs().max()) < 4 * se
    again = run_chains(U, init, kernel="nuts", num_samples=150, warmup_steps=100,
                       generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.samples, res.samples)  # the generator makes NUTS reproducible
    with pytest.raises(ValueError, match="callback is not supported for kernel 'nuts'"):
        run_chains(U, init, kernel="nuts", num_samples=5, callback=lambda i, s: None)


def test_cli_mcmc_warns_in_one_line_when_not_converged(tmp_path, capsys):
    from probgen.cli import main

    code = main(["mcmc", "--potential", "funnel", "--dim", "5", "--kernel", "mala", "--chains", "8",
                 "--samples", "60", "--warmup", "20", "--out", str(tmp_path / "f")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("warning: not converged: R-hat")
    assert "bulk ESS" in lines[0] and "(100 per chain x 8 chains)" in lines[0]
    assert "min bulk ESS of x and x²" in out


def test_cli_mcmc_nuts_uses_the_library_driver(tmp_path, capsys, monkeypatch):
    import probgen.infer as infer
    from probgen.cli import main

    seen = {}
    real = infer.run_chains

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(infer, "run_chains", spy)
    code = main(["mcmc", "--potential", "gaussian", "--dim", "2", "--kernel", "nuts", "--chains", "2",
                 "--samples", "30", "--warmup", "30", "--out", str(tmp_path / "n")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert seen["kernel"] == "nuts"
    assert torch.load(tmp_path / "n" / "samples.pt", weights_only=True).shape == (2, 30, 2)
