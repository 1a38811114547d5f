"""Objective terms shared by the learning rules: a flow's pre-training loss and its MAML loss.

A term owns its rollouts and, on its first evaluation, records the "old" action distributions
(detached), so every later evaluation returns ``(loss, KL(old || current))`` for the trust region.
Evaluations recompute everything from the policy's current parameters, which is what TRPO's line
search needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.distributions import Normal

from omnirl.maml import adapt_tasks, flow_params, task_params
from omnirl.pg import (
    TASK_DIMS,
    PGBatch,
    TaskBatch,
    batch_surrogate,
    detached_dist,
    distill_loss,
    every_step,
    mean_kl,
    policy_dist,
    task_dist,
    task_surrogate,
)

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


@dataclass
class TermValue:
    """One evaluation of a term: the loss to minimise, its KL to the old policy, what to log."""

    loss: torch.Tensor
    kl: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class PretrainTerm:
    """``L_pg(P; theta, flow)`` (+ ``distill_weight * R`` against teacher means on P).

    Attributes:
        flow: the flow trained (``None`` for a plain policy).
        batch: the episodes P.
        ratio_cap: truncate importance ratios (P collected by another flow).
        teacher_mean: the EMA teacher's action means on P (for self-distillation), or None.
        distill_weight: lambda.
    """

    flow: str | None
    batch: PGBatch
    ratio_cap: float | None = None
    teacher_mean: torch.Tensor | None = None
    distill_weight: float = 0.0
    _old: Normal | None = None

    def __call__(self, policy: torch.nn.Module, create_graph: bool) -> TermValue:
        """Loss and KL at the policy's current parameters."""
        dist = policy_dist(policy, None, self.batch.obs_TNO, self.flow)
        if self._old is None:
            self._old = detached_dist(dist)
        loss = batch_surrogate(dist, self.batch, self.ratio_cap)
        value = TermValue(loss, mean_kl(self._old, dist, self.batch.valid_TN), {"pg": loss})
        if self.teacher_mean is not None:
            reg = distill_loss(dist.loc, self.teacher_mean, self.batch.valid_TN)
            value.loss = loss + self.distill_weight * reg
            value.metrics["distill"] = reg
        return value

    def fisher_product(self, policy: torch.nn.Module, stride: int = 1) -> Product:
        """``v -> H v`` for the Hessian of this term's KL at the starting parameters.

        Estimated on every ``stride``-th time step (see ``TrainConfig.fvp_stride``).
        """
        params = flow_params(policy, self.flow)
        batch, old = self.batch.every(stride), every_step(self._old, stride)
        dist = policy_dist(policy, None, batch.obs_TNO, self.flow)
        return kl_hessian_product(mean_kl(old, dist, batch.valid_TN), params)


@dataclass
class MetaTerm:
    """``mean_b L_pg(Q_b; theta'_b, flow)`` with ``theta'_b`` adapted on ``S_b`` (MAML).

    Second order when ``create_graph`` and not ``first_order``: the loss differentiates through
    the inner step. With ``teacher_means`` (``(B, T, K, A)``, the EMA teacher adapted on each
    S_b) it adds ``distill_weight * R_meta``. All tasks are adapted in one batched pass.
    """

    flow: str | None
    support: TaskBatch
    query: TaskBatch
    inner_lrs: Sequence[float]
    first_order: bool = False
    ratio_cap: float | None = None
    teacher_means: torch.Tensor | None = None
    distill_weight: float = 0.0
    _old: Normal | None = None

    def __call__(self, policy: torch.nn.Module, create_graph: bool) -> TermValue:
        """Loss and KL at the policy's current parameters (re-adapting every task)."""
        adapted = adapt_tasks(
            policy,
            flow_params(policy, self.flow),
            self.support,
            self.flow,
            self.inner_lrs,
            first_order=self.first_order or not create_graph,
            ratio_cap=self.ratio_cap,
        )
        dist = task_dist(policy, adapted, self.query.obs_BTKO, self.flow)
        if self._old is None:
            self._old = detached_dist(dist)
        valid = self.query.valid_BTK
        loss = task_surrogate(dist, self.query, self.ratio_cap).mean()
        kl = mean_kl(self._old, dist, valid, TASK_DIMS).mean()
        value = TermValue(loss, kl, {"pg": loss})
        if self.teacher_means is not None:
            reg = distill_loss(dist.loc, self.teacher_means, valid, TASK_DIMS).mean()
            value.loss = loss + self.distill_weight * reg
            value.metrics["distill"] = reg
        return value

    def fisher_product(self, policy: torch.nn.Module, stride: int = 1) -> Product | None:
        """``v -> H v`` for the Hessian of the KL through the inner step, at the start.

        With ``theta'_b = theta - alpha grad L(S_b; theta)`` and ``J_b = I - alpha H_Sb`` its
        Jacobian, the KL Hessian at the starting parameters is ``sum_b J_b^T F_b J_b`` (F_b the
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
        """
        if len(self.inner_lrs) != 1:
            return None
        lr, second_order = self.inner_lrs[0], not self.first_order
        params = flow_params(policy, self.flow)
        theta_B = task_params(params, self.support.num_tasks)

        def support_grads(support: TaskBatch, create_graph: bool) -> tuple[torch.Tensor, ...]:
            dist = task_dist(policy, theta_B, support.obs_BTKO, self.flow)
            loss = task_surrogate(dist, support, self.ratio_cap).sum()
            return torch.autograd.grad(loss, list(theta_B.values()), create_graph=create_graph)

        full_grads_B = support_grads(self.support, create_graph=second_order and stride == 1)
        adapted = {
            name: (p - lr * g).detach().requires_grad_()
            for (name, p), g in zip(theta_B.items(), full_grads_B, strict=True)
        }
        query = self.query.every(stride)
        dist = task_dist(policy, adapted, query.obs_BTKO, self.flow)
        old = every_step(self._old, stride, time_axis=1)
        kl = mean_kl(old, dist, query.valid_BTK, TASK_DIMS).mean()
        fisher = kl_hessian_product(kl, adapted)

        inner_hessian = None  # first order: J_b = I
        if second_order:
            # H_Sb v_b for every task at once, from the (strided) support's gradient graph.
            strided = self.support.every(stride)
            grads_B = full_grads_B if stride == 1 else support_grads(strided, create_graph=True)
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
