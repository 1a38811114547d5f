"""Policy-gradient pieces as small pure functions: advantages, surrogate, KL, distillation.

A :class:`PGBatch` is one rollout set ready for losses. Sub-envs are task-major (``b*K ... b*K+K-1``
ran task b), so a task's columns are one contiguous slice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from omnirl.baseline import LinearFeatureBaseline
from omnirl.episodes import Episodes
from omnirl.returns import discounted_returns, gae, normalize_per_task

Params = Mapping[str, torch.Tensor]


class PGBatch(NamedTuple):
    """Episodes with their advantages; ``logp_TN`` is the behaviour policy's log-probability."""

    obs_TNO: torch.Tensor
    act_TNA: torch.Tensor
    logp_TN: torch.Tensor
    adv_TN: torch.Tensor
    valid_TN: torch.Tensor
    num_tasks: int

    def task(self, b: int) -> PGBatch:
        """The K episodes of task ``b`` (a one-task batch)."""
        k = self.obs_TNO.shape[1] // self.num_tasks
        cols = slice(b * k, (b + 1) * k)
        return PGBatch(
            self.obs_TNO[:, cols],
            self.act_TNA[:, cols],
            self.logp_TN[:, cols],
            self.adv_TN[:, cols],
            self.valid_TN[:, cols],
            1,
        )


def make_batch(
    episodes: Episodes, baseline: LinearFeatureBaseline, gamma: float, gae_lambda: float
) -> PGBatch:
    """Advantages for ``episodes``: GAE on the per-task linear baseline, normalised per task."""
    returns_TN = discounted_returns(episodes.rew_TN, episodes.valid_TN, gamma)
    values_TN = baseline.values(episodes, returns_TN)
    adv_TN = gae(episodes.rew_TN, values_TN, episodes.valid_TN, gamma, gae_lambda)
    adv_TN = normalize_per_task(adv_TN, episodes.valid_TN, episodes.task_N)
    return PGBatch(
        episodes.obs_TNO,
        episodes.act_TNA,
        episodes.logp_TN,
        adv_TN,
        episodes.valid_TN,
        episodes.num_tasks,
    )


def masked_mean(x_TN: torch.Tensor, valid_TN: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the valid steps."""
    return (x_TN * valid_TN).sum() / valid_TN.sum().clamp_min(1.0)


def policy_dist(
    policy: torch.nn.Module, params: Params | None, obs: torch.Tensor, flow: str | None
) -> Normal:
    """``policy(obs, flow=flow)`` evaluated with ``params`` (a possibly partial parameter dict)."""
    kwargs = {} if flow is None else {"flow": flow}
    if params is None:
        return policy(obs, **kwargs)
    return functional_call(policy, dict(params), (obs,), kwargs)


def pg_surrogate(dist: Normal, batch: PGBatch, ratio_cap: float | None = None) -> torch.Tensor:
    """Policy-gradient surrogate ``L = -mean_valid(ratio * A)``, ``ratio = pi / pi_behaviour``.

    At the behaviour policy its gradient is REINFORCE's, ``-mean(A * grad log pi)``. With
    ``ratio_cap`` the ratio is truncated at ``ratio_cap`` (off-policy reuse of other flows' data).
    """
    logp_TN = dist.log_prob(batch.act_TNA).sum(-1)
    ratio_TN = torch.exp(logp_TN - batch.logp_TN)
    if ratio_cap is not None:
        ratio_TN = ratio_TN.clamp(max=ratio_cap)
    return -masked_mean(ratio_TN * batch.adv_TN, batch.valid_TN)


def mean_kl(old: Normal, new: Normal, valid_TN: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps of ``KL(old || new)``, summed over action dimensions."""
    return masked_mean(kl_divergence(old, new).sum(-1), valid_TN)


def distill_loss(
    student_mean: torch.Tensor, teacher_mean: torch.Tensor, valid_TN: torch.Tensor
) -> torch.Tensor:
    """Self-distillation ``R = mean_valid ||mu_student - mu_teacher||^2 / A`` (teacher detached)."""
    sq_TN = (student_mean - teacher_mean.detach()).square().mean(-1)
    return masked_mean(sq_TN, valid_TN)


def detached_dist(dist: Normal) -> Normal:
    """A copy of ``dist`` that carries no graph (the "old" policy of a trust region)."""
    return Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False)
