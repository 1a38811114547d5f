"""``pretrain``: the pre-training baseline, REINFORCE on a plain policy (the paper's "Baseline")."""

from __future__ import annotations

from omnirl.agents.base import Agent, mean_return
from omnirl.agents.objective import Objective, PretrainTerm
from omnirl.collector import RolloutGroup
from omnirl.learner import TaskDraw


class PretrainAgent(Agent):
    """Each iteration: K episodes per task with the current policy, one step on ``L_pg``.

    At test time it is fine-tuned with the same gradient steps as MAML.

    References:
        Williams. "Simple Statistical Gradient-Following Algorithms for Connectionist
        Reinforcement Learning." Machine Learning 1992.
    """

    name = "pretrain"

    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Collect P and step on ``L_pg(P)``."""
        collector, tasks, seed = draw
        [episodes] = self.collect(collector, tasks, [RolloutGroup()], seed)
        objective = Objective(self.policy, {"pre": PretrainTerm(None, self.batch(episodes))})
        metrics = self.outer_step(objective)
        metrics["rollout/return_pre"] = mean_return(episodes)
        return metrics
