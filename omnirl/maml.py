"""Functional MAML (Finn et al. 2017): the inner step returns a new parameter dict.

``theta' = theta - alpha * grad_theta L(S; theta)``, with ``create_graph=not first_order`` so the
outer loss differentiates through the inner step (second order) unless asked not to. The policy
is never mutated: it is evaluated with parameter dicts through ``torch.func.functional_call``.

References:
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks."
    ICML 2017.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from omnirl.pg import Params, PGBatch, pg_surrogate, policy_dist


def flow_params(policy: torch.nn.Module, flow: str | None) -> dict[str, torch.Tensor]:
    """The live parameters ``flow`` uses, by name (gradients flow to the module's parameters)."""
    named = dict(policy.named_parameters())
    return {name: named[name] for name in policy.flow_parameter_names(flow)}


def inner_step(
    policy: torch.nn.Module,
    params: Params,
    support: PGBatch,
    flow: str | None,
    lr: float,
    first_order: bool = False,
    ratio_cap: float | None = None,
) -> dict[str, torch.Tensor]:
    """One policy-gradient step on the support episodes: ``theta - lr * grad L_pg(support; theta)``.

    Args:
        policy: the policy module (evaluated functionally).
        params: the parameters to adapt (the flow's); they must require grad.
        support: one task's support episodes.
        flow: the flow whose loss is taken.
        lr: inner learning rate alpha.
        first_order: treat the gradient as a constant (first-order MAML).
        ratio_cap: truncate importance ratios (data from another policy).

    Returns:
        The adapted parameters, a new dict; differentiable w.r.t. ``params`` unless first order.
    """
    # Gradients are needed even when the caller evaluates under no_grad (TRPO's line search).
    with torch.enable_grad():
        loss = pg_surrogate(policy_dist(policy, params, support.obs_TNO, flow), support, ratio_cap)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        return {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def adapt(
    policy: torch.nn.Module,
    params: Params,
    support: PGBatch,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
    ratio_cap: float | None = None,
) -> dict[str, torch.Tensor]:
    """``len(lrs)`` inner steps on the same support episodes, step i with rate ``lrs[i]``."""
    adapted = dict(params)
    for lr in lrs:
        adapted = inner_step(policy, adapted, support, flow, lr, first_order, ratio_cap)
    return adapted


def adapt_per_task(
    policy: torch.nn.Module,
    params: Params,
    support: PGBatch,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
    ratio_cap: float | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Adapt ``params`` separately to each task of ``support``; one dict per task."""
    return [
        adapt(policy, params, support.task(b), flow, lrs, first_order, ratio_cap)
        for b in range(support.num_tasks)
    ]


def detached(params: Params) -> dict[str, torch.Tensor]:
    """Leaf copies that require grad: a starting point for adaptation without outer gradients."""
    return {name: p.detach().requires_grad_() for name, p in params.items()}
