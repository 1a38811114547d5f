"""The learning-rule base class: rollouts, the outer step (TRPO or Adam), metrics, state.

An agent's ``iteration`` collects what its rule needs with the batched collector (one or two
physics passes) and takes one outer step on its objective. Subclasses build the objective from
:mod:`omnirl.agents.terms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from omnirl.agents.policies import GaussianMLPPolicy
from omnirl.agents.terms import TermValue
from omnirl.baseline import LinearFeatureBaseline
from omnirl.collector import Collector, RolloutGroup
from omnirl.episodes import Episodes
from omnirl.maml import adapt_tasks, detached, flow_params, unstack
from omnirl.optim import trpo_step
from omnirl.pg import PGBatch, TaskBatch, make_batch
from omnirl.timing import timed

Tasks = Sequence[dict[str, Any]]


class Agent:
    """A meta-RL learning rule around one policy.

    Args:
        cfg: the training config (``omnirl.config.TrainConfig``).
        obs_dim: observation size.
        act_dim: action size.

    Attributes:
        eval_flow: the flow evaluated and adapted at test time.
        policy: the policy module.
    """

    name: ClassVar[str] = ""
    eval_flow: ClassVar[str | None] = None
    trains: ClassVar[bool] = True

    def __init__(self, cfg: Any, obs_dim: int, act_dim: int):
        self.cfg = cfg
        self.policy = self.make_policy(obs_dim, act_dim)
        self.baseline = LinearFeatureBaseline()
        self.optimizer: torch.optim.Optimizer | None = None
        if cfg.outer_optimizer == "adam":
            self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.outer_lr)

    def make_policy(self, obs_dim: int, act_dim: int) -> torch.nn.Module:
        """A plain Gaussian MLP; the Omni agent overrides this with the tri-flow Omni-Net."""
        return GaussianMLPPolicy(obs_dim, act_dim, self.cfg.hidden_sizes, self.cfg.init_std)

    @property
    def inner_lrs(self) -> list[float]:
        """Inner learning rate of each training inner step."""
        return [self.cfg.inner_lr] * self.cfg.inner_steps

    # ----------------------------------------------------------------------------- rollouts
    def collect(
        self,
        collector: Collector,
        tasks: Tasks,
        groups: Sequence[RolloutGroup],
        seed: int | None = None,
    ) -> list[Episodes]:
        """All groups' episodes in one batched pass."""
        with timed("sampling"):
            return collector.collect(
                self.policy, tasks, self.cfg.episodes_per_task, groups, self.cfg.horizon, seed
            )

    def batch(self, episodes: Episodes) -> PGBatch:
        """Advantages for ``episodes`` (per-task baseline, GAE, per-task normalisation)."""
        with timed("baseline"):
            return make_batch(episodes, self.baseline, self.cfg.gamma, self.cfg.gae_lambda)

    def adapted_for_rollouts(self, support: TaskBatch, flow: str | None) -> list[dict]:
        """Per-task adapted parameters (values only) to collect query episodes with."""
        with timed("inner_steps"):
            params = detached(flow_params(self.policy, flow))
            adapted = adapt_tasks(self.policy, params, support, flow, self.inner_lrs, True)
            return unstack({k: v.detach() for k, v in adapted.items()})

    # -------------------------------------------------------------------------- learning
    def iteration(self, collector: Collector, tasks: Tasks, seed: int) -> dict[str, float]:
        """Collect this rule's rollouts for ``tasks`` and take one outer step; return metrics."""
        raise NotImplementedError

    def objective(self, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The outer objective and the KL to the pre-update policy at the current parameters."""
        values: dict[str, TermValue] = {
            key: term(self.policy, create_graph) for key, term in self.terms.items()
        }
        weights = self.loss_weights
        loss = sum((weights.get(k, 1.0) * v.loss for k, v in values.items()), torch.zeros(()))
        kl_weights = self._kl_weights()
        kl = sum((kl_weights[key] * v.kl for key, v in values.items()), torch.zeros(()))
        metrics = {f"{key}_{m}": t for key, v in values.items() for m, t in v.metrics.items()}
        metrics.update({f"{key}_kl": v.kl for key, v in values.items()})
        return loss, kl, metrics

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each objective term in the outer loss (1 for terms not named)."""
        return {}

    def _kl_weights(self) -> dict[str, float]:
        # The trust region bounds the mean KL of the flows, each flow's terms averaged first.
        by_flow: dict[str | None, list[str]] = {}
        for key, term in self.terms.items():
            by_flow.setdefault(term.flow, []).append(key)
        return {key: 1.0 / (len(by_flow) * len(keys)) for keys in by_flow.values() for key in keys}

    def fisher_product(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``v -> H v`` for the objective's KL at the current parameters, term by term.

        None when a term has no structured product (the TRPO step then differentiates the KL
        twice instead).
        """
        stride = self.cfg.fvp_stride
        products = {
            key: term.fisher_product(self.policy, stride) for key, term in self.terms.items()
        }
        if any(product is None for product in products.values()):
            return None
        weights = self._kl_weights()
        named = list(self.policy.named_parameters())

        def product(v: torch.Tensor) -> torch.Tensor:
            chunks = torch.split(v, [p.numel() for _, p in named])
            v_named = {name: c.view_as(p) for (name, p), c in zip(named, chunks, strict=True)}
            out = {name: torch.zeros_like(p) for name, p in named}
            for key, term_product in products.items():
                for name, hv in term_product(v_named).items():
                    out[name] += weights[key] * hv
            return torch.cat([out[name].reshape(-1) for name, _ in named])

        return product

    def update(self, terms: dict[str, Any]) -> dict[str, float]:
        """One outer step on the sum of ``terms`` (TRPO, or Adam with ``outer_optimizer: adam``)."""
        self.terms = terms
        try:
            with timed("outer_step"):
                return self._trpo() if self.optimizer is None else self._adam()
        finally:
            self.terms = {}

    def _trpo(self) -> dict[str, float]:
        # TRPO asks for the loss and then the KL at the same parameters; one evaluation serves
        # both (for MAML terms it re-adapts every task, the expensive part).
        pending: dict[str, Any] = {}

        def loss_fn() -> torch.Tensor:
            loss, kl, metrics = self.objective(create_graph=torch.is_grad_enabled())
            check_finite(loss, "outer loss")
            pending["kl"] = kl
            pending.setdefault("metrics", metrics)  # logged: the values before the step
            pending["last"] = metrics  # the line search's last candidate (the accepted one)
            return loss

        def kl_fn() -> torch.Tensor:
            if "kl" in pending:
                return pending.pop("kl")
            return self.objective(create_graph=torch.is_grad_enabled())[1]

        cfg = self.cfg
        metrics = trpo_step(
            list(self.policy.parameters()),
            loss_fn=loss_fn,
            kl_fn=kl_fn,
            max_kl=cfg.max_kl,
            cg_iters=cfg.cg_iters,
            cg_damping=cfg.cg_damping,
            ls_max_steps=cfg.ls_max_steps,
            ls_backtrack_ratio=cfg.ls_backtrack_ratio,
            fvp_fn=self.fisher_product,
        )
        out = {f"train/{k}": float(v) for k, v in metrics.items()}
        before = pending.get("metrics", {})
        out.update(
            {f"train/{k}": float(v.detach()) for k, v in before.items() if not k.endswith("_kl")}
        )
        # Each term's KL after the step shows how the trust region's budget was shared.
        after = pending.get("last", {}) if metrics["accepted"] else {}
        out.update({f"train/{k}": float(v) for k, v in after.items() if k.endswith("_kl")})
        return out

    def _adam(self) -> dict[str, float]:
        loss, kl, metrics = self.objective(True)
        check_finite(loss, "outer loss")
        assert self.optimizer is not None
        self.optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), math.inf)
        self.optimizer.step()
        out = {
            "train/loss_before": float(loss.detach()),
            "train/grad_norm": float(grad_norm),
            "train/kl": float(kl.detach()),
        }
        # The terms' KLs are zero here (measured at the parameters that fixed the old policy).
        out.update(
            {f"train/{k}": float(v.detach()) for k, v in metrics.items() if not k.endswith("_kl")}
        )
        return out

    # ------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training bit for bit."""
        state: dict[str, Any] = {"policy": self.policy.state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.policy.load_state_dict(state["policy"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def check_finite(value: torch.Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` if ``value`` is not finite (the trainer stops cleanly)."""
    if not torch.isfinite(value).all():
        raise FloatingPointError(f"non-finite {what} ({float(value)}); stopping before the update")


def mean_return(episodes: Episodes) -> float:
    """Mean undiscounted episode return."""
    return float(episodes.returns_N.mean())
