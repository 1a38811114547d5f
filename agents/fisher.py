"""The structured KL-Hessian product of a MAML term: ``sum_b J_b^T F_b J_b``, no third derivatives.

The trust region of MAML-TRPO needs products with the Hessian of the KL through the inner step.
Differentiating the second-order graph twice costs third derivatives; this module builds the
same product at the step's start from two Hessian-vector products of the inner loss and one
Fisher product per task, all tasks at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.distributions import Normal

from omnirl.functional import Params, flow_params, task_params
from omnirl.optim import Product, Vector, gradient_product, kl_hessian_product
from omnirl.pg import TASK_DIMS, TaskBatch, every_step, mean_kl, task_dist, task_surrogate

if TYPE_CHECKING:
    from omnirl.agents.objective import MetaTerm


def meta_fisher_product(
    term: MetaTerm,
    policy: torch.nn.Module,
    old: Normal,
    stride: int = 1,
    adapted: Params | None = None,
) -> Product | None:
    """``v -> H v`` for the Hessian of ``term``'s KL through the inner step, at the start.

    ``term`` is a :class:`~omnirl.agents.objective.MetaTerm` and ``old`` its old policy.

    With ``theta'_b = theta - alpha grad L(S_b; theta)`` and ``J_b = I - alpha H_Sb`` its Jacobian,
    the KL Hessian at the starting parameters is ``sum_b J_b^T F_b J_b`` (F_b the
    KL's Hessian in ``theta'_b``): the term with the inner step's second derivatives is
    multiplied by ``d KL / d theta'``, which is zero there. So a product needs two
    Hessian-vector products of the inner loss and one Fisher product, instead of
    differentiating the whole second-order graph again (third derivatives). ``None``
    (generic route) for more than one inner step.

    With ``stride > 1`` the point stays exact and only the averages are estimated: every
    task is adapted on its *full* support, so ``theta'_b`` is the point the old policy was
    recorded at (the KL and its gradient are zero there), while ``F_b`` averages over every
    ``stride``-th query step and ``H_Sb`` over every ``stride``-th support step. Adapting on
    the strided support instead would move ``theta'_b`` and take the curvature elsewhere.

    ``adapted``: the ``theta'_b`` of the step's start when the caller has them (the
    objective's first evaluation); the full support's gradient is then computed only where
    its graph is needed (second order with ``stride`` 1).
    """
    if len(term.inner_lrs) != 1:
        return None
    lr, second_order = term.inner_lrs[0], not term.first_order
    params = flow_params(policy, term.flow)
    theta_B = task_params(params, term.support.num_tasks)

    def support_grads(support: TaskBatch, create_graph: bool) -> tuple[torch.Tensor, ...]:
        dist = task_dist(policy, theta_B, support.obs_BTKO, term.flow)
        loss = task_surrogate(dist, support, term.ratio_cap).sum()
        return torch.autograd.grad(loss, list(theta_B.values()), create_graph=create_graph)

    full_grads_B = None
    if adapted is None or (second_order and stride == 1):
        full_grads_B = support_grads(term.support, create_graph=second_order and stride == 1)
        adapted = {
            name: p - lr * g for (name, p), g in zip(theta_B.items(), full_grads_B, strict=True)
        }
    adapted = {name: p.detach().requires_grad_() for name, p in adapted.items()}
    query = term.query.every(stride)
    dist = task_dist(policy, adapted, query.obs_BTKO, term.flow)
    old = every_step(old, stride, time_axis=1)
    kl = mean_kl(old, dist, query.valid_BTK, TASK_DIMS).mean()
    fisher = kl_hessian_product(kl, adapted)

    inner_hessian = None  # first order: J_b = I
    if second_order:
        # H_Sb v_b for every task at once, from the (strided) support's gradient graph.
        strided = term.support.every(stride)
        grads_B = support_grads(strided, create_graph=True) if stride > 1 else full_grads_B
        inner_hessian = gradient_product(grads_B, theta_B)

    def jacobian(v_B: Vector) -> Vector:  # J_b v_b = v_b - alpha H_Sb v_b (J symmetric)
        if inner_hessian is None:
            return v_B
        hv = inner_hessian(v_B)
        return {name: v_B[name] - lr * hv[name] for name in v_B}

    def product(v: Vector) -> Vector:
        v_B = {name: v[name].expand_as(p) for name, p in theta_B.items()}
        out_B = jacobian(fisher(jacobian(v_B)))
        return {name: t.sum(0) for name, t in out_B.items()}

    return product
