"""Objective terms shared by the learning rules: a flow's pre-training loss and its MAML loss.

A term owns its rollouts and, on its first evaluation, records the "old" action distributions
(detached), so every later evaluation returns ``(loss, KL(old || current))`` for the trust region.
Evaluations recompute everything from the policy's current parameters, which is what TRPO's line
search needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.distributions import Normal

from omnirl.maml import adapt_tasks, flow_params
from omnirl.pg import (
    TASK_DIMS,
    PGBatch,
    TaskBatch,
    batch_surrogate,
    detached_dist,
    distill_loss,
    mean_kl,
    policy_dist,
    task_dist,
    task_surrogate,
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
