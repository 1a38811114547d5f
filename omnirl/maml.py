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

from omnirl.functional import sgd_step, task_params
from omnirl.pg import Params, TaskBatch, task_dist, task_surrogate


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
