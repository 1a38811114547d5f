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
from typing import Any

import torch
from torch.func import functional_call, vmap

from omnirl.pg import (
    Params,
    TaskBatch,
    task_dist,
    task_surrogate,
)


def flow_params(policy: torch.nn.Module, flow: str | None) -> dict[str, torch.Tensor]:
    """The live parameters ``flow`` uses, by name (gradients flow to the module's parameters)."""
    named = dict(policy.named_parameters())
    return {name: named[name] for name in policy.flow_parameter_names(flow)}


def task_params(params: Params, num_tasks: int) -> dict[str, torch.Tensor]:
    """One copy of ``params`` per task, ``(B, ...)``, still differentiable w.r.t. ``params``."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


def unstack(params_B: Params) -> list[dict[str, torch.Tensor]]:
    """Per-task parameter dicts from stacked ``(B, ...)`` ones."""
    num_tasks = next(iter(params_B.values())).shape[0]
    return [{name: p[b] for name, p in params_B.items()} for b in range(num_tasks)]


def inner_step_tasks(
    policy: torch.nn.Module,
    params_B: Params,
    support: TaskBatch,
    flow: str | None,
    lr: float,
    first_order: bool = False,
    ratio_cap: float | None = None,
) -> dict[str, torch.Tensor]:
    """One policy-gradient step per task, ``theta_b - lr * grad L_pg(S_b; theta_b)``, all at once.

    Task b's loss depends only on its own copy ``params_B[k][b]``, so one backward pass of the
    summed losses yields every task's own gradient.
    """
    with torch.enable_grad():
        dist = task_dist(policy, params_B, support.obs_BTKO, flow)
        losses_B = task_surrogate(dist, support, ratio_cap)
        return sgd_step(params_B, losses_B.sum(), lr, first_order)


def sgd_step(
    params: Params, loss: torch.Tensor, lr: float, first_order: bool = False
) -> dict[str, torch.Tensor]:
    """The generic inner step: ``{name: p - lr * dloss/dp}``, a new dict (``params`` untouched).

    With stacked per-task copies (:func:`task_params`) and ``loss`` the sum of the per-task
    losses, every task gets its own gradient from one backward pass. ``create_graph=not
    first_order``: the outer loss differentiates through the step (second order) unless asked
    not to. The RL inner step above and the supervised ones (``omnirl.regression``) both use it.
    """
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return {name: p - lr * g for (name, p), g in zip(params.items(), grads, strict=True)}


def task_call(
    module: torch.nn.Module, params_B: Params, inputs_B: torch.Tensor, **kwargs: Any
) -> Any:
    """``module(inputs_B[b], **kwargs)`` with parameters ``{k: v[b]}`` for every task b at once.

    One ``torch.func.vmap`` of ``functional_call`` over the leading task axis (the supervised
    counterpart of :func:`omnirl.pg.task_dist`); ``params_B`` may cover only some parameters.
    """

    def one_task(params: Params, inputs: torch.Tensor) -> Any:
        return functional_call(module, dict(params), (inputs,), kwargs)

    return vmap(one_task)(dict(params_B), inputs_B)


def adapt_tasks(
    policy: torch.nn.Module,
    params: Params,
    support: TaskBatch,
    flow: str | None,
    lrs: Sequence[float],
    first_order: bool = False,
    ratio_cap: float | None = None,
) -> dict[str, torch.Tensor]:
    """Adapt ``params`` to every task of ``support``: ``len(lrs)`` steps, step i at ``lrs[i]``.

    Returns:
        Stacked adapted parameters, ``(B, ...)`` per name.
    """
    with torch.enable_grad():  # the copies must carry gradient even under no_grad
        adapted = task_params(params, support.num_tasks)
        for lr in lrs:
            adapted = inner_step_tasks(policy, adapted, support, flow, lr, first_order, ratio_cap)
        return adapted


def detached(params: Params) -> dict[str, torch.Tensor]:
    """Leaf copies that require grad: a starting point for adaptation without outer gradients."""
    return {name: p.detach().requires_grad_() for name, p in params.items()}
