"""``pretrain``: the pre-training baseline, REINFORCE on a plain policy (the paper's "Baseline")."""

from __future__ import annotations

from omnirl.agents.base import Agent, Tasks, mean_return
from omnirl.agents.terms import PretrainTerm
from omnirl.collector import Collector, RolloutGroup


class PretrainAgent(Agent):
    """Each iteration: K episodes per task with the current policy, one step on ``L_pg``.

    At test time it is fine-tuned with the same gradient steps as MAML.

    References:
        Williams. "Simple Statistical Gradient-Following Algorithms for Connectionist
        Reinforcement Learning." Machine Learning 1992.
    """

    name = "pretrain"

    def iteration(self, collector: Collector, tasks: Tasks, seed: int) -> dict[str, float]:
        """Collect P and step on ``L_pg(P)``."""
        [episodes] = self.collect(collector, tasks, [RolloutGroup()], seed)
        metrics = self.update({"pre": PretrainTerm(None, self.batch(episodes))})
        metrics["rollout/return_pre"] = mean_return(episodes)
        return metrics
