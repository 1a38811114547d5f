"""The RL agents' outer objective: its terms, the trust region, and the outer step on it.

One iteration of a rule (``agents/maml.py`` for MAML-TRPO): it collects its rollouts and builds
its terms (:class:`PretrainTerm`, a flow's pre-training loss on P; :class:`MetaTerm`, a flow's
MAML loss on Q_b after adapting on S_b). :class:`Objective` weighs them and evaluates them at the
step's start, which fixes the trust region's "old" policy; :func:`trpo_update` (the gradient
there, conjugate gradient on the structured KL-Hessian products, a line search re-evaluating the
objective: :func:`omnirl.optim.trpo_step`) or :func:`adam_update` takes the one outer step.

References:
    Schulman, Levine, Moritz, Jordan, Abbeel. "Trust Region Policy Optimization." ICML 2015.
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks."
    ICML 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch.distributions import Normal

from omnirl.agents.fisher import meta_fisher_product
from omnirl.functional import Params, flow_params
from omnirl.maml import adapt_tasks
from omnirl.optim import (
    MatVec,
    Product,
    adam_step,
    check_finite,
    kl_hessian_product,
    trpo_step,
)
from omnirl.pg import (
    TASK_DIMS,
    PGBatch,
    TaskBatch,
    batch_surrogate,
    detached_dist,
    every_step,
    mean_kl,
    policy_dist,
    policy_distill,
    task_dist,
    task_surrogate,
)
from omnirl.timing import timed


@dataclass
class TermValue:
    """One evaluation of a term: the loss to minimise, its KL to the old policy, what to log."""

    loss: torch.Tensor
    kl: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Distill:
    """Omni-Training's self-distillation: ``weight * R`` towards the EMA ``teacher``'s policy.

    ``kind`` is the distance R (:data:`omnirl.schema.DISTILL_KINDS`, see
    :func:`omnirl.pg.policy_distill`); the teacher's distributions match the term's episodes.
    """

    teacher: Normal
    weight: float
    kind: str = "mean_sq"

    def add_to(self, value: TermValue, dist: Normal, valid: torch.Tensor, per_task: bool) -> None:
        """Adds ``weight * R`` to ``value.loss`` and logs ``R`` unweighted as ``distill``."""
        dims = TASK_DIMS if per_task else None
        reg = policy_distill(dist, self.teacher, valid, dims, self.kind).mean()
        value.loss = value.loss + self.weight * reg
        value.metrics["distill"] = reg


@dataclass(frozen=True)
class PretrainTerm:
    """``L_pg(P; theta, flow)`` (+ ``distill_weight * R`` against the EMA teacher on P).

    Attributes:
        flow: the flow trained (``None`` for a plain policy).
        batch: the episodes P.
        ratio_cap: truncate importance ratios (P collected by another flow).
        distill: self-distillation towards the EMA teacher's distributions on P, or None.
    """

    flow: str | None
    batch: PGBatch
    ratio_cap: float | None = None
    distill: Distill | None = None

    def distribution(self, policy: torch.nn.Module, create_graph: bool) -> Normal:
        """The flow's action distributions on P at the policy's current parameters, ``(T, N)``."""
        return policy_dist(policy, None, self.batch.obs_TNO, self.flow)

    def value(self, dist: Normal, old: Normal) -> TermValue:
        """Loss, ``KL(old || dist)`` and metrics (``pg``, ``distill``) for ``dist`` on P."""
        loss = batch_surrogate(dist, self.batch, self.ratio_cap)
        value = TermValue(loss, mean_kl(old, dist, self.batch.valid_TN), {"pg": loss})
        if self.distill is not None:
            self.distill.add_to(value, dist, self.batch.valid_TN, per_task=False)
        return value

    def fisher_product(self, policy: torch.nn.Module, old: Normal, stride: int = 1) -> Product:
        """``v -> H v`` for the Hessian of this term's KL at the starting parameters.

        Estimated on every ``stride``-th time step (see ``TrainConfig.fvp_stride``).
        """
        params = flow_params(policy, self.flow)
        batch, old = self.batch.every(stride), every_step(old, stride)
        dist = policy_dist(policy, None, batch.obs_TNO, self.flow)
        return kl_hessian_product(mean_kl(old, dist, batch.valid_TN), params)


@dataclass(frozen=True)
class MetaTerm:
    """``mean_b L_pg(Q_b; theta'_b, flow)`` with ``theta'_b`` adapted on ``S_b`` (MAML).

    Second order when ``create_graph`` and not ``first_order``: the loss differentiates through
    the inner step. With ``distill`` (towards ``(B, T, K, A)`` distributions of the EMA teacher
    adapted on each S_b) it adds ``lambda * R_meta``. All tasks are adapted in one batched pass.

    ``start``: the tasks' adapted parameters at the step's start, built by :meth:`adapt` with
    graph (the agent's :meth:`~omnirl.agents.base.Agent.adapt_at_start`, whose values it also
    collected Q with). The objective's first evaluation uses them instead of adapting again;
    they must come from the policy's parameters of that moment, with ``create_graph=True``.
    """

    flow: str | None
    support: TaskBatch
    query: TaskBatch
    inner_lrs: Sequence[float]
    first_order: bool = False
    ratio_cap: float | None = None
    distill: Distill | None = None
    start: Params | None = None

    def adapt(self, policy: torch.nn.Module, create_graph: bool) -> dict[str, torch.Tensor]:
        """Every task's parameters adapted on its S_b at the policy's current parameters."""
        return adapt_tasks(
            policy,
            flow_params(policy, self.flow),
            self.support,
            self.flow,
            self.inner_lrs,
            first_order=self.first_order or not create_graph,
            ratio_cap=self.ratio_cap,
        )

    def adapted_distribution(self, policy: torch.nn.Module, adapted: Params) -> Normal:
        """The adapted policies on their Q_b, ``(B, T, K)``."""
        return task_dist(policy, adapted, self.query.obs_BTKO, self.flow)

    def distribution(self, policy: torch.nn.Module, create_graph: bool) -> Normal:
        """Every task's adapted policy on its Q_b, ``(B, T, K)``, re-adapting on every S_b."""
        return self.adapted_distribution(policy, self.adapt(policy, create_graph))

    def value(self, dist: Normal, old: Normal) -> TermValue:
        """Loss, ``KL(old || dist)`` and metrics (``pg``, ``distill``), each the mean over tasks."""
        valid = self.query.valid_BTK
        loss = task_surrogate(dist, self.query, self.ratio_cap).mean()
        kl = mean_kl(old, dist, valid, TASK_DIMS).mean()
        value = TermValue(loss, kl, {"pg": loss})
        if self.distill is not None:
            self.distill.add_to(value, dist, valid, per_task=True)
        return value

    def fisher_product(
        self,
        policy: torch.nn.Module,
        old: Normal,
        stride: int = 1,
        adapted: Params | None = None,
    ) -> Product | None:
        """``v -> H v`` for the Hessian of the KL through the inner step, at the start.

        :func:`omnirl.agents.fisher.meta_fisher_product` (``None``, the generic route, for more
        than one inner step); ``adapted``: the start's adapted parameters, when known.
        """
        return meta_fisher_product(self, policy, old, stride, adapted)


Term = PretrainTerm | MetaTerm


class ObjectiveValue(NamedTuple):
    """The objective at some parameters: the loss, the trust region's KL, per-term metrics."""

    loss: torch.Tensor
    kl: torch.Tensor
    metrics: dict[str, torch.Tensor]


def flow_kl_weights(terms: dict[str, Term]) -> dict[str, float]:
    """The trust region's weight of each term's KL: the mean over flows of each flow's mean KL.

    E.g. omni's four terms (pre, meta, and the joint flow's two): 1/3, 1/3, 1/6, 1/6.
    """
    by_flow: dict[str | None, list[str]] = {}
    for key, term in terms.items():
        by_flow.setdefault(term.flow, []).append(key)
    return {key: 1.0 / (len(by_flow) * len(keys)) for keys in by_flow.values() for key in keys}


class Objective:
    """One iteration's outer objective ``sum_k w_k J_k`` and its trust region, for one policy.

    Built once per iteration, for one outer step. Construction evaluates it at the policy's
    current parameters, the step's start: :attr:`start` (with graph when gradients are enabled;
    the step's gradient is taken there) and :attr:`old`, every term's action distributions
    there, detached: the trust region's "old" policy, fixed from then on. Calls evaluate it
    afresh at the parameters of the moment (TRPO's line search moves them in place).

    Args:
        policy: the policy the terms evaluate (its parameters are the outer step's).
        terms: the objective's terms by name (``pre``, ``meta``, ``joint_pre``, ``joint_meta``);
            the names prefix their metrics.
        loss_weights: weight of each term in the loss (1 for terms not named); the trust
            region's KL weighs the terms by :func:`flow_kl_weights`.
    """

    def __init__(
        self,
        policy: torch.nn.Module,
        terms: dict[str, Term],
        loss_weights: dict[str, float] | None = None,
    ):
        self.policy = policy
        self.params = list(policy.parameters())
        self.terms = dict(terms)
        self.loss_weights = {key: (loss_weights or {}).get(key, 1.0) for key in self.terms}
        self.kl_weights = flow_kl_weights(self.terms)
        with timed("objective"):
            dists = self._start_distributions(torch.is_grad_enabled())
        self.old = {key: detached_dist(dist) for key, dist in dists.items()}
        self.start = self._value(dists)  # its KL is 0, and so is the KL's gradient

    def __call__(self, create_graph: bool) -> ObjectiveValue:
        """Loss, KL to the old policy and metrics at the policy's current parameters.

        ``create_graph``: differentiate through the inner steps (second-order MAML); False for
        evaluations without gradients (the line search). Metrics: ``<term>_<metric>`` (``pg``,
        ``distill``) and ``<term>_kl``.
        """
        return self._value(self._distributions(create_graph))

    def _distributions(self, create_graph: bool) -> dict[str, Normal]:
        return {key: t.distribution(self.policy, create_graph) for key, t in self.terms.items()}

    def _start_distributions(self, create_graph: bool) -> dict[str, Normal]:
        """The first evaluation: meta terms adapt once (or bring ``start``), kept for the FVP."""
        self._start_adapted: dict[str, Params] = {}
        dists = {}
        for key, term in self.terms.items():
            if isinstance(term, MetaTerm):
                adapted = (
                    term.start if term.start is not None else term.adapt(self.policy, create_graph)
                )
                self._start_adapted[key] = {name: p.detach() for name, p in adapted.items()}
                dists[key] = term.adapted_distribution(self.policy, adapted)
            else:
                dists[key] = term.distribution(self.policy, create_graph)
        return dists

    def _value(self, dists: dict[str, Normal]) -> ObjectiveValue:
        values = {key: t.value(dists[key], self.old[key]) for key, t in self.terms.items()}
        weights, kl_weights = self.loss_weights, self.kl_weights
        loss = sum((weights[key] * v.loss for key, v in values.items()), torch.zeros(()))
        kl = sum((kl_weights[key] * v.kl for key, v in values.items()), torch.zeros(()))
        metrics = {f"{key}_{m}": t for key, v in values.items() for m, t in v.metrics.items()}
        metrics.update({f"{key}_kl": v.kl for key, v in values.items()})
        return ObjectiveValue(loss, kl, metrics)

    def fisher_product(self, stride: int = 1) -> MatVec | None:
        """``v -> H v`` (flat, in ``self.params``' order) for the KL's Hessian at the start.

        Term by term, with each term's structured product on every ``stride``-th time step. None
        when a term has no structured product (the TRPO step then differentiates the KL twice).
        """
        products = {
            key: term.fisher_product(self.policy, self.old[key], stride)
            if isinstance(term, PretrainTerm)
            else term.fisher_product(self.policy, self.old[key], stride, self._start_adapted[key])
            for key, term in self.terms.items()
        }
        if any(product is None for product in products.values()):
            return None
        named = list(self.policy.named_parameters())

        def product(v: torch.Tensor) -> torch.Tensor:
            chunks = torch.split(v, [p.numel() for _, p in named])
            v_named = {name: c.view_as(p) for (name, p), c in zip(named, chunks, strict=True)}
            out = {name: torch.zeros_like(p) for name, p in named}
            for key, term_product in products.items():
                for name, hv in term_product(v_named).items():
                    out[name] += self.kl_weights[key] * hv
            return torch.cat([out[name].reshape(-1) for name, _ in named])

        return product


def trpo_update(objective: Objective, cfg: Any) -> dict[str, float]:
    """One TRPO step on ``objective`` (:func:`omnirl.optim.trpo_step`); the metrics to log.

    ``cfg`` holds the trust region's settings: ``max_kl``, ``cg_iters``, ``cg_damping``,
    ``ls_max_steps``, ``ls_backtrack_ratio``, ``fvp_stride``.

    Returns:
        ``train/`` + the step's metrics (``loss``, the objective before the step, ``loss_after``,
        ``kl``, ``grad_norm``, ...), each term's metrics before the step, and each term's KL
        after an accepted step (how the trust region's budget was shared).

    Raises:
        FloatingPointError: a non-finite loss; nothing is updated.
    """
    # The gradient is taken at the start, where construction evaluated the objective; the line
    # search evaluates it at every candidate. TRPO asks for the loss and then the KL at the same
    # parameters: one evaluation serves both (for MAML terms it re-adapts every task).
    unused, pending = [objective.start], {}

    def loss_fn() -> torch.Tensor:
        loss, kl, metrics = unused.pop() if unused else objective(torch.is_grad_enabled())
        check_finite(loss, "outer loss")
        pending["kl"] = kl
        pending["last"] = metrics  # the line search's last candidate (the accepted one)
        return loss

    def kl_fn() -> torch.Tensor:
        if "kl" in pending:
            return pending.pop("kl")
        return objective(create_graph=torch.is_grad_enabled()).kl

    metrics = trpo_step(
        objective.params,
        loss_fn=loss_fn,
        kl_fn=kl_fn,
        max_kl=cfg.max_kl,
        cg_iters=cfg.cg_iters,
        cg_damping=cfg.cg_damping,
        ls_max_steps=cfg.ls_max_steps,
        ls_backtrack_ratio=cfg.ls_backtrack_ratio,
        fvp_fn=lambda: objective.fisher_product(cfg.fvp_stride),
    )
    out = {f"train/{k}": float(v) for k, v in metrics.items()}
    before = objective.start.metrics
    out.update(
        {f"train/{k}": float(v.detach()) for k, v in before.items() if not k.endswith("_kl")}
    )
    after = pending.get("last", {}) if metrics["accepted"] else {}
    out.update({f"train/{k}": float(v) for k, v in after.items() if k.endswith("_kl")})
    return out


def adam_update(objective: Objective, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One Adam step on ``objective`` (:func:`omnirl.optim.adam_step`); the metrics to log.

    Returns:
        ``train/loss`` (before the step), ``train/grad_norm``, ``train/kl`` (zero: measured at
        the parameters that fixed the old policy) and each term's metrics.

    Raises:
        FloatingPointError: a non-finite loss; nothing is updated.
    """
    loss, kl, metrics = objective.start
    grad_norm = adam_step(optimizer, loss, objective.params)
    out = {
        "train/loss": float(loss.detach()),
        "train/grad_norm": grad_norm,
        "train/kl": float(kl.detach()),
    }
    out.update(
        {f"train/{k}": float(v.detach()) for k, v in metrics.items() if not k.endswith("_kl")}
    )
    return out
