"""Returns and advantages as pure functions on ``(T, N)`` tensors with a validity mask.

No function changes its inputs. Steps after an episode ended (``valid_TN == 0``) contribute
nothing and get zero output. The horizon's end is treated as terminal: the linear feature
baseline sees time, so it already predicts the shrinking return near the horizon.
"""

from __future__ import annotations

import torch


def discounted_returns(rew_TN: torch.Tensor, valid_TN: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{k >= t} gamma^(k-t) r_k`` over the valid steps of each episode.

    Args:
        rew_TN: rewards.
        valid_TN: 1 for steps inside the episode, 0 after it.
        gamma: discount factor.

    Returns:
        ``(T, N)`` discounted returns, zero on invalid steps.
    """
    rew_TN = rew_TN * valid_TN
    out_TN = torch.zeros_like(rew_TN)
    running_N = torch.zeros_like(rew_TN[0])
    for t in range(rew_TN.shape[0] - 1, -1, -1):
        running_N = rew_TN[t] + gamma * running_N
        out_TN[t] = running_N
    return out_TN * valid_TN


def gae(
    rew_TN: torch.Tensor,
    values_TN: torch.Tensor,
    valid_TN: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 1.0,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma V_{t+1} - V_t`` (``V`` is zero past the episode's end) and
    ``A_t = delta_t + gamma lam A_{t+1}``. With ``lam = 1`` this is ``G_t - V_t``.

    Returns:
        ``(T, N)`` advantages, zero on invalid steps.
    """
    values_TN = values_TN * valid_TN
    next_values_TN = torch.cat([values_TN[1:], torch.zeros_like(values_TN[:1])])
    delta_TN = (rew_TN + gamma * next_values_TN - values_TN) * valid_TN
    adv_TN = torch.zeros_like(delta_TN)
    running_N = torch.zeros_like(delta_TN[0])
    for t in range(delta_TN.shape[0] - 1, -1, -1):
        running_N = delta_TN[t] + gamma * lam * running_N
        adv_TN[t] = running_N
    return adv_TN * valid_TN


def normalize_per_task(
    x_TN: torch.Tensor, valid_TN: torch.Tensor, task_N: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Standardise ``x`` within each task over its valid steps: ``(x - mean_b) / (std_b + eps)``.

    ``std_b`` is the population standard deviation over task b's valid steps. Invalid steps
    are zero in the output.
    """
    num_tasks = int(task_N.max()) + 1
    # (N,) -> (T, N) one-hot sums per task: one scatter per statistic, no Python loop over tasks.
    count_B = torch.zeros(num_tasks, dtype=x_TN.dtype).index_add_(0, task_N, valid_TN.sum(0))
    total_B = torch.zeros_like(count_B).index_add_(0, task_N, (x_TN * valid_TN).sum(0))
    mean_B = total_B / count_B.clamp_min(1.0)
    centred_TN = (x_TN - mean_B[task_N]) * valid_TN
    var_B = torch.zeros_like(count_B).index_add_(0, task_N, centred_TN.square().sum(0))
    std_B = (var_B / count_B.clamp_min(1.0)).sqrt()
    return centred_TN / (std_B[task_N] + eps)
