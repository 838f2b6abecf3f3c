"""Reverse-time SDE sampler through ``torchsde.sdeint``: :func:`sample_reverse_sde` (σ-space, one signature)
and its front end over a score and an SDE, :func:`sample_sde`.

The reverse-time SDE (Anderson, 1982; Song et al., 2021, eq. 6)

.. math::

    dx = [f(x, t) - g(t)^2 \\nabla_x \\log p_t(x)]\\,dt + g(t)\\,d\\bar w, \\qquad t: T \\to \\epsilon,

is, after ``x̃ = x/α(t)``, ``σ̃ = σ(t)/α(t)``, the one SDE ``dx̃ = 2(x̃ - D)/σ̃\\, dσ̃ + \\sqrt{2σ̃}\\, d\\bar w``
of every family; it is integrated in increasing grid index (torchsde needs increasing times). The noise is
diagonal and state-independent, so the Itô and Stratonovich readings coincide and every torchsde solver
applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

from probgen._checks import check_choice, check_int
from probgen.samplers.base import (
    Callback,
    SampleResult,
    SigmaCallback,
    check_sigma_sampler,
    denoise_to_zero,
    positive_levels,
    run_on_sde,
)
from probgen.samplers.denoiser import Denoiser
from probgen.sde.base import SDE, ScoreFn

__all__ = ["sample_reverse_sde", "sample_sde", "SDE_METHODS"]

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


class _GridSDE(torch.nn.Module):
    r"""The σ-space reverse SDE in the grid index ``u``, ``ℓ = \log σ``, for ``y = c x`` with ``c = (1 + σ²)^{-1/2}``:

    .. math::

        dy = \Big[2c\,(x - D(x, σ)) - \frac{σ^2}{1 + σ^2}\, y\Big] ℓ'(u)\, du + cσ\sqrt{-2ℓ'(u)}\, dW_u

    on flat states ``y: (B, D)``. ``y`` is exactly a VP path's ``x_t``: states stay of the data's scale, which
    the reversible Heun solver needs (its stability region lies on the imaginary axis, so the strong
    contraction of ``x`` from ``σ_max`` would excite its parasitic mode).

    ``ℓ(u)`` is the monotone C¹ cubic through ``(k, \log σ_k)`` (Fritsch–Butland slopes, the harmonic mean
    of the neighbouring secants): a drift continuous in ``u``, as the Heun-type solvers need (they reuse an
    end-point evaluation as the next start point).
    """

    noise_type = "diagonal"

    def __init__(self, model: Denoiser, sigmas: Tensor, event_shape: tuple[int, ...], sde_type: str):
        super().__init__()
        self.model, self.event_shape, self.sde_type = model, event_shape, sde_type
        self.knots = sigmas.log()
        secant = self.knots.diff()
        self.slopes = torch.cat([secant[:1], secant[:-1], secant[-1:]])
        inner = secant[:-1] * secant[1:]
        self.slopes[1:-1] = torch.where(inner > 0, 2.0 * inner / (secant[:-1] + secant[1:]), torch.zeros_like(inner))

    def _log_sigma(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(ℓ(u), ℓ'(u))`` of the cubic Hermite interpolant (unit knot spacing)."""
        k = int(torch.clamp(torch.floor(u), 0, self.knots.shape[0] - 2))
        s = u.to(self.knots.dtype) - k
        y0, y1, m0, m1 = self.knots[k], self.knots[k + 1], self.slopes[k], self.slopes[k + 1]
        value = (2 * s**3 - 3 * s**2 + 1) * y0 + (s**3 - 2 * s**2 + s) * m0 + (3 * s**2 - 2 * s**3) * y1 \
            + (s**3 - s**2) * m1
        rate = (6 * s**2 - 6 * s) * (y0 - y1) + (3 * s**2 - 4 * s + 1) * m0 + (3 * s**2 - 2 * s) * m1
        return value, rate

    def f(self, u: Tensor, y: Tensor) -> Tensor:
        log_sigma, rate = self._log_sigma(u)
        sigma2 = (2.0 * log_sigma).exp()
        scale = (1.0 + sigma2).rsqrt()
        x = y.reshape(y.shape[0], *self.event_shape) / scale
        denoised = self.model(x, log_sigma.exp().expand(y.shape[0]))
        return (2.0 * scale * (x - denoised) * rate).reshape(y.shape) - (sigma2 * scale**2 * rate) * y

    def g(self, u: Tensor, y: Tensor) -> Tensor:
        log_sigma, rate = self._log_sigma(u)
        # ``0 * y`` keeps y in the graph for Milstein's autograd derivative of g (which is zero).
        sigma = log_sigma.exp()
        return sigma * (1.0 + sigma**2).rsqrt() * (-2.0 * rate).clamp_min(0.0).sqrt() + 0.0 * y


def sample_reverse_sde(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                       generator: torch.Generator | None = None, method: str = "euler") -> Tensor:
    r"""The reverse-time SDE of σ-space, ``dx = 2\frac{x - D}{σ} dσ + \sqrt{2σ}\,d\bar w``, through ``torchsde``.

    The forward SDE ``dx = \sqrt{2σ}\,dw_σ`` adds variance ``dσ²``; its time reversal (Anderson 1982) has drift
    ``-g² ∇\log p = 2(x - D)/σ``. It is solved in the grid index ``u`` (``σ(u)`` piecewise linear through
    ``sigmas``, one solver step per interval, so ``"euler"`` is Euler–Maruyama on the grid) by the torchsde
    solver ``method`` (:data:`SDE_METHODS`), with one ``torchsde.BrownianInterval`` seeded from ``generator``.
    A last step to ``σ = 0`` returns the denoised ``D(x, σ_{N-1})`` (Tweedie). NFE: one per solver stage,
    plus one for torchsde's contract check and one for the last ``D``. ``callback`` runs after the solve
    (torchsde has no per-step hook), with ``denoised = None`` except on a last step to 0.

    Example:
        >>> from probgen.samplers.karras import karras_sigmas
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.002, sigma_max=80.0)   # N(0, 1) data
        >>> x = sample_reverse_sde(d, 80.0 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(0)),
        ...                        karras_sigmas(100, 0.002, 80.0), generator=torch.Generator().manual_seed(1))
        >>> round(float(x.std()), 1)
        1.0
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    method = check_choice("method", method, SDE_METHODS)
    positive = positive_levels(sigmas)
    with torch.no_grad():
        if positive.shape[0] >= 2:
            span = float(positive.shape[0] - 1)
            entropy_device = generator.device if generator is not None else "cpu"
            entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=entropy_device).item())
            scale = (1.0 + positive**2).rsqrt()
            y0 = x.reshape(x.shape[0], -1) * scale[0]
            bm = torchsde.BrownianInterval(t0=0.0, t1=span, size=tuple(y0.shape), dtype=x.dtype, device=x.device,
                                           entropy=entropy, dt=1.0, levy_area_approximation=_LEVY_AREA.get(method, "none"))
            ts = torch.arange(positive.shape[0] if callback is not None else 2, dtype=x.dtype, device=x.device)
            ts = ts if callback is not None else ts * span
            module = _GridSDE(model, positive, tuple(x.shape[1:]), _SDE_TYPE[method])
            ys = torchsde.sdeint(module, y0, ts, bm=bm, method=method, dt=1.0, adaptive=False)
            if callback is not None:
                for i in range(1, ys.shape[0]):
                    callback(i - 1, ys[i].reshape(x.shape) / scale[i], float(positive[i]), None)
            x = ys[-1].reshape(x.shape) / scale[-1]
        return denoise_to_zero(model, x, sigmas, callback)


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
    ``x <- (x + sigma(eps)^2 s(x, eps)) / alpha(eps)`` (for VE ``x + sigma^2 s``). A front end of
    :func:`sample_reverse_sde`: the same SDE in σ-space (``x̃ = x/α(t)``) on the σ grid of the uniform time
    grid ``T = t_0 > … > t_steps = eps``, mapped back by ``x = α(eps) x̃``.

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``; or a model's
            :class:`~probgen.samplers.Denoiser` (``model.denoiser()``) of the same SDE.
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
    steps = check_int("steps", steps, minimum=1)
    check_choice("method", method, SDE_METHODS)
    x, nfe, eps = run_on_sde(sample_reverse_sde, score_fn, sde, shape, num_steps=steps, eps=eps, denoise=denoise,
                             callback=callback, x_init=x_init, generator=generator, device=device, dtype=dtype,
                             report_start=True, method=method)
    return SampleResult(samples=x, nfe=nfe, info={"method": method, "steps": steps, "eps": eps})
