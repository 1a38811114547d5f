"""Conjugate gradient and the TRPO step (natural gradient with a KL trust region).

All functions work on flat vectors: the parameters ``theta`` of a list of leaf tensors are
concatenated in order (:func:`torch.nn.utils.parameters_to_vector`), and so are gradients.

References:
    Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization." ICML 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.utils import parameters_to_vector

from omnirl.timing import timed

MatVec = Callable[[torch.Tensor], torch.Tensor]
Vector = dict[str, torch.Tensor]
Product = Callable[[Vector], Vector]


def gradient_product(grads: Sequence[torch.Tensor], params: Vector) -> Product:
    """``v -> d(grads . v) / d params``, one backward pass per product.

    A Hessian-vector product from gradients that were built with ``create_graph=True``.
    """

    def product(v: Vector) -> Vector:
        dot = sum((g * v[name]).sum() for name, g in zip(params, grads, strict=True))
        out = torch.autograd.grad(dot, list(params.values()), retain_graph=True)
        return dict(zip(params, out, strict=True))

    return product


def kl_hessian_product(kl: torch.Tensor, params: Vector) -> Product:
    """``v -> (d^2 kl / d params^2) v`` by double backward; the gradient graph is built once."""
    return gradient_product(
        torch.autograd.grad(kl, list(params.values()), create_graph=True), params
    )


def flat_grad(
    output: torch.Tensor,
    params: Sequence[torch.Tensor],
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> torch.Tensor:
    """``d output / d params`` as one flat vector (zeros for parameters ``output`` ignores)."""
    grads = torch.autograd.grad(
        output,
        list(params),
        create_graph=create_graph,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )


@torch.no_grad()
def assign_flat(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy consecutive slices of ``flat`` into ``params``, in place.

    Unlike :func:`torch.nn.utils.vector_to_parameters`, which swaps each parameter's ``.data``
    for a view of ``flat``, this writes into the parameters' own storage, so anything holding
    them (views, optimiser state, autograd's version counters) sees an ordinary in-place update.
    """
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, the parameters {offset}")


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite A given only ``x -> A x``.

    Standard CG from ``x_0 = 0`` (``r_0 = p_0 = b``)::

        alpha_k = r_k.r_k / p_k.A p_k
        x_{k+1} = x_k + alpha_k p_k,   r_{k+1} = r_k - alpha_k A p_k
        p_{k+1} = r_{k+1} + (r_{k+1}.r_{k+1} / r_k.r_k) p_k

    In exact arithmetic it solves an n-dimensional system in at most n iterations.

    Args:
        matvec: ``x -> A x``; called once per iteration.
        b: right-hand side, 1-D.
        iters: maximum number of iterations.
        residual_tol: stop once the squared residual ``r.r`` is below this.

    Returns:
        The approximate solution ``x``. Should the curvature ``p.A p`` along a search direction
        be non-positive or non-finite (A not positive definite there, in floating point), the
        iterate reached so far is returned (``0`` if it happens at once) instead of dividing by it.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        pap = p.dot(ap)
        if not pap > 0:  # also catches NaN
            break
        alpha = rr / pap
        x += alpha * p
        r -= alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def hessian_vector_product(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float
) -> MatVec:
    """``v -> (H + damping I) v`` with ``H`` the Hessian of ``kl`` w.r.t. ``params``.

    ``H v = grad_theta (grad_theta kl . v)`` (Pearlmutter's trick). The gradient of ``kl`` (with
    its graph) is built once here; each product is then one backward pass over it, which matters
    when ``kl`` comes from an expensive re-adaptation (MAML's inner steps).

    Args:
        kl: a scalar with graph (e.g. the mean KL between the old and the current policy).
        params: the leaf tensors to differentiate by.
        damping: added to the Hessian's diagonal (keeps CG well posed where ``H`` is singular).

    Returns:
        The product as a function of a flat vector ``v`` of the parameters' total size.
    """
    grad_kl = flat_grad(kl, params, create_graph=True)
    if not grad_kl.requires_grad:  # kl is at most linear in params: its Hessian is zero
        return lambda v: damping * v

    def product(v: torch.Tensor) -> torch.Tensor:
        return flat_grad(grad_kl.dot(v), params, retain_graph=True) + damping * v

    return product


def trpo_step(
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    kl_fn: Callable[[], torch.Tensor],
    max_kl: float,
    cg_iters: int = 10,
    cg_damping: float = 1e-5,
    ls_max_steps: int = 15,
    ls_backtrack_ratio: float = 0.8,
    fvp_fn: Callable[[], MatVec | None] | None = None,
) -> dict[str, float]:
    """One TRPO update of ``params`` in place.

    With ``g = grad L(theta_old)`` and ``F`` the Hessian of the KL at ``theta_old`` (the Fisher
    information) plus ``cg_damping * I``::

        s     = F^-1 g                        (conjugate gradient, cg_iters iterations)
        shs   = s.F s / 2
        step  = s / sqrt(shs / max_kl)        (the quadratic KL model is max_kl at the full step)
        theta = theta_old - ratio^k step      k = 0, 1, ..., ls_max_steps - 1

    The backtracking line search accepts the first candidate with ``L < L(theta_old)`` and
    ``KL <= max_kl``, both measured exactly (under ``no_grad``). If none passes, the parameters
    are restored bit for bit. A zero or non-finite gradient, a non-finite loss or a non-positive
    ``shs`` make no step at all; the parameters never become NaN through this function. If
    ``loss_fn`` or ``kl_fn`` raises during the line search, the parameters are restored first.

    Args:
        params: leaf tensors with ``requires_grad`` (e.g. ``list(module.parameters())``),
            updated in place.
        loss_fn: the surrogate loss to minimise at the current parameters (with graph when
            gradients are enabled; the line search calls it under ``no_grad``).
        kl_fn: mean ``KL(old || current)``, zero at the starting parameters, with graph when
            gradients are enabled. Always called right after ``loss_fn`` at the same parameters,
            so the two may share work.
        max_kl: trust-region radius, > 0.
        cg_iters: conjugate-gradient iterations.
        cg_damping: added to the Hessian's diagonal.
        ls_max_steps: line-search candidates.
        ls_backtrack_ratio: step shrink factor per candidate, in (0, 1).
        fvp_fn: builds ``v -> H v`` for the KL Hessian H at the starting parameters by a
            cheaper route than differentiating ``kl_fn`` twice (the RL agents'
            ``MetaTerm.fisher_product``, ``agents/objective.py``); returning None falls back to
            :func:`hessian_vector_product`. ``cg_damping`` is added either way.

    Returns:
        Floats: ``loss`` (at the starting parameters); ``loss_after`` and ``kl`` at the final
        parameters (the starting ones if rejected); ``grad_norm``; ``step_fraction``
        (``ratio^k``, 0 if rejected); ``accepted`` (1/0); ``ls_steps`` (line-search candidates
        evaluated).

    Raises:
        ValueError: for ``max_kl <= 0`` or ``ls_backtrack_ratio`` outside (0, 1).

    References:
        Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization." ICML 2015.
    """
    if not max_kl > 0:
        raise ValueError(f"max_kl must be > 0, got {max_kl}")
    if not 0 < ls_backtrack_ratio < 1:
        raise ValueError(f"ls_backtrack_ratio must be in (0, 1), got {ls_backtrack_ratio}")
    params = list(params)
    old = parameters_to_vector(params).detach().clone()
    with timed("trpo_gradient"):
        loss = loss_fn()
        kl = kl_fn()
        # retain_graph: the KL may share the loss's graph (the same inner-step adaptation).
        grad = flat_grad(loss, params, retain_graph=True)
    loss_before = float(loss.detach())
    metrics = {
        "loss": loss_before,
        "loss_after": loss_before,
        "kl": float(kl.detach()),
        "grad_norm": float(grad.norm()),
        "step_fraction": 0.0,
        "accepted": 0.0,
        "ls_steps": 0.0,
    }
    if not math.isfinite(loss_before) or not torch.isfinite(grad).all() or not grad.any():
        return metrics
    with timed("cg"):
        structured = fvp_fn() if fvp_fn is not None else None
        if structured is None:
            fvp = hessian_vector_product(kl, params, cg_damping)
        else:

            def fvp(v: torch.Tensor) -> torch.Tensor:
                return structured(v) + cg_damping * v

        step_dir = conjugate_gradient(fvp, grad, cg_iters)
        shs = 0.5 * step_dir.dot(fvp(step_dir))
    del loss, kl, fvp  # free the graphs before the line search
    if not torch.isfinite(shs) or shs <= 0:
        return metrics
    full_step = (step_dir / torch.sqrt(shs / max_kl)).detach()
    if not torch.isfinite(full_step).all():  # shs / max_kl can underflow to 0
        return metrics
    with timed("line_search"):
        fractions = [ls_backtrack_ratio**k for k in range(ls_max_steps)]
        _line_search(params, old, full_step, fractions, loss_fn, kl_fn, max_kl, metrics)
    return metrics


@torch.no_grad()
def _line_search(
    params: list[torch.Tensor],
    old: torch.Tensor,
    full_step: torch.Tensor,
    fractions: Sequence[float],
    loss_fn: Callable[[], torch.Tensor],
    kl_fn: Callable[[], torch.Tensor],
    max_kl: float,
    metrics: dict[str, float],
) -> None:
    """Try ``old - fraction * full_step`` in turn; fill ``metrics``; restore ``old`` if all fail."""
    try:
        for k, fraction in enumerate(fractions):
            assign_flat(params, old - fraction * full_step)
            new_loss, new_kl = float(loss_fn()), float(kl_fn())
            metrics["ls_steps"] = k + 1.0
            # Written so that NaN fails both tests.
            if new_loss < metrics["loss"] and new_kl <= max_kl:
                metrics.update(loss_after=new_loss, kl=new_kl, step_fraction=fraction, accepted=1.0)
                return
    except BaseException:
        assign_flat(params, old)  # never leave a half-tried candidate behind
        raise
    assign_flat(params, old)


def check_finite(value: torch.Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` if ``value`` is not finite (the trainer stops cleanly)."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(
            f"non-finite {what} ({float(value.detach())}); stopping before the update"
        )


def adam_step(
    optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: Sequence[torch.Tensor]
) -> float:
    """One step of ``optimizer`` (Adam, for every kind) on ``loss``; the gradient's norm.

    The outer step of the supervised learners and of ``outer_optimizer: adam`` in RL:
    ``zero_grad``, ``backward``, then the step, after checking that the loss is finite.

    Raises:
        FloatingPointError: a non-finite loss; nothing is updated.
    """
    check_finite(loss, "outer loss")
    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    optimizer.step()
    return float(grad_norm)
