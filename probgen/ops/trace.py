"""Divergence of a per-sample vector field: exact trace of the Jacobian, or Hutchinson's estimator.

The divergence ``div f(x) = tr(∂f/∂x)`` is what a continuous normalizing flow and the
probability-flow ODE integrate to get a log-density (instantaneous change of variables, Chen et al.
2018, arXiv:1806.07366):

.. math::

    \\frac{d \\log p(x(t))}{dt} = -\\operatorname{tr}\\Big(\\frac{\\partial f}{\\partial x(t)}\\Big).

Two routes are offered, both built on one ``torch.func.vjp`` of ``f``:

* ``"exact"`` — the ``D`` rows ``e_iᵀ J`` of the Jacobian as ``D`` vector–Jacobian products batched
  with ``torch.func.vmap`` (one batched backward, not ``D`` autograd passes), and
  ``tr J = Σ_i (e_iᵀ J)_i``. Cost: ``D`` VJPs, memory bounded with ``chunk_size``.
* ``"hutchinson"`` — ``tr J = E[vᵀ J v]`` for probes with ``E[v vᵀ] = I`` (Rademacher or standard
  Gaussian), averaged over ``num_probes`` probes (Hutchinson 1989; FFJORD, Grathwohl et al. 2019,
  arXiv:1810.01367). FFJORD keeps the probes fixed over an ODE solve: pass them as ``probes``.

``f`` must act per sample (no batch norm, no cross-sample interaction): row ``b`` of ``f(x)`` may
only depend on row ``b`` of ``x``. The basis vectors used by the exact route put ``e_i`` in every
sample at once, so a cross-sample interaction would silently corrupt the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_bool, check_choice, check_int, check_output_shape, check_tensor
from probgen.ops.shapes import batch_sum

__all__ = ["divergence", "divergence_fn", "sample_probes", "DIVERGENCE_METHODS", "PROBE_NOISES"]

DIVERGENCE_METHODS = ("exact", "hutchinson")
PROBE_NOISES = ("rademacher", "gaussian")

VectorField = Callable[[Tensor], Tensor]


def sample_probes(
    x: Tensor,
    *,
    num_probes: int = 1,
    noise: str = "rademacher",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw Hutchinson probes ``v`` with ``E[v] = 0`` and ``E[v vᵀ] = I``, shaped ``(P, B, *event)``.

    Args:
        x: a batch ``(B, *event)``; the probes take its shape, dtype and device.
        num_probes: ``P >= 1``.
        noise: ``"rademacher"`` (±1 with probability ½ each; lowest variance among i.i.d. probes) or
            ``"gaussian"`` (standard normal).
        generator: optional ``torch.Generator`` for reproducible probes.

    Returns:
        Tensor ``(num_probes, B, *event)`` on ``x``'s device and dtype.

    Example:
        >>> v = sample_probes(torch.zeros(3, 2), num_probes=4)
        >>> v.shape, bool((v.abs() == 1).all())
        (torch.Size([4, 3, 2]), True)
    """
    check_tensor("x", x, min_ndim=2, finite=False)
    num_probes = check_int("num_probes", num_probes, minimum=1)
    check_choice("noise", noise, PROBE_NOISES)
    shape = (num_probes, *x.shape)
    if noise == "gaussian":
        return torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
    bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
    return bits.to(x.dtype).mul_(2).sub_(1)


def _exact_trace(vjp_fn: Callable, x: Tensor, chunk_size: int | None) -> Tensor:
    batch, dim = x.shape[0], x[0].numel()
    # basis[i] is the tensor (B, *event) holding e_i in every sample; D of them, batched by vmap.
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    basis = eye.unsqueeze(1).expand(dim, batch, dim).reshape(dim, *x.shape)
    (rows,) = torch.func.vmap(vjp_fn, chunk_size=chunk_size)(basis)  # rows[i, b] = e_iᵀ J_b
    # tr J_b = Σ_i rows[i, b, i]
    return torch.diagonal(rows.reshape(dim, batch, dim), dim1=0, dim2=2).sum(-1)


def _hutchinson(vjp_fn: Callable, probes: Tensor, chunk_size: int | None) -> Tensor:
    if probes.shape[0] == 1:  # one probe: a plain VJP, without vmap's overhead (FFJORD's usual setting)
        (vjp,) = vjp_fn(probes[0])
        return batch_sum(vjp * probes[0])
    (vjps,) = torch.func.vmap(vjp_fn, chunk_size=chunk_size)(probes)  # (P, B, *event): vᵀ J
    per_probe = batch_sum((vjps * probes).flatten(0, 1)).reshape(probes.shape[0], probes.shape[1])
    return per_probe.mean(0)


def divergence(
    f: VectorField,
    x: Tensor,
    *,
    method: str = "exact",
    noise: str = "rademacher",
    num_probes: int = 1,
    probes: Tensor | None = None,
    create_graph: bool = False,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Evaluate ``f(x)`` and its divergence ``tr(∂f/∂x)`` per sample.

    .. math::

        \\operatorname{div} f(x_b) = \\sum_{i=1}^{D} \\frac{\\partial f_i(x_b)}{\\partial x_{b,i}}
        \\;\\overset{\\text{Hutchinson}}{=}\\; \\mathbb{E}_v\\big[v^\\top J_f(x_b)\\, v\\big].

    Args:
        f: the vector field, ``(B, *event) -> (B, *event)``, acting per sample. It may close over
            module parameters (a CNF's network); gradients w.r.t. them flow through ``div`` when
            ``create_graph=True``.
        x: the points, ``(B, *event)``; ``D = prod(event)``.
        method: ``"exact"`` (``D`` batched VJPs) or ``"hutchinson"`` (unbiased stochastic estimate).
        noise: probe law for Hutchinson, ``"rademacher"`` or ``"gaussian"``; ignored when ``probes``
            is given.
        num_probes: number of probes averaged by Hutchinson (``>= 1``); ignored when ``probes`` is
            given.
        probes: fixed probes for Hutchinson, shaped ``(B, *event)`` (one probe) or
            ``(P, B, *event)``; FFJORD draws them once per ODE solve.
        create_graph: keep the autograd graph of ``f(x)`` and ``div`` (needed to train through the
            divergence, e.g. a CNF's maximum likelihood). When ``False`` both are returned detached
            and no graph is recorded.
        chunk_size: evaluate at most this many VJPs at once (``torch.func.vmap``'s ``chunk_size``)
            to bound memory for large ``D``; ``None`` does all at once.
        generator: optional ``torch.Generator`` for the Hutchinson probes.

    Returns:
        ``(f(x), div)`` with ``f(x): (B, *event)`` and ``div: (B,)``.

    Raises:
        ValueError: on an unknown ``method``/``noise``, ``num_probes < 1``, badly shaped ``probes``
            or an ``f`` whose output is not shaped like ``x``.

    References:
        Chen et al. (2018), Neural Ordinary Differential Equations, arXiv:1806.07366.
        Grathwohl et al. (2019), FFJORD, arXiv:1810.01367.
        Hutchinson (1989), A stochastic estimator of the trace of the influence matrix.

    Example:
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> out, div = divergence(lambda z: z @ A.T, torch.randn(5, 2))
        >>> div.tolist()
        [5.0, 5.0, 5.0, 5.0, 5.0]
    """
    if not callable(f):
        raise TypeError(f"f must be a callable (B, *event) -> (B, *event), got {type(f).__name__}")
    check_tensor("x", x, min_ndim=2, finite=False)
    check_choice("method", method, DIVERGENCE_METHODS)
    check_choice("noise", noise, PROBE_NOISES)
    num_probes = check_int("num_probes", num_probes, minimum=1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    check_bool("create_graph", create_graph)
    if probes is not None:
        if method != "hutchinson":
            raise ValueError(f"probes are only used with method='hutchinson', got method={method!r}")
        check_tensor("probes", probes, finite=False)
        if tuple(probes.shape) == tuple(x.shape):
            probes = probes.unsqueeze(0)
        elif probes.dim() != x.dim() + 1 or tuple(probes.shape[1:]) != tuple(x.shape):
            raise ValueError(
                f"probes must have shape {tuple(x.shape)} or (num_probes, {', '.join(map(str, x.shape))}), "
                f"got {tuple(probes.shape)}"
            )
        probes = probes.to(dtype=x.dtype, device=x.device)
    elif method == "hutchinson":
        probes = sample_probes(x, num_probes=num_probes, noise=noise, generator=generator)

    def run() -> tuple[Tensor, Tensor]:
        out, vjp_fn = torch.func.vjp(f, x)
        check_output_shape("f", out, x.shape)
        if method == "exact":
            div = _exact_trace(vjp_fn, x, chunk_size)
        else:
            div = _hutchinson(vjp_fn, probes, chunk_size)
        return out, div

    if create_graph:
        return run()
    # torch.func.vjp differentiates f internally even under no_grad; no_grad only stops the outer graph.
    with torch.no_grad():
        out, div = run()
    return out.detach(), div.detach()


def divergence_fn(
    method: str = "exact",
    *,
    noise: str = "rademacher",
    num_probes: int = 1,
    create_graph: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Tensor, Tensor]]:
    """Bind the options of :func:`divergence` once; returns ``g(f, x, probes=None) -> (f(x), div)``.

    Useful for an ODE right-hand side that is handed the estimator as one object.

    Example:
        >>> div = divergence_fn("hutchinson", num_probes=2)
        >>> out, d = div(lambda z: 3 * z, torch.randn(4, 3))
        >>> torch.allclose(d, torch.full((4,), 9.0))
        True
    """
    check_choice("method", method, DIVERGENCE_METHODS)
    check_choice("noise", noise, PROBE_NOISES)
    check_int("num_probes", num_probes, minimum=1)

    def bound(f: VectorField, x: Tensor, probes: Tensor | None = None, **kwargs: Any) -> tuple[Tensor, Tensor]:
        return divergence(
            f,
            x,
            method=method,
            noise=noise,
            num_probes=num_probes,
            probes=probes,
            create_graph=create_graph,
            chunk_size=chunk_size,
            **kwargs,
        )

    return bound
