"""``maml``: MAML-TRPO (Finn et al. 2017) on a plain Gaussian MLP."""

from __future__ import annotations

from omnirl.agents.base import Agent, mean_return
from omnirl.agents.objective import MetaTerm, Objective
from omnirl.collector import RolloutGroup
from omnirl.learner import TaskDraw


class MAMLAgent(Agent):
    """MAML-TRPO: adapt on support episodes, step on the adapted policies' query loss.

    Inner step on support episodes S_b, query episodes Q_b with the adapted parameters, and a
    TRPO step on ``mean_b L_pg(Q_b; theta'_b)`` differentiated through the inner step.

    References:
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "maml"

    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Collect S, adapt, collect Q, and take the meta step."""
        collector, tasks, seed = draw
        [support_eps] = self.collect(collector, tasks, [RolloutGroup()], seed)
        support = self.batch(support_eps).by_task()
        start, adapted = self.adapt_at_start(support, None)
        [query_eps] = self.collect(collector, tasks, [RolloutGroup(params=adapted)])
        query = self.batch(query_eps).by_task()
        term = MetaTerm(None, support, query, self.inner_lrs, self.cfg.first_order, start=start)
        # The old policy (the trust region's centre) is fixed here, before the step.
        metrics = self.outer_step(Objective(self.policy, {"meta": term}))
        metrics["rollout/return_pre"] = mean_return(support_eps)
        metrics["rollout/return_post"] = mean_return(query_eps)
        return metrics
