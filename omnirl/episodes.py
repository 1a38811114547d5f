"""Fixed-shape rollout storage: ``Episodes``, one batch of B tasks x K episodes x H steps."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Episodes(NamedTuple):
    """Episodes of N = B*K sub-envs over T steps; sub-env n ran task ``task_N[n]``.

    Entries after an episode ended are zero and masked out by ``valid_TN``. Sub-envs are laid
    out task-major: sub-envs ``b*K ... b*K + K - 1`` ran task b.

    Attributes:
        obs_TNO: observations the actions were taken in (float32).
        act_TNA: actions as sampled (before the env clips them).
        logp_TN: log-probability of each action under the behaviour policy.
        rew_TN: rewards.
        valid_TN: 1.0 where the step belongs to the episode, 0.0 after it ended.
        task_N: task index b of every sub-env (int64).
    """

    obs_TNO: torch.Tensor
    act_TNA: torch.Tensor
    logp_TN: torch.Tensor
    rew_TN: torch.Tensor
    valid_TN: torch.Tensor
    task_N: torch.Tensor

    @property
    def num_tasks(self) -> int:
        """B, the number of tasks."""
        return int(self.task_N.max()) + 1 if self.task_N.numel() else 0

    @property
    def episodes_per_task(self) -> int:
        """K, the number of episodes of every task."""
        return self.task_N.numel() // max(self.num_tasks, 1)

    @property
    def lengths_N(self) -> torch.Tensor:
        """Episode lengths (number of valid steps)."""
        return self.valid_TN.sum(dim=0)

    @property
    def returns_N(self) -> torch.Tensor:
        """Undiscounted episode returns, the figure reported to users."""
        return (self.rew_TN * self.valid_TN).sum(dim=0)

    def task_returns_B(self) -> torch.Tensor:
        """Mean undiscounted return of each task over its K episodes."""
        return self.returns_N.view(self.num_tasks, -1).mean(dim=1)
