"""``joint``: the Joint-Training baseline, one plain policy trained on ``L_pre + L_meta``."""

from __future__ import annotations

from omnirl.agents.base import Agent, Tasks, mean_return
from omnirl.agents.terms import MetaTerm, PretrainTerm
from omnirl.collector import Collector, RolloutGroup


class JointAgent(Agent):
    """Pre-training and MAML losses on the same parameters, without flows or distillation.

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning" (the
        Joint-Training baseline of its ablations).
    """

    name = "joint"

    def iteration(self, collector: Collector, tasks: Tasks, seed: int) -> dict[str, float]:
        """Collect P and S in one pass, adapt, collect Q, step on ``L_pre + L_meta``."""
        pre_eps, support_eps = self.collect(
            collector, tasks, [RolloutGroup(), RolloutGroup()], seed
        )
        support = self.batch(support_eps).by_task()
        adapted = self.adapted_for_rollouts(support, None)
        [query_eps] = self.collect(collector, tasks, [RolloutGroup(params=adapted)])
        terms = {
            "pre": PretrainTerm(None, self.batch(pre_eps)),
            "meta": MetaTerm(
                None,
                support,
                self.batch(query_eps).by_task(),
                self.inner_lrs,
                self.cfg.first_order,
            ),
        }
        metrics = self.update(terms)
        metrics["rollout/return_pre"] = mean_return(support_eps)
        metrics["rollout/return_post"] = mean_return(query_eps)
        return metrics
