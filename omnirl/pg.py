"""Policy-gradient pieces as small pure functions: advantages, surrogate, KL, distillation.

A :class:`PGBatch` is one rollout set ready for losses. Sub-envs are task-major (``b*K ... b*K+K-1``
ran task b), so a task's columns are one contiguous slice.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call, vmap

from omnirl.baseline import LinearFeatureBaseline
from omnirl.episodes import Episodes
from omnirl.functional import Params
from omnirl.returns import discounted_returns, gae, normalize_per_task
from omnirl.schema import DISTILL_KINDS


class PGBatch(NamedTuple):
    """Episodes with their advantages; ``logp_TN`` is the behaviour policy's log-probability."""

    obs_TNO: torch.Tensor
    act_TNA: torch.Tensor
    logp_TN: torch.Tensor
    adv_TN: torch.Tensor
    valid_TN: torch.Tensor
    num_tasks: int

    def every(self, stride: int) -> PGBatch:
        """Every ``stride``-th time step: an estimate of the same averages, ``stride`` x cheaper."""
        return PGBatch(*(x[::stride] for x in self[:5]), self.num_tasks)

    def by_task(self) -> TaskBatch:
        """The same data with a leading task axis, ``(B, T, K, ...)``, for batched adaptation."""

        def split(x: torch.Tensor) -> torch.Tensor:
            t, n = x.shape[:2]
            x = x.reshape(t, self.num_tasks, n // self.num_tasks, *x.shape[2:]).transpose(0, 1)
            return x.contiguous()  # copied once here, not inside every batched matmul

        return TaskBatch(
            split(self.obs_TNO),
            split(self.act_TNA),
            split(self.logp_TN),
            split(self.adv_TN),
            split(self.valid_TN),
        )


class TaskBatch(NamedTuple):
    """A :class:`PGBatch` split by task: task b's K episodes at index b of every tensor."""

    obs_BTKO: torch.Tensor
    act_BTKA: torch.Tensor
    logp_BTK: torch.Tensor
    adv_BTK: torch.Tensor
    valid_BTK: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """B."""
        return self.obs_BTKO.shape[0]

    def every(self, stride: int) -> TaskBatch:
        """Every ``stride``-th time step of every task."""
        return TaskBatch(*(x[:, ::stride] for x in self))


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


TASK_DIMS = (1, 2)  # the (T, K) axes of a TaskBatch tensor: reduce them for per-task values


def masked_mean(
    x: torch.Tensor, valid: torch.Tensor, dims: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean of ``x`` over the valid steps: over everything, or over ``dims`` (per task)."""
    if dims is None:
        return (x * valid).sum() / valid.sum().clamp_min(1.0)
    return (x * valid).sum(dims) / valid.sum(dims).clamp_min(1.0)


def policy_dist(
    policy: torch.nn.Module, params: Params | None, obs: torch.Tensor, flow: str | None
) -> Normal:
    """``policy(obs, flow=flow)`` evaluated with ``params`` (a possibly partial parameter dict)."""
    kwargs = {} if flow is None else {"flow": flow}
    if params is None:
        return policy(obs, **kwargs)
    return functional_call(policy, dict(params), (obs,), kwargs)


def task_dist(
    policy: torch.nn.Module, params_B: Params, obs_BTKO: torch.Tensor, flow: str | None
) -> Normal:
    """Every task's policy at once: task b uses ``{k: v[b]}`` of ``params_B`` on ``obs_BTKO[b]``.

    One ``torch.func.vmap`` over tasks replaces B small calls by batched ones, which is what
    makes the inner steps and the trust-region Hessian products of MAML cheap.
    """

    def one_task(params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dist = policy_dist(policy, params, obs, flow)
        return dist.loc, dist.scale.expand_as(dist.loc)

    loc, scale = vmap(one_task)(dict(params_B), obs_BTKO)
    return Normal(loc, scale, validate_args=False)


def pg_surrogate(
    dist: Normal,
    act: torch.Tensor,
    logp_behaviour: torch.Tensor,
    adv: torch.Tensor,
    valid: torch.Tensor,
    ratio_cap: float | None = None,
    dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Policy-gradient surrogate ``L = -mean_valid(ratio * A)``, ``ratio = pi / pi_behaviour``.

    At the behaviour policy its gradient is REINFORCE's, ``-mean(A * grad log pi)``. With
    ``ratio_cap`` the ratio is truncated at ``ratio_cap`` (off-policy reuse of other flows' data).
    ``dims`` as in :func:`masked_mean` (``TASK_DIMS``: one value per task).
    """
    ratio = torch.exp(dist.log_prob(act).sum(-1) - logp_behaviour)
    if ratio_cap is not None:
        ratio = ratio.clamp(max=ratio_cap)
    return -masked_mean(ratio * adv, valid, dims)


def batch_surrogate(dist: Normal, batch: PGBatch, ratio_cap: float | None = None) -> torch.Tensor:
    """:func:`pg_surrogate` over all valid steps of ``batch``."""
    return pg_surrogate(dist, batch.act_TNA, batch.logp_TN, batch.adv_TN, batch.valid_TN, ratio_cap)


def task_surrogate(dist: Normal, batch: TaskBatch, ratio_cap: float | None = None) -> torch.Tensor:
    """:func:`pg_surrogate` of every task, ``(B,)``."""
    return pg_surrogate(
        dist, batch.act_BTKA, batch.logp_BTK, batch.adv_BTK, batch.valid_BTK, ratio_cap, TASK_DIMS
    )


def mean_kl(
    old: Normal, new: Normal, valid: torch.Tensor, dims: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Mean over valid steps of ``KL(old || new)``, summed over action dimensions."""
    return masked_mean(kl_divergence(old, new).sum(-1), valid, dims)


def distill_loss(
    student_mean: torch.Tensor,
    teacher_mean: torch.Tensor,
    valid: torch.Tensor,
    dims: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Self-distillation ``R = mean_valid ||mu_student - mu_teacher||^2 / A`` (teacher detached)."""
    return masked_mean((student_mean - teacher_mean.detach()).square().mean(-1), valid, dims)


def policy_distill(
    student: Normal,
    teacher: Normal,
    valid: torch.Tensor,
    dims: tuple[int, ...] | None = None,
    kind: str = "mean_sq",
) -> torch.Tensor:
    """Self-distillation ``R`` of a Gaussian policy towards its EMA teacher (teacher detached).

    ``mean_sq`` is Omni-Training's literal form, :func:`distill_loss` of the action means: its
    size follows the family's action scale. ``kl`` is ``KL(teacher || student)`` per state,
    summed over action dimensions and averaged over valid steps: it measures the distance in
    units of the policy's own noise, so one lambda means the same on every family.
    """
    if kind == "mean_sq":
        return distill_loss(student.loc, teacher.loc, valid, dims)
    if kind == "kl":
        return mean_kl(detached_dist(teacher), student, valid, dims)
    raise ValueError(f"distill: {kind!r} is not one of {', '.join(DISTILL_KINDS)}")


def every_step(dist: Normal, stride: int, time_axis: int = 0) -> Normal:
    """The distributions of every ``stride``-th time step (``time_axis`` 1 for task batches)."""
    index = (slice(None),) * time_axis + (slice(None, None, stride),)
    return Normal(dist.loc[index], dist.scale[index], validate_args=False)


def detached_dist(dist: Normal) -> Normal:
    """A copy of ``dist`` that carries no graph (the "old" policy of a trust region)."""
    return Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False)
