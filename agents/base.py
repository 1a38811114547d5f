"""The learning-rule base class: rollouts, the outer step (TRPO or Adam), metrics, state.

An agent's ``update`` collects what its rule needs with the batched collector (one or two
physics passes), builds this iteration's :class:`~omnirl.agents.objective.Objective` from its
terms and takes one outer step on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from omnirl.agents.objective import Objective, adam_update, trpo_update
from omnirl.agents.policies import GaussianMLPPolicy
from omnirl.baseline import LinearFeatureBaseline
from omnirl.collector import Collector, RolloutGroup
from omnirl.episodes import Episodes
from omnirl.functional import flow_params, unstack
from omnirl.learner import TaskDraw
from omnirl.maml import adapt_tasks
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
    kind: ClassVar[str] = "rl"
    eval_flow: ClassVar[str | None] = None
    adapts: ClassVar[bool] = True
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
    def flows(self) -> tuple[str | None, ...]:
        """The policy's flows."""
        return tuple(self.policy.flows)

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

    def adapt_at_start(
        self, support: TaskBatch, flow: str | None
    ) -> tuple[dict[str, torch.Tensor], list[dict]]:
        """Adapt every task on its support at the current parameters, once for two uses.

        Returns:
            The stacked adapted parameters with graph (second order unless ``first_order``):
            a :class:`~omnirl.agents.objective.MetaTerm`'s ``start``, so the outer step does not
            adapt again at the same point; and their values per task, to collect Q with.
        """
        with timed("inner_steps"):
            params = flow_params(self.policy, flow)
            adapted = adapt_tasks(
                self.policy, params, support, flow, self.inner_lrs, self.cfg.first_order
            )
            return adapted, unstack({k: v.detach() for k, v in adapted.items()})

    # -------------------------------------------------------------------------- learning
    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Collect this rule's rollouts for the drawn tasks and take one outer step; metrics."""
        raise NotImplementedError

    def outer_step(self, objective: Objective) -> dict[str, float]:
        """One outer step on ``objective``: TRPO, or Adam with ``outer_optimizer: adam``."""
        with timed("outer_step"):
            if self.optimizer is None:
                return trpo_update(objective, self.cfg)
            return adam_update(objective, self.optimizer)

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


def mean_return(episodes: Episodes) -> float:
    """Mean undiscounted episode return."""
    return float(episodes.returns_N.mean())
