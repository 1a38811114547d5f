"""``omni``: Omni-Training (Shu et al.) for reinforcement learning on the tri-flow Omni-Net."""

from __future__ import annotations

from typing import Any

import torch

from omnirl.agents.base import Agent, mean_return
from omnirl.agents.objective import Distill, MetaTerm, Objective, PretrainTerm, Term
from omnirl.agents.omni_net import OmniNetPolicy
from omnirl.collector import RolloutGroup
from omnirl.ema import EMATeacher, TeacherState
from omnirl.functional import Params, detached, flow_params
from omnirl.learner import TaskDraw
from omnirl.maml import adapt_tasks
from omnirl.pg import PGBatch, TaskBatch, task_dist


class OmniAgent(TeacherState, Agent):
    """Pre-flow trained by REINFORCE, meta-flow by MAML, joint flow by both; EMA self-distillation.

    One outer step on ``O = J_pre + J_meta + L_joint`` with ``J_pre = L_pre + lambda R_pre`` and
    ``J_meta = L_meta + lambda R_meta``, where R are squared differences between the student's
    and the EMA teacher's action means (the teacher adapted with its own first-order inner step
    for the meta flow). The joint flow reuses the pre- and meta-flow rollouts with truncated
    importance ratios, or collects its own (``joint_rollouts: own``).

    References:
        Shu, Kou, Yang, Wang, Long. "Omni-Training for Data-Efficient Deep Learning."
        Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks." ICML 2017.
    """

    name = "omni"
    eval_flow = "meta"

    def __init__(self, cfg: Any, obs_dim: int, act_dim: int):
        super().__init__(cfg, obs_dim, act_dim)
        self.teacher = EMATeacher(self.policy, cfg.ema_decay)

    def make_policy(self, obs_dim: int, act_dim: int) -> torch.nn.Module:
        """The tri-flow Omni-Net."""
        cfg = self.cfg
        return OmniNetPolicy(obs_dim, act_dim, cfg.hidden_sizes, cfg.branch_rank, cfg.init_std)

    def update(self, draw: TaskDraw) -> dict[str, float]:
        """Pass 1: P (pre flow) and S (meta flow); pass 2: Q (adapted meta flow); one step."""
        collector, tasks, seed = draw
        own = self.cfg.joint_rollouts == "own"
        groups = [RolloutGroup("pre"), RolloutGroup("meta")]
        groups += [RolloutGroup("joint"), RolloutGroup("joint")] if own else []
        first = self.collect(collector, tasks, groups, seed)
        # S and Q are split by task once; the meta terms and the teacher share the copies.
        pre, support = self.batch(first[0]), self.batch(first[1]).by_task()
        # Adapted once: the values collect Q, the graph starts the outer step's meta terms.
        start, adapted = self.adapt_at_start(support, "meta")
        second_groups = [RolloutGroup("meta", adapted)]
        if own:
            joint_support = self.batch(first[3]).by_task()
            joint_start, joint_adapted = self.adapt_at_start(joint_support, "joint")
            second_groups.append(RolloutGroup("joint", joint_adapted))
        second = self.collect(collector, tasks, second_groups)
        query = self.batch(second[0]).by_task()
        terms = self._distilled_terms(pre, support, query, start)
        if own:
            joint_query = self.batch(second[1]).by_task()
            terms.update(
                self._joint_terms(
                    self.batch(first[2]), joint_support, joint_query, start=joint_start
                )
            )
        else:
            terms.update(self._joint_terms(pre, support, query, 1.0 + self.cfg.importance_clip))
        metrics = self.outer_step(Objective(self.policy, terms, self.loss_weights))
        self.teacher.update(self.policy)
        metrics["rollout/return_pre"] = mean_return(first[1])
        metrics["rollout/return_post"] = mean_return(second[0])
        metrics["rollout/return_pre_flow"] = mean_return(first[0])
        return metrics

    @property
    def loss_weights(self) -> dict[str, float]:
        """``joint_weight`` scales ``L_joint`` (both of its terms) in the outer objective."""
        w = self.cfg.joint_weight
        return {"joint_pre": w, "joint_meta": w}

    def _distilled_terms(
        self, pre: PGBatch, support: TaskBatch, query: TaskBatch, start: Params
    ) -> dict[str, Term]:
        cfg, teacher, weight = self.cfg, self.teacher.module, self.cfg.distill_weight
        # The teacher adapts with its own first-order inner step; it never receives gradients.
        teacher_params = detached(flow_params(teacher, "meta"))
        adapted = adapt_tasks(teacher, teacher_params, support, "meta", self.inner_lrs, True)
        with torch.no_grad():
            teacher_pre = teacher(pre.obs_TNO, flow="pre")
            teacher_meta = task_dist(teacher, adapted, query.obs_BTKO, "meta")
        return {
            "pre": PretrainTerm("pre", pre, None, Distill(teacher_pre, weight, cfg.distill)),
            "meta": MetaTerm(
                "meta",
                support,
                query,
                self.inner_lrs,
                cfg.first_order,
                None,
                Distill(teacher_meta, weight, cfg.distill),
                start,
            ),
        }

    def _joint_terms(
        self,
        pre: PGBatch,
        support: TaskBatch,
        query: TaskBatch,
        ratio_cap: float | None = None,
        start: Params | None = None,
    ) -> dict[str, Term]:
        lrs, first_order = self.inner_lrs, self.cfg.first_order
        return {
            "joint_pre": PretrainTerm("joint", pre, ratio_cap),
            "joint_meta": MetaTerm(
                "joint", support, query, lrs, first_order, ratio_cap, start=start
            ),
        }
