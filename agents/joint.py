"""``joint``: the Joint-Training baseline, one plain policy trained on ``L_pre + L_meta``."""

from __future__ import annotations

from omnirl.agents.base import Agent, mean_return
from omnirl.agents.objective import MetaTerm, Objective, PretrainTerm
from omnirl.collector import RolloutGroup
from omnirl.learner import TaskDraw


class JointAgent(Agent):
    """Pre-training and MAML losses on the same parameters, without flows or distillation.

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning" (the
        Joint-Training baseline of its ablations).
    """

    name = "joint"

    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Collect P and S in one pass, adapt, collect Q, step on ``L_pre + L_meta``."""
        collector, tasks, seed = draw
        pre_eps, support_eps = self.collect(
            collector, tasks, [RolloutGroup(), RolloutGroup()], seed
        )
        support = self.batch(support_eps).by_task()
        start, adapted = self.adapt_at_start(support, None)
        [query_eps] = self.collect(collector, tasks, [RolloutGroup(params=adapted)])
        terms = {
            "pre": PretrainTerm(None, self.batch(pre_eps)),
            "meta": MetaTerm(
                None,
                support,
                self.batch(query_eps).by_task(),
                self.inner_lrs,
                self.cfg.first_order,
                start=start,
            ),
        }
        # Both terms use the one plain flow: the trust region bounds their mean KL.
        metrics = self.outer_step(Objective(self.policy, terms))
        metrics["rollout/return_pre"] = mean_return(support_eps)
        metrics["rollout/return_post"] = mean_return(query_eps)
        return metrics
