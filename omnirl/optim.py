"""Conjugate gradient and the TRPO step (natural gradient with a KL trust region).

References:
    Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization." ICML 2015.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from omnirl.timing import timed


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


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite A given only ``x -> A x``.

    Starts from ``x = 0``; stops after ``iters`` iterations or when ``||r||^2 < residual_tol``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / p.dot(ap)
        x += alpha * p
        r -= alpha * ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def hessian_vector_product(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H + damping I) v`` with H the Hessian of ``kl`` w.r.t. ``params``.

    The gradient of ``kl`` (with its graph) is built once; each product is then one backward
    pass over it, which matters when ``kl`` comes from an expensive re-adaptation.
    """
    grad_kl = flat_grad(kl, params, create_graph=True)

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
    fvp_fn: Callable[[], Callable[[torch.Tensor], torch.Tensor] | None] | None = None,
) -> dict[str, float]:
    """One TRPO update of ``params`` in place.

    ``g = grad L``; ``s = F^-1 g`` by conjugate gradient with ``F`` the KL Hessian (Fisher);
    the full step ``s / sqrt(s^T F s / (2 max_kl))`` puts the quadratic KL model at ``max_kl``;
    a backtracking line search over fractions ``ratio^k`` accepts the first step that lowers the
    loss with ``KL <= max_kl``. If none does, the parameters are restored exactly.

    Args:
        params: leaf tensors updated in place.
        loss_fn: the surrogate loss to minimise at the current parameters (with graph when
            gradients are enabled; the line search calls it under ``no_grad``).
        kl_fn: mean ``KL(old || current)``, zero at the starting parameters. Called right after
            ``loss_fn`` at the same parameters, so the two may share work.
        max_kl: trust-region radius.
        cg_iters: conjugate-gradient iterations.
        cg_damping: added to the Hessian's diagonal.
        ls_max_steps: line-search candidates.
        ls_backtrack_ratio: step shrink factor per candidate.
        fvp_fn: builds ``v -> H v`` for the KL Hessian H at the starting parameters by a
            cheaper route than differentiating ``kl_fn`` twice (see
            ``omnirl.agents.terms.MetaTerm.fisher_product``); returning None falls back to
            :func:`hessian_vector_product`.

    Returns:
        ``loss_before``, ``loss_after``, ``kl``, ``grad_norm``, ``step_fraction`` (0 if
        rejected), ``accepted`` (1/0) and ``ls_steps``.
    """
    params = list(params)
    old = parameters_to_vector(params).detach().clone()
    with timed("trpo_gradient"):
        loss = loss_fn()
        kl = kl_fn()
        # retain_graph: the KL may share the loss's graph (the same inner-step adaptation).
        grad = flat_grad(loss, params, retain_graph=True)
    loss_before = float(loss.detach())
    metrics = {
        "loss_before": loss_before,
        "loss_after": loss_before,
        "kl": 0.0,
        "grad_norm": float(grad.norm()),
        "step_fraction": 0.0,
        "accepted": 0.0,
        "ls_steps": 0.0,
    }
    if not torch.isfinite(grad).all() or not grad.any():
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
    full_step = step_dir / torch.sqrt(shs / max_kl)
    with timed("line_search"), torch.no_grad():
        for k in range(ls_max_steps):
            fraction = ls_backtrack_ratio**k
            vector_to_parameters(old - fraction * full_step, params)
            new_loss, new_kl = float(loss_fn()), float(kl_fn())
            metrics["ls_steps"] = k + 1.0
            if math.isfinite(new_loss) and new_loss < loss_before and new_kl <= max_kl:
                metrics.update(loss_after=new_loss, kl=new_kl, step_fraction=fraction, accepted=1.0)
                return metrics
        vector_to_parameters(old, params)
    return metrics
