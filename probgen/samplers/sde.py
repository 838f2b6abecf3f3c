"""Reverse-time SDE sampler through ``torchsde.sdeint``.

The reverse-time SDE (Anderson, 1982; Song et al., 2021, eq. 6)

.. math::

    dx = [f(x, t) - g(t)^2 \\nabla_x \\log p_t(x)]\\,dt + g(t)\\,d\\bar w, \\qquad t: T \\to \\epsilon,

is integrated in the reversed time ``s = T - t`` (torchsde needs increasing times), where
``y(s) = x(T - s)`` solves ``dy = -[f - g^2 s](y, T - s) ds + g(T - s) dW_s``. The noise is diagonal
and state-independent (``g`` depends on time only), so the Itô and Stratonovich readings of the SDE
coincide and every torchsde solver applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

from probgen._checks import check_choice, check_int
from probgen.ops.shapes import append_dims
from probgen.samplers.base import (
    Callback,
    SampleResult,
    _check_callback,
    _check_eps,
    _check_sde,
    _CountedScore,
    _initial_state,
    _time,
)
from probgen.sde.base import SDE, ScoreFn

__all__ = ["sample_sde", "SDE_METHODS"]

# torchsde solver name -> SDE type it runs under (g is state-independent, so both readings agree).
_SDE_TYPE = {
    "euler": "ito",
    "milstein": "ito",
    "srk": "ito",
    "midpoint": "stratonovich",
    "heun": "stratonovich",
    "euler_heun": "stratonovich",
    "reversible_heun": "stratonovich",
    "log_ode": "stratonovich",
}
SDE_METHODS = tuple(_SDE_TYPE)
_LEVY_AREA = {"srk": "space-time", "log_ode": "foster"}


class _ReversedTimeSDE(torch.nn.Module):
    """``dy = -[f - g^2 s](y, T - s) ds + g(T - s) dW`` on flat states ``y: (B, D)``."""

    noise_type = "diagonal"

    def __init__(self, sde: SDE, score_fn: _CountedScore, event_shape: tuple[int, ...], sde_type: str):
        super().__init__()
        self.sde, self.score_fn, self.event_shape, self.sde_type = sde, score_fn, event_shape, sde_type

    def _t(self, s: Tensor, y: Tensor) -> Tensor:
        return (self.sde.T - s).to(y.dtype).expand(y.shape[0]).clamp(0.0, self.sde.T)

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        x = y.reshape(y.shape[0], *self.event_shape)
        return -self.sde.reverse_f(self.score_fn, x, self._t(s, y)).reshape(y.shape)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        # ``0 * y`` keeps y in the graph for Milstein's autograd derivative of g (which is zero).
        return append_dims(self.sde.g(self._t(s, y)), 2) + 0.0 * y


def sample_sde(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    steps: int = 1000,
    method: str = "euler",
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
) -> SampleResult:
    """Sample by integrating the reverse-time SDE from ``T`` to ``eps`` with a torchsde solver.

    .. math::

        dx = [f(x, t) - g(t)^2 s(x, t)]\\,dt + g(t)\\,d\\bar w, \\quad x_T \\sim p_T,

    followed, if ``denoise``, by Tweedie's posterior mean at ``t = eps``:
    ``x <- (x + sigma(eps)^2 s(x, eps)) / alpha(eps)`` (for VE ``x + sigma^2 s``).

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``.
        sde: the forward SDE (``probgen.sde.VPSDE``, ``SubVPSDE``, ``VESDE``).
        shape: ``(B, *event)`` of the draws.
        steps: number of fixed solver steps over ``[eps, T]`` (``>= 1``).
        method: a torchsde solver: ``"euler"``, ``"milstein"``, ``"srk"`` (Itô), ``"midpoint"``,
            ``"heun"``, ``"euler_heun"``, ``"reversible_heun"``, ``"log_ode"`` (Stratonovich).
        eps: final time, in ``(0, T)``; the score is usually unreliable at ``t = 0``.
        denoise: apply Tweedie's denoising step at the end (one more score evaluation).
        generator: seeds the prior draw and the Brownian motion (a ``torchsde.BrownianInterval`` whose
            ``entropy`` is drawn from it), so a seeded generator gives reproducible samples.
        callback: ``callback(i, x, t)`` for each point ``t_i`` of the time grid, called after the
            solve (torchsde has no per-step hook), ``i = 0`` being ``x_T``.
        device, dtype: of the prior draw (ignored when ``x_init`` is given).
        x_init: start from this ``(B, *event)`` tensor instead of a prior draw.

    Returns:
        :class:`SampleResult` with ``samples: (B, *event)`` and ``nfe`` (score calls).

    Reference:
        Song et al. (2021), arXiv:2011.13456; Li, Wong, Chen, Duvenaud (2020), arXiv:2001.01328
        (torchsde).

    Example:
        >>> from probgen.sde import VPSDE
        >>> out = sample_sde(lambda x, t: -x, VPSDE(), (8, 2), steps=20)
        >>> out.samples.shape, out.nfe
        (torch.Size([8, 2]), 22)
    """
    sde = _check_sde(sde)
    score = _CountedScore(score_fn)
    steps = check_int("steps", steps, minimum=1)
    check_choice("method", method, SDE_METHODS)
    eps = _check_eps(eps, sde.T)
    callback = _check_callback(callback)
    x = _initial_state(sde, shape, x_init=x_init, generator=generator, device=device, dtype=dtype)
    batch, event_shape = x.shape[0], tuple(x.shape[1:])
    y0 = x.reshape(batch, -1)

    # the end time as represented in x's dtype, so the Brownian interval and the solver grid agree
    s_end = float(torch.tensor(sde.T - eps, dtype=x.dtype))
    dt = s_end / steps
    if callback is None:
        ts = torch.tensor([0.0, s_end], dtype=x.dtype, device=x.device)
    else:
        ts = torch.linspace(0.0, s_end, steps + 1, dtype=x.dtype, device=x.device)
    entropy_device = generator.device if generator is not None else "cpu"
    entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=entropy_device).item())
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=s_end,
        size=tuple(y0.shape),
        dtype=x.dtype,
        device=x.device,
        entropy=entropy,
        dt=dt,  # step-size hint: builds the interval tree for fixed steps (about 2x faster queries)
        levy_area_approximation=_LEVY_AREA.get(method, "none"),
    )
    module = _ReversedTimeSDE(sde, score, event_shape, _SDE_TYPE[method])
    ys = torchsde.sdeint(module, y0, ts, bm=bm, method=method, dt=dt, adaptive=False)
    if callback is not None:
        for i in range(ts.shape[0]):
            callback(i, ys[i].reshape(x.shape), sde.T - float(ts[i]))
    x = ys[-1].reshape(x.shape)
    if denoise:
        t_end = _time(x, eps)
        x = sde.tweedie(score(x, t_end), x, t_end)
    return SampleResult(samples=x, nfe=score.calls, info={"method": method, "steps": steps, "eps": eps})
